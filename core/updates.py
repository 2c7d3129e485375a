"""Discriminator and generator updates, with hand-written gradients.

Every rule has one signature: `emit` says what G puts in front of D this step, and
`generator_step` updates G and returns its metrics as 0-d tensors (read by the
trainer in one host sync). The discriminator update is BCE for every rule.

bce        the source's: non-saturating BCE of D(G(z)) against "real" labels.
reinforce  policy gradient (DESIGN.md section 1): x ~ N(G(z), sigma^2 I), K samples
           per z, reward from D, leave-one-out baseline, normalised and clipped
           advantages, gradient-norm clip. Its expected gradient with the default
           reward log D(x) equals the bce gradient; the estimate is far noisier.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .models import MLP

NAN = float("nan")


@dataclass
class Nets:
    """Both networks, their flat parameter buffers and their optimisers."""
    G: MLP
    D: MLP
    g_flat: torch.nn.Parameter
    d_flat: torch.nn.Parameter
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer


@dataclass
class StepContext:
    cfg: TrainConfig
    step: int
    noise: torch.Generator       # policy noise only (the arena shares data and z streams)


def _guarded_step(opt: torch.optim.Optimizer, grad_norm: torch.Tensor) -> torch.Tensor:
    """Adam step that is skipped on device when the gradient is not finite.

    The gradient's norm is finite exactly when every entry is, so one scalar check
    replaces a pass over all parameters. Returns the 0/1 'skipped' flag; the trainer
    reports a divergence from it, and the weights stay as they were before the bad step.
    """
    bad = (~torch.isfinite(grad_norm)).float()
    opt.found_inf = bad  # fused Adam reads this and leaves params and state untouched
    opt.step()
    return bad


def _clip_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    norm = grad.norm()
    if max_norm > 0:
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


def discriminator_step(nets: Nets, real: torch.Tensor, fake: torch.Tensor) -> dict:
    """One BCE step of D on real vs fake (one forward over both)."""
    n_real = real.shape[0]
    logits, acts = nets.D.forward_cached(torch.cat([real, fake]))
    labels = torch.zeros_like(logits)
    labels[:n_real] = 1.0
    probs = torch.sigmoid(logits)
    nets.D.backward_manual(acts, logits, (probs - labels) / logits.shape[0])
    d_norm = nets.d_flat.grad.norm()
    skipped = _guarded_step(nets.d_opt, d_norm)
    return {
        "d_loss": 2 * F.binary_cross_entropy_with_logits(logits, labels),
        "d_real": probs[:n_real].mean(),
        "d_fake": probs[n_real:].mean(),
        "d_grad_norm": d_norm,
        "d_skipped": skipped,
    }


def _bce_generator_grad(nets: Nets, mu: torch.Tensor, g_acts: list) -> tuple:
    """Write the non-saturating BCE gradient of G into g_flat.grad; loss and log D."""
    logits, d_acts = nets.D.forward_cached(mu)
    grad_logits = (torch.sigmoid(logits) - 1.0) / logits.shape[0]
    grad_mu = nets.D.backward_manual(d_acts, logits, grad_logits, param_grads=False,
                                     input_grad=True)
    nets.G.backward_manual(g_acts, mu, grad_mu)
    log_d = -F.softplus(-logits)
    return -log_d.mean(), log_d


class BceRule:
    name = "bce"

    def emit(self, mu: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, None]:
        return mu, None

    def generator_step(self, nets: Nets, mu, g_acts, extra, ctx: StepContext) -> dict:
        g_loss, log_d = _bce_generator_grad(nets, mu, g_acts)
        g_norm = nets.g_flat.grad.norm()
        skipped = _guarded_step(nets.g_opt, g_norm)
        return {"g_loss": g_loss, "reward_mean": log_d.mean(), "reward_std": log_d.std(),
                "g_grad_norm": g_norm, "g_skipped": skipped}


class ReinforceRule:
    name = "reinforce"

    def emit(self, mu: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, dict]:
        k = ctx.cfg.samples_per_z()
        sigma = ctx.cfg.sigma_at(ctx.step)
        eps = torch.randn(mu.shape[0], k, mu.shape[1], generator=ctx.noise,
                          device=mu.device, dtype=mu.dtype)
        x = mu.unsqueeze(1) + sigma * eps          # (B, K, dim); x stays detached from G
        # D trains on the samples G actually emitted: the first of each z's K samples.
        return x[:, 0], {"x": x, "eps": eps, "sigma": sigma}

    def reward(self, logits: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        kind = cfg.reinforce.reward
        if kind == "log_d":
            return -F.softplus(-logits)
        if kind == "d":
            return torch.sigmoid(logits)
        c = cfg.reinforce.logit_clip
        return logits.clamp(-c, c)

    def generator_step(self, nets: Nets, mu, g_acts, extra, ctx: StepContext) -> dict:
        cfg, x, eps, sigma = ctx.cfg, extra["x"], extra["eps"], extra["sigma"]
        batch, k, dim = x.shape
        cosine_due = cfg.reinforce.cosine_every and ctx.step % cfg.reinforce.cosine_every == 0
        bce_grad = None
        if cosine_due:  # the backprop gradient on the same z, for the diagnostic
            _bce_generator_grad(nets, mu, g_acts)
            bce_grad = nets.g_flat.grad.clone()

        logits = nets.D(x.reshape(batch * k, dim)).view(batch, k)
        reward = self.reward(logits, cfg)
        baseline = (reward.sum(1, keepdim=True) - reward) / (k - 1)   # leave-one-out
        adv = reward - baseline
        adv_std = adv.std()
        adv = (adv / (adv_std + 1e-4)).clamp_(-cfg.reinforce.adv_clip, cfg.reinforce.adv_clip)
        # loss = -mean(adv * log N(x; mu, sigma)), log-prob averaged over dimensions:
        # d loss / d mu = -sum_k adv_k (x_k - mu) / sigma^2 / dim / (B K), x - mu = sigma eps
        grad_mu = -(adv.unsqueeze(2) * eps).sum(1) / (sigma * dim * batch * k)
        nets.G.backward_manual(g_acts, mu, grad_mu)
        g_norm = _clip_(nets.g_flat.grad, cfg.reinforce.grad_clip)
        out = {
            "g_loss": F.softplus(-logits).mean(),
            "reward_mean": reward.mean(),
            "reward_std": reward.std(),
            "adv_std": adv_std,
            "g_grad_norm": g_norm,
            "sigma": torch.tensor(sigma),
        }
        if bce_grad is not None:
            out["grad_cosine"] = F.cosine_similarity(nets.g_flat.grad, bce_grad, dim=0)
        out["g_skipped"] = _guarded_step(nets.g_opt, g_norm)
        return out


UPDATE_RULES = {"bce": BceRule(), "reinforce": ReinforceRule()}


# Order of the per-step values read back from the device in one sync.
STEP_KEYS = ("d_loss", "g_loss", "d_real", "d_fake", "reward_mean", "reward_std",
             "g_grad_norm", "d_grad_norm", "adv_std", "grad_cosine", "sigma",
             "d_skipped", "g_skipped")


def draw_batch(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> tuple:
    """A real batch (random indices into the preloaded tensor) and its z."""
    idx = torch.randint(x.shape[0], (cfg.batch_size,), generator=gen, device=x.device)
    z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen, device=x.device)
    return x[idx], z


@torch.no_grad()
def train_step(nets: Nets, batches: list[tuple], ctx: StepContext) -> dict[str, float]:
    """One iteration: cfg.d_steps D updates (one batch each), then one G update.

    G's forward from the last D step is reused for the G update (one G forward per
    D step, not two as in the source; same maths, D updated in between).
    """
    rule = UPDATE_RULES[ctx.cfg.rule]
    for real, z in batches:
        mu, g_acts = nets.G.forward_cached(z)
        fake, extra = rule.emit(mu, ctx)
        d_out = discriminator_step(nets, real, fake)
    g_out = rule.generator_step(nets, mu, g_acts, extra, ctx)
    found = {**d_out, **g_out}
    names = [k for k in STEP_KEYS if k in found]
    values = torch.stack([found[k].float().reshape(()).to(nets.g_flat.device)
                          for k in names]).tolist()
    out = dict.fromkeys(STEP_KEYS, NAN)
    out.update(zip(names, values))
    return out
