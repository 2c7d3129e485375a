"""bce: the source's non-saturating GAN loss, -mean(log D(G(z)))."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.engine.rules.base import Rule


def bce_loss(mu: torch.Tensor, ctx) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-saturating BCE of D(mu) against "real"; (loss, log D per row)."""
    log_d = -F.softplus(-ctx.nets.D(mu))
    return -log_d.mean(), log_d


def bce_manual_grad(mu: torch.Tensor, g_acts: list, ctx) -> tuple[torch.Tensor, torch.Tensor]:
    """bce_loss's gradient written into g_flat.grad by the MLPs' manual backward."""
    nets = ctx.nets
    logits, d_acts = nets.D.forward_cached(mu)
    grad_logits = (torch.sigmoid(logits) - 1.0) / logits.shape[0]
    grad_mu = nets.D.backward_manual(d_acts, logits, grad_logits, param_grads=False,
                                     input_grad=True)
    nets.G.backward_manual(g_acts, mu, grad_mu)
    log_d = -F.softplus(-logits)
    return -log_d.mean(), log_d


def _metrics(loss: torch.Tensor, log_d: torch.Tensor) -> dict:
    return {"g_loss": loss.detach(), "reward_mean": log_d.detach().mean(),
            "reward_std": log_d.detach().std()}


class BceRule(Rule):

    def loss(self, mu, extra, ctx):
        loss, log_d = bce_loss(mu, ctx)
        return loss, _metrics(loss, log_d)

    def fast_grad(self, mu, g_acts, extra, ctx):
        return _metrics(*bce_manual_grad(mu, g_acts, ctx))
