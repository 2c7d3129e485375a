"""What one generator update does to each sample, per rule, on copies of a run's nets.

For a fixed batch z, every sample x_i = G(z_i) gets
- pull: the rule's per-sample gradient in x, -B * d loss / d x_i (B = batch size), taken
  by autograd from the rule's own loss. bce: grad log D(x_i), exact. reinforce: its
  single-draw score-function estimate (K policy samples around x_i, leave-one-out
  advantages), multiplied by one positive number per batch that undoes the rule's
  normalisation (advantages / their batch std, log-density averaged over dimensions):
  no direction or ratio of lengths changes, both rules are in units of the reward's
  gradient, and the estimate's expectation is the reward's gradient smoothed by the
  policy's Gaussian (Stein's lemma; -> the bce pull as sigma -> 0);
- moved: G'(z_i) - G(z_i) after ONE real update of G (the rule's loss, the shared
  gradient clip, the fused Adam step with its state), made on a copy; the copy after the
  update comes back too, so a step-by-step view can adopt exactly what it drew.
The nets passed in are never changed.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.engine.models import flatten_parameters, make_adam
from core.engine.rules import RULES
from core.engine.step import Nets, StepContext, clip_, guarded_step

FIELD_RULES = ("bce", "reinforce")   # the rules whose loss is a per-sample pull on G(z)
ADV_STD_FLOOR = 1e-4   # reinforce._advantages divides by (std + this): undone exactly


@dataclass(frozen=True)
class UpdateField:
    rule: str
    x: np.ndarray            # (N, dim) the samples G(z)
    pull: np.ndarray         # (N, dim) the rule's per-sample gradient, reward units
    moved: np.ndarray        # (N, dim) G'(z) - G(z) after one update of G
    log_d_grad: np.ndarray   # (N, dim) grad log D(x): the exact bce pull, to compare with
    sigma: float | None = None   # the policy's std (None: a rule without policy noise)
    k: int | None = None         # policy samples per z

    def agreement(self) -> tuple[float, float]:
        """(mean cosine of pull vs grad log D, share of samples within 90 degrees of it)."""
        cos = cosines(self.pull, self.log_d_grad)
        return float(cos.mean()), float((cos > 0).mean())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-12)


def clone_nets(nets: Nets, cfg, g_opt_state: dict | None = None) -> Nets:
    """An independent copy of G, D and both optimisers' states (lr and betas as saved);
    `g_opt_state`: G's optimiser state to take instead of nets'."""
    G, D = copy.deepcopy(nets.G), copy.deepcopy(nets.D)
    g_flat, d_flat = flatten_parameters(G), flatten_parameters(D)
    g_opt, d_opt = make_adam(g_flat, cfg.g_opt), make_adam(d_flat, cfg.d_opt)
    # deep copies: load_state_dict keeps tensors it can, and Adam updates them in place
    g_opt.load_state_dict(copy.deepcopy(g_opt_state or nets.g_opt.state_dict()))
    d_opt.load_state_dict(copy.deepcopy(nets.d_opt.state_dict()))
    return Nets(G, D, g_flat, d_flat, g_opt, d_opt)


class EachPoint:
    """D as the rules see it in a field: per-sample pulls, so a packed D scores each
    sample as its own pack (score_points), for any number of samples; with pac = 1
    that is D itself."""
    pac = 1

    def __init__(self, D) -> None:
        self.D = D

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.D.score_points(x)


def _context(nets: Nets, cfg, z: torch.Tensor, rule_step: int, seed: int) -> StepContext:
    noise = torch.Generator(z.device).manual_seed(int(seed))   # private: no run's stream moves
    return StepContext(cfg, nets, step=1, rule_step=rule_step, noise=noise, z=z)


def _reward_units(rule: str, metrics: dict, dim: int) -> float:
    """The positive factor from the rule's loss scale to reward units (see the top)."""
    if rule == "reinforce":
        return dim * (float(metrics["adv_std"]) + ADV_STD_FLOOR)
    return 1.0


def _gradients(nets: Nets, cfg, z: torch.Tensor, rule_step: int, seed: int):
    """(mu, pull in reward units, d loss / d G's params flat, the rule's extra)."""
    rule = RULES[cfg.rule]
    if cfg.rule not in FIELD_RULES:
        raise ValueError(f"update fields are drawn for {', '.join(FIELD_RULES)}, "
                         f"not {cfg.rule!r}")
    ctx = _context(dataclasses.replace(nets, D=EachPoint(nets.D)), cfg, z, rule_step, seed)
    params = list(nets.G.parameters())
    with torch.enable_grad():
        mu = nets.G(z)
        _, extra = rule.emit(mu.detach(), ctx)   # as train_step: the policy sees G's output
        loss, metrics = rule.loss(mu, extra, ctx)
        grads = torch.autograd.grad(loss, [mu, *params])
    units = _reward_units(cfg.rule, metrics, mu.shape[1])
    pull = -grads[0] * mu.shape[0] * units
    flat = torch.cat([g.reshape(-1) for g in grads[1:]])
    return mu.detach(), pull, flat, extra


def log_d_grad(D, x: torch.Tensor) -> torch.Tensor:
    """grad_x log D(x) per row: the exact per-sample bce pull (each row its own pack)."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(-F.softplus(-D.score_points(leaf)).sum(), leaf)
    return grad


def update_field(nets: Nets, cfg, z: torch.Tensor, *, rule_step: int = 0,
                 seed: int = 0) -> tuple[UpdateField, Nets]:
    """The field of cfg.rule on G(z) (see the top), and a copy of the nets after the
    one G update it drew; reinforce's policy noise comes from `seed`."""
    new = clone_nets(nets, cfg)
    mu, pull, flat, extra = _gradients(new, cfg, z, rule_step, seed)
    new.g_flat.grad.copy_(flat)
    with torch.no_grad():
        guarded_step(new.g_opt, clip_(new.g_flat.grad, cfg.grad_clip))
        moved = new.G(z) - mu
    sigma = extra.get("sigma") if isinstance(extra, dict) else None
    k = extra["x"].shape[1] if isinstance(extra, dict) and "x" in extra else None
    field = UpdateField(cfg.rule, _np(mu), _np(pull), _np(moved), _np(log_d_grad(new.D, mu)),
                        None if sigma is None else float(sigma), k)
    return field, new


def pull_draws(nets: Nets, cfg, z: torch.Tensor, draws: int, *, rule_step: int = 0,
               seed: int = 0) -> np.ndarray:
    """(draws, N, dim): `draws` independent single-draw pulls of every sample (z repeated
    in one batch; rows of different copies share no baseline). Nothing is updated."""
    big = z.repeat(draws, 1)
    _, pull, _, _ = _gradients(nets, cfg, big, rule_step, seed)
    return _np(pull).reshape(draws, z.shape[0], -1)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
