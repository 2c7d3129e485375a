"""rlhf: fine-tune G on a preference reward model, kept close to where it started.

Policy x = G(z) + sigma eps. Per sample, the reward is the reward model's standardised
ensemble score (softly clipped to +-score_clip), minus `uncertainty` x the members'
spread (stay where the model knows), plus `realism` x log D(x). The objective is
E[reward] - kl_weight x KL, where the KL to the reference policy (G frozen when the rule
started, same sigma, same z) is exact: ||G(z) - G_ref(z)||^2 / (2 sigma^2) in nats.
Two estimators of the reward's gradient: "pathwise" (backprop through the reward model:
the ReFL / DRaFT family; the default, it needs far fewer samples in 784 dimensions) and
"reinforce" (K samples per z, leave-one-out baseline: the DDPO / DPOK family). The KL
term's gradient is exact either way.

Over-optimisation has two brakes here: the KL (how far from the start) and the
uncertainty penalty (where the reward model is guessing). bench/rlhf.py --overopt
shows each one's part.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.base.options import Options, auto_text, option, resolved
from core.base.validate import ConfigError
from core.engine.metric_info import METRICS
from core.engine.rewards import score as reward_score
from core.engine.rules.base import Rule
from core.feedback.oracles import make_oracle, target_class
from core.feedback.reward_model import cached_reward_model, check_file_for
from core.quality.judges import AGREED, agreed_share, judge_metric, nearest_neighbours, panel_calls

ESTIMATORS = ("pathwise", "reinforce")
AUTO = -1.0   # "auto" for the KL and realism weights (0 already means off)
# "auto" values as (2-D data, images); the form shows what auto resolves to. Chosen by
# bench/rlhf.py: on ring8 a sigma near the modes' own width (0.01) keeps the realism
# reward sharp enough to hold samples on the modes; on digits, realism is not needed.
AUTO_SIGMA = (0.02, 0.2)
AUTO_K = (4, 8)
AUTO_REALISM = (0.3, 0.0)
# The KL in nats grows as 1/sigma^2: the 2-D weight is smaller for its smaller sigma.
# On digits 0.001 with the uncertainty penalty redraws digits into the preferred class
# (0.002 mostly added strokes to the old ones) without running away.
AUTO_KL = (0.0002, 0.001)


@dataclass(frozen=True)
class RlhfOptions(Options):
    reward_model: str = option("", "Reward model file", "Saved by the Feedback page or "
                               "`python -m core reward train`")
    kl_weight: float = option(AUTO, "KL weight (beta, -1 = auto)", "Weight of KL(policy || the "
                       f"generator the fine-tune started from), in nats: auto = "
                       f"{auto_text(AUTO_KL)}; 0 = no anchor (over-optimises)",
                       low=0.0, high=1e4, auto=AUTO_KL, auto_when=AUTO)
    score_clip: float = option(3.0, "Score clip", "The reward model's standardised score is "
                               "softly clipped to +-this (c tanh(score / c)): far past it "
                               "there is little to gain (limits reward hacking); 0 = no clip",
                               low=0.0, high=100.0)
    uncertainty: float = option(1.0, "Uncertainty penalty (k)", "Reward minus k x the "
                                "ensemble's spread: where the reward model's members "
                                "disagree it is guessing, and the generator should not "
                                "go there (0 = off: the proxy then runs away)",
                                low=0.0, high=100.0)
    realism: float = option(AUTO, "Realism weight (lambda, -1 = auto)", "Reward plus "
                            "lambda x log D(x), D trained on G's mean output: keeps samples "
                            f"where D finds the data (auto = {auto_text(AUTO_REALISM)}; "
                            "0 = off)", low=0.0, high=100.0, auto=AUTO_REALISM,
                            auto_when=AUTO)
    estimator: str = option("pathwise", "Estimator", "pathwise: backprop through the "
                            "reward model; reinforce: leave-one-out policy gradient",
                            choices=ESTIMATORS)
    sigma: float = option(0.0, "sigma (0 = auto)", f"Policy std: 0 = {auto_text(AUTO_SIGMA)}",
                          low=0.0, high=10.0,
                          auto=AUTO_SIGMA)
    samples_per_z: int = option(0, "Samples per z (K, 0 = auto)", "reinforce estimator: "
                                f"0 = {auto_text(AUTO_K)}", low=0, high=64,
                                auto=AUTO_K)
    adv_clip: float = option(5.0, "Advantage clip", "reinforce estimator", low=0.0, high=100.0,
                             low_open=True)
    gold_oracle: str = option("", "Gold oracle (optional)", "An oracle that stands for the "
                              "person (e.g. digit:7, upper): its score is logged with the "
                              "quality metrics, to see over-optimisation")
    train_d: bool = option(True, "Keep training D", "Whether D goes on learning during "
                           "the fine-tune (it matters only with a realism weight)")

    def check(self, prefix: str, cfg) -> None:
        if self.samples_per_z == 1:
            raise ConfigError(f"{prefix}samples_per_z = 1 leaves no leave-one-out baseline; "
                              "use 0 (auto) or an integer in [2, 64]")


def sigma_of(opts: RlhfOptions, is_2d: bool) -> float:
    return resolved(opts, "sigma", is_2d)


def exact_kl(mu: torch.Tensor, mu_ref: torch.Tensor, sigma: float) -> torch.Tensor:
    """KL(N(mu, s^2 I) || N(mu_ref, s^2 I)) per row, in nats."""
    return ((mu - mu_ref) ** 2).sum(-1) / (2 * sigma ** 2)


class RlhfRule(Rule):
    Options = RlhfOptions
    uses_reference = True
    best_checkpoint_name = "gold_peak"
    cli_flags = {"--reward-model": ("reward_model", "rlhf rule: the preference reward model "
                                    "file"),
                 "--kl": ("kl_weight", f"rlhf rule: weight of the KL to the start (-1 = auto: "
                          f"{auto_text(AUTO_KL)}; 0 = no anchor)")}

    def ready(self, cfg) -> None:
        check_file_for(f"{cfg.rule}.", cfg.options().reward_model, cfg.data, cfg.rule)

    def trains_d(self, options) -> bool:
        return options.train_d

    def reads_d_at_data(self, options, is_2d: bool) -> bool:
        return resolved(options, "realism", is_2d) > 0

    def emit(self, mu, ctx):
        opts, is_2d = ctx.options, ctx.cfg.is_2d
        k = 1 if opts.estimator == "pathwise" else resolved(opts, "samples_per_z", is_2d)
        sigma = sigma_of(opts, is_2d)
        eps = torch.randn(mu.shape[0], k, mu.shape[1], generator=ctx.noise,
                          device=mu.device, dtype=mu.dtype)
        # D sees G's mean: the policy noise is a device of the estimator and the KL,
        # not what a person sees; a D trained on noisy samples made the realism reward
        # about the noise (ring8 lost its modes).
        return mu.detach(), {"eps": eps, "sigma": sigma}

    def _reward(self, x: torch.Tensor, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        """(total reward, the reward model's score) per row of x."""
        # its data set was checked when the rule started (ready)
        opts, model = ctx.options, cached_reward_model(ctx.options.reward_model)
        score, spread = model.score_and_spread(x)   # the "preference" reward, and its spread
        c = opts.score_clip   # a soft clip: bounded, yet never a flat zero gradient
        reward = c * torch.tanh(score / c) if c else score
        if opts.uncertainty:
            reward = reward - opts.uncertainty * spread
        realism = resolved(opts, "realism", ctx.cfg.is_2d)
        if realism:
            reward = reward + realism * reward_score("log_d", x, ctx).squeeze(-1)
        return reward, score

    def loss(self, mu, extra, ctx):
        opts, eps, sigma = ctx.options, extra["eps"], extra["sigma"]
        batch, k, dim = eps.shape
        with torch.no_grad():
            mu_ref = ctx.ref(ctx.z)
        kl = exact_kl(mu, mu_ref, sigma)
        if opts.estimator == "pathwise":
            x = mu + sigma * eps[:, 0]
            reward, score = self._reward(x, ctx)
            reward_term = -reward.mean()
            adv_std = torch.tensor(float("nan"))
        else:
            x = mu.detach().unsqueeze(1) + sigma * eps
            with torch.no_grad():
                reward, score = self._reward(x.reshape(batch * k, dim), ctx)
                reward, score = reward.view(batch, k), score.view(batch, k)
                adv = reward - (reward.sum(1, keepdim=True) - reward) / (k - 1)
                adv_std = adv.std()
                adv = adv.clamp(-opts.adv_clip, opts.adv_clip)
            log_prob = -((x - mu.unsqueeze(1)) ** 2).sum(2) / (2 * sigma ** 2)
            reward_term = -(adv * log_prob).mean()
        loss = reward_term + resolved(opts, "kl_weight", ctx.cfg.is_2d) * kl.mean()
        with torch.no_grad():
            logits = ctx.d_logits(mu.detach())
        return loss, {"g_loss": F.softplus(-logits).mean(), "reward_mean": reward.mean(),
                      "reward_std": reward.std(), "rm_score": score.mean(),
                      "kl": kl.detach().mean(), "sqrt_kl": kl.detach().mean().sqrt(),
                      "adv_std": adv_std, "sigma": torch.tensor(sigma)}

    @torch.no_grad()
    def quality(self, run, z: torch.Tensor, G) -> dict[str, float]:
        """Extra quality metrics of G on the evaluation z: the proxy (reward model) and,
        with a gold oracle, the true score, against sqrt(KL) to the start (Gao et al.).
        The best gold score's weights are kept (Run.keep_if_best): the checkpoint an
        over-optimised fine-tune should go back to."""
        opts = run.cfg.options()
        mu = G(z)
        kl = exact_kl(mu, run.G_ref(z), sigma_of(opts, run.cfg.is_2d)).mean()
        return self._proxy_and_gold(run, mu, float(kl), at_start=G is run.G_ref)

    def _proxy_and_gold(self, run, mu: torch.Tensor, kl: float, at_start: bool) -> dict:
        opts = run.cfg.options()
        out = {"q_rm": float(cached_reward_model(opts.reward_model).score(mu).mean()),
               "q_sqrt_kl": kl ** 0.5}
        judged = run.data.is_image and run.data.labels is not None
        if judged:   # realism per sample, and do judges of other kinds still see digits?
            out["q_nn_dist"] = float(nearest_neighbours(run.data).nearest(mu)[0].median())
            calls = panel_calls(mu, run.data)
            out[AGREED] = 100 * agreed_share(calls)
        if opts.gold_oracle:
            oracle = _oracle(opts.gold_oracle, run.data)
            out["q_gold"] = float(oracle.utility(mu).mean()) / oracle.scale
            run.keep_if_best(out["q_gold"], at_start=at_start)
            target = target_class(opts.gold_oracle)
            if target is not None and judged:   # does the class really rise?
                for name, called in calls.items():
                    out[judge_metric(name)] = 100 * float((called == target).double().mean())
        return out


_ORACLES: dict = {}


def _oracle(spec: str, data):
    if (spec, data.name) not in _ORACLES:
        _ORACLES[spec, data.name] = make_oracle(spec, data)
    return _ORACLES[spec, data.name]


METRICS.register("q_rm", label="reward model score (proxy)", better="higher", chart="Quality",
                 help="The reward model's standardised score of G's mean output (rlhf)")
METRICS.register("q_gold", label="gold oracle score", better="higher", chart="Quality",
                 help="The gold oracle's utility of G's mean output, in units of its spread "
                      "on real data (rlhf with a gold oracle)")
METRICS.register("q_sqrt_kl", label="sqrt KL to the start", chart="Quality", panel="overopt",
                 help="sqrt of the exact KL of the policy to where the fine-tune started")
METRICS.register("rm_score", label="reward model score (proxy)", better="higher",
                 chart="Preference reward vs KL",
                 help="The reward model's standardised score of the policy's samples")
METRICS.register("kl", label="KL to the start (nats)", unit="nats", chart=None,
                 help="Exact KL of the policy to the generator the fine-tune started from")
METRICS.register("sqrt_kl", label="sqrt KL to the start", chart="Distance from the start",
                 help="sqrt(KL): the x axis of reward-model over-optimisation plots")
