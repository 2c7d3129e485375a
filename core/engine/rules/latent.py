"""latent: steer a frozen generator by learning where to draw its noise.

The policy is an affine map of the prior, z' = A z + b (A = I, b = 0 at the start), and
the sample is G_ref(z') with G_ref frozen. Outputs stay on G's own manifold, so the
cheapest way up the reward is to draw more of what G already draws well, not to paint
strokes that fool the reward model (the pixel-space fine-tune's exploit). The KL to the
prior is exact: KL(N(b, A A^T) || N(0, I)) = (tr(A A^T) + |b|^2 - d - log det(A A^T)) / 2.
The reward is the rlhf rule's (soft-clipped reward-model score, minus the members'
spread, plus realism x log D), its gradient pathwise through G_ref.

Because G's first layer is linear, G_ref(A z + b) = G(z) with W1 = W1_ref A and
b1 = W1_ref b + b1_ref: the map is written into G's first layer after every step, so
samples, metrics and EMA need nothing new; the map and its Adam moments are the rule's
state (run.rule_state), saved with the run, so a fine-tune resumes exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.base.options import Options, option
from core.engine.rules.rlhf import RlhfRule


@dataclass(frozen=True)
class LatentOptions(Options):
    reward_model: str = option("", "Reward model file", "Saved by the Feedback page or "
                               "`python -m core reward train`")
    kl_weight: float = option(0.15, "KL weight (beta)", "Weight of KL(policy over z || the "
                              "prior N(0, I)), exact, in nats; small values collapse every "
                              "z onto one favourite sample", low=0.0, high=1e4)
    score_clip: float = option(3.0, "Score clip", "The reward model's standardised score is "
                               "softly clipped to +-this (0 = no clip)", low=0.0, high=100.0)
    uncertainty: float = option(1.0, "Uncertainty penalty (k)", "Reward minus k x the "
                                "ensemble's spread", low=0.0, high=100.0)
    realism: float = option(0.0, "Realism weight (lambda)", "Reward plus lambda x log D(x), "
                            "D still learning from real data", low=0.0, high=100.0)
    lr: float = option(3e-3, "Learning rate of the map", "Adam on A and b", low=0.0,
                       high=1.0, low_open=True)
    gold_oracle: str = option("", "Gold oracle (optional)", "An oracle that stands for the "
                              "person (e.g. digit:7@panel): logged with the quality metrics")
    train_d: bool = option(True, "Keep training D", "Whether D goes on learning (it "
                           "matters only with a realism weight)")


def latent_kl(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(N(b, A A^T) || N(0, I)) in nats."""
    d = b.numel()
    return 0.5 * ((A * A).sum() + (b * b).sum() - d - 2 * torch.linalg.slogdet(A)[1])


def recover_map(G, G_ref) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) with G's first layer = G_ref's composed with z -> A z + b (exact at the
    start, least squares after a resume)."""
    w, c = G.layers[0].weight.detach(), G.layers[0].bias.detach()
    w_ref, c_ref = G_ref.layers[0].weight.detach(), G_ref.layers[0].bias.detach()
    if torch.equal(w, w_ref) and torch.equal(c, c_ref):
        return torch.eye(w.shape[1], dtype=w.dtype), torch.zeros(w.shape[1], dtype=w.dtype)
    sol = torch.linalg.lstsq(w_ref.double(), torch.cat([w, (c - c_ref)[:, None]], 1).double())
    return sol.solution[:, :-1].to(w.dtype), sol.solution[:, -1].to(w.dtype)


def adam_(state: dict, grad: torch.Tensor, lr: float, betas=(0.9, 0.999), eps=1e-8) -> None:
    """One Adam step on state["theta"], its moments in state (plain tensors, so the
    run's checkpoint keeps them and a resumed fine-tune goes on exactly)."""
    state["t"] += 1
    t = float(state["t"])
    state["m"].mul_(betas[0]).add_(grad, alpha=1 - betas[0])
    state["v"].mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
    denom = (state["v"] / (1 - betas[1] ** t)).sqrt_().add_(eps)
    state["theta"] = state["theta"] - lr * (state["m"] / (1 - betas[0] ** t)) / denom


class LatentRule(RlhfRule):
    Options = LatentOptions
    fast_grad = None
    cli_flags = {}   # --reward-model and --kl are rlhf's; -o latent.reward_model=FILE

    def emit(self, mu, ctx):
        return mu, None   # no pixel noise: the policy's randomness is z itself

    def own_update(self, mu, extra, ctx):
        opts, G, G_ref = ctx.options, ctx.nets.G, ctx.ref
        d = G.layers[0].in_features
        if ctx.state.get("theta", torch.empty(0)).numel() != d * d + d:
            A, b = recover_map(G, G_ref)   # a new fine-tune, or a file without its map
            theta = torch.cat([A.flatten(), b])
            ctx.state.update(theta=theta, m=torch.zeros_like(theta),
                             v=torch.zeros_like(theta), t=torch.zeros(1))
        theta = ctx.state["theta"].detach().requires_grad_(True)
        A, b = theta[:d * d].view(d, d), theta[d * d:]
        x = G_ref(ctx.z @ A.T + b)
        reward, score = self._reward(x, ctx)
        kl = latent_kl(A, b)
        loss = -reward.mean() + opts.kl_weight * kl
        (grad,) = torch.autograd.grad(loss, theta)
        grad_norm = grad.norm()
        with torch.no_grad():
            if torch.isfinite(grad_norm):
                adam_(ctx.state, grad, opts.lr)
            A, b = ctx.state["theta"][:d * d].view(d, d), ctx.state["theta"][d * d:]
            first, first_ref = G.layers[0], G_ref.layers[0]   # the map, written into G
            first.weight.copy_(first_ref.weight @ A)
            first.bias.copy_(first_ref.bias + first_ref.weight @ b)
            logits = ctx.d_logits(mu.detach())
        return {"g_loss": F.softplus(-logits).mean(), "reward_mean": reward.detach().mean(),
                "reward_std": reward.detach().std(), "rm_score": score.detach().mean(),
                "kl": kl.detach(), "sqrt_kl": kl.detach().clamp_min(0).sqrt(),
                "g_grad_norm": grad_norm}

    @torch.no_grad()
    def quality(self, run, z: torch.Tensor, G) -> dict[str, float]:
        A, b = recover_map(G, run.G_ref)
        return self._proxy_and_gold(run, G(z), float(latent_kl(A, b).clamp_min(0)),
                                    at_start=G is run.G_ref)
