"""reinforce: policy gradient with D as the reward.

G's output is the mean of a Gaussian policy x ~ N(G(z), sigma^2 I). K samples per z
are scored by a reward (core/engine/rewards.py); the advantage is the reward minus the mean
of the other K-1 samples of the same z (leave-one-out), divided by its batch std and
clipped. The loss is -mean(advantage * log N(x; G(z), sigma^2 I)), the log-density
averaged over dimensions. With reward log D(x), its expected gradient points the way
of the bce gradient only as sigma -> 0; at practical sigma the two differ (the
grad_cosine metric measures by how much), and the estimate is far noisier.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.base.options import Options, auto_text, option, resolved
from core.base.validate import ConfigError
from core.engine.metric_info import METRICS
from core.engine.rewards import REWARDS, score
from core.engine.rules.base import Rule
from core.engine.rules.bce import bce_loss, bce_manual_grad
from core.feedback.reward_model import check_file_for

# "0 = auto" values as (2-D data, images); the form shows what 0 resolves to.
AUTO_K = (4, 8)
AUTO_SIGMA_START = (0.1, 0.3)
AUTO_SIGMA_END = (0.02, 0.1)


@dataclass(frozen=True)
class ReinforceOptions(Options):
    reward: str = option("log_d", "Reward", "What the policy's samples are scored by: "
                         + ", ".join(e.title for e in REWARDS.entries()), choices=REWARDS)
    reward_model: str = option("", "Reward model file (reward 'preference')",
                               "A file saved by the Feedback page or `python -m core reward "
                               "train`")
    samples_per_z: int = option(0, "Samples per z (K, 0 = auto)",
                                f"0 = {auto_text(AUTO_K)}; at least 2", low=0, high=64,
                                auto=AUTO_K)
    sigma_start: float = option(0.0, "sigma start (0 = auto)",
                                "Policy std when the rule starts; 0 = "
                                f"{auto_text(AUTO_SIGMA_START)}", low=0.0, high=10.0,
                                auto=AUTO_SIGMA_START)
    sigma_end: float = option(0.0, "sigma floor (0 = auto)",
                              f"Policy std after the anneal; 0 = {auto_text(AUTO_SIGMA_END)}; "
                              "must not exceed the start", low=0.0, high=10.0,
                              auto=AUTO_SIGMA_END)
    sigma_anneal_steps: int = option(2000, "sigma anneal steps",
                                     "Linear anneal from start to floor over this many steps "
                                     "after the rule starts; 0 = no anneal (sigma stays at "
                                     "the start value)", low=0, high=10**9)
    adv_clip: float = option(5.0, "Advantage clip", "Normalised advantages are clipped to "
                             "+-this", low=0.0, high=100.0, low_open=True)
    logit_clip: float = option(5.0, "Logit clip", "Bound of the 'logit' reward",
                               low=0.0, high=100.0, low_open=True)
    cosine_every: int = option(50, "Gradient cosine every (steps, 0 = off)",
                               "Every N steps, log the cosine between this rule's gradient "
                               "and the bce gradient on the same batch", low=0, high=10**9)

    def check(self, prefix: str, cfg) -> None:
        if self.samples_per_z == 1:
            raise ConfigError(f"{prefix}samples_per_z = 1 leaves no leave-one-out baseline; "
                              "use 0 (auto) or an integer in [2, 64]")
        start, end = sigma_range(self, cfg.is_2d)
        if end > start:
            raise ConfigError(f"{prefix}sigma_end = {end:g} is above {prefix}sigma_start = "
                              f"{start:g} (0 means auto: {auto_text(AUTO_SIGMA_START)} at the "
                              f"start, {auto_text(AUTO_SIGMA_END)} at the floor); the floor "
                              "must not exceed the start value")


def samples_per_z(opts: ReinforceOptions, is_2d: bool) -> int:
    return resolved(opts, "samples_per_z", is_2d)


def sigma_range(opts: ReinforceOptions, is_2d: bool) -> tuple[float, float]:
    start = opts.sigma_start or AUTO_SIGMA_START[0 if is_2d else 1]
    end = opts.sigma_end or AUTO_SIGMA_END[0 if is_2d else 1]
    return start, end


def sigma_at(opts: ReinforceOptions, is_2d: bool, rule_step: int) -> float:
    """Policy std `rule_step` steps after the rule started: a linear anneal from start
    to the floor over sigma_anneal_steps (0 = no anneal)."""
    start, end = sigma_range(opts, is_2d)
    span = opts.sigma_anneal_steps
    if span <= 0:
        return start
    return start + (end - start) * min(rule_step / span, 1.0)


def _advantages(extra: dict, ctx) -> tuple[torch.Tensor, dict]:
    """Normalised, clipped leave-one-out advantages of emit's samples x (B, K, dim),
    and metrics."""
    x = extra["x"]
    batch, k, dim = x.shape
    flat = x.reshape(batch * k, dim)
    ctx.policy_samples(flat, extra["mu"], extra["eps"], extra["sigma"])
    reward = score(ctx.options.reward, flat, ctx, ctx.options).view(batch, k)
    baseline = (reward.sum(1, keepdim=True) - reward) / (k - 1)
    adv = reward - baseline
    adv_std = adv.std()
    clip = ctx.options.adv_clip
    adv = (adv / (adv_std + 1e-4)).clamp_(-clip, clip)
    metrics = {"g_loss": F.softplus(-ctx.d_logits(flat)).mean(), "reward_mean": reward.mean(),
               "reward_std": reward.std(), "adv_std": adv_std}
    return adv, metrics


class ReinforceRule(Rule):
    Options = ReinforceOptions

    def ready(self, cfg) -> None:
        opts = cfg.options()
        if opts.reward == "preference":   # a file of this data set, checked at the start
            check_file_for(f"{cfg.rule}.", opts.reward_model, cfg.data, "reinforce")

    def emit(self, mu, ctx):
        k = samples_per_z(ctx.options, ctx.cfg.is_2d)
        sigma = sigma_at(ctx.options, ctx.cfg.is_2d, ctx.rule_step)
        eps = torch.randn(mu.shape[0], k, mu.shape[1], generator=ctx.noise,
                          device=mu.device, dtype=mu.dtype)
        x = torch.add(mu.detach().unsqueeze(1), eps, alpha=sigma)   # (B, K, dim), no grad
        return x[:, 0], {"x": x, "eps": eps, "sigma": sigma, "mu": mu.detach()}

    def _cosine_due(self, ctx) -> bool:
        every = ctx.options.cosine_every
        return bool(every) and ctx.step % every == 0

    def loss(self, mu, extra, ctx):
        x, sigma = extra["x"], extra["sigma"]
        with torch.no_grad():
            adv, metrics = _advantages(extra, ctx)
        dim = x.shape[2]
        log_prob = -((x - mu.unsqueeze(1)) ** 2).sum(2) / (2 * sigma ** 2 * dim)
        loss = -(adv * log_prob).mean()
        metrics["sigma"] = torch.tensor(sigma)
        if self._cosine_due(ctx):   # the backprop gradient on the same z, as a diagnostic
            own = ctx.flat_grad(loss, retain_graph=True)
            ref = ctx.flat_grad(bce_loss(mu, ctx)[0], retain_graph=True)
            metrics["grad_cosine"] = F.cosine_similarity(own, ref, dim=0)
        return loss, metrics

    def fast_grad(self, mu, g_acts, extra, ctx):
        nets = ctx.nets
        x, eps, sigma = extra["x"], extra["eps"], extra["sigma"]
        batch, k, dim = x.shape
        ref = None
        if self._cosine_due(ctx):
            bce_manual_grad(mu, g_acts, ctx)
            ref = nets.g_flat.grad.clone()
        adv, metrics = _advantages(extra, ctx)
        # d loss / d mu = -sum_k adv_k (x_k - mu) / sigma^2 / dim / (B K), x - mu = sigma eps
        grad_mu = torch.bmm(adv.unsqueeze(1), eps).squeeze(1).mul_(-1 / (sigma * dim * batch * k))
        nets.G.backward_manual(g_acts, mu, grad_mu)
        metrics["sigma"] = torch.tensor(sigma)
        if ref is not None:
            metrics["grad_cosine"] = F.cosine_similarity(nets.g_flat.grad, ref, dim=0)
        return metrics


METRICS.register("adv_std", label="advantage std", chart="Advantage std",
                 help="Std of the leave-one-out advantages before normalisation")
METRICS.register("sigma", label="policy sigma", chart=None,   # a schedule: table only
                 help="Std of the Gaussian policy around G(z)")
METRICS.register("grad_cosine", label="cosine(rule grad, bce grad)", better="higher",
                 chart="Gradient cosine (REINFORCE vs BCE)", y_range=(-1.0, 1.0),
                 help="Cosine between this rule's gradient and the bce gradient on the "
                      "same batch: 1 = same direction")
