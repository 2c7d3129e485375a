"""One training iteration: D updates (BCE for every rule), then one G update by a rule.

The generator's gradient comes from the rule's autograd loss, or from its hand-written
`fast_grad` where it has one (the default; tests prove the two equal). Either way the
gradient lands in G's flat buffer, is norm-clipped by the shared `grad_clip`, and one
fused Adam kernel applies it, skipped on the device if it is not finite. Metrics come
back as 0-d tensors under their own names and are read in one host sync.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from core.base.registry import ContractError
from core.engine.models import MLP
from core.engine.rules import RULES
from core.engine.rules.base import missing_outputs


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
    """What a rule may read during one step."""
    cfg: Any                     # TrainConfig
    nets: Nets
    step: int                    # global step
    rule_step: int               # steps since this rule started (schedules start here)
    noise: torch.Generator       # policy noise only (the arena shares data and z streams)
    ref: Any = None              # G frozen when the rule started (KL-anchored rules)
    z: Any = None                # the z of the batch G is updated on
    state: dict = field(default_factory=dict)   # the rule's own state in this run
    _logits: tuple = field(default=(None, None), repr=False)
    _policy: tuple = field(default=(None, None, None, 0.0), repr=False)
    options: Any = field(init=False, repr=False)   # this rule's options, looked up once

    def __post_init__(self) -> None:
        self.options = self.cfg.options()

    def d_logits(self, x: torch.Tensor) -> torch.Tensor:
        """D's logits of x, computed once per x (rewards and metrics share them).

        A packed D (pac > 1) scores x in packs of rows n/pac apart, not next to each
        other: reinforce lays out its K samples of one z side by side, and a pack of
        those near-copies looks like a collapsed G to D (with pac >= K every sample of
        a z shared one reward, so the leave-one-out advantages were all 0). Rows n/pac
        apart come from different z (n/pac is a multiple of K), like the independent
        samples D trains on."""
        if self._logits[0] is not x:
            D, n = self.nets.D, x.shape[0]
            flat, mu, eps, sigma = self._policy
            if x is flat and isinstance(D, MLP) and D.pac == 1 and not torch.is_grad_enabled():
                logits = D.logits_near(mu, eps, sigma)
            elif D.pac > 1 and n % D.pac == 0:
                pac = D.pac
                strided = x.reshape(pac, n // pac, -1).transpose(0, 1).reshape(n, -1)
                logits = D(strided).reshape(n // pac, pac).t().reshape(n, 1)
            else:
                logits = D(x)
            self._logits = (x, logits)
        return self._logits[1]

    def policy_samples(self, flat: torch.Tensor, mu: torch.Tensor, eps: torch.Tensor,
                       sigma: float) -> None:
        """Declare flat = (mu[:, None] + sigma eps) flattened: d_logits(flat) without
        gradient then uses D.logits_near, which is faster than D(flat)."""
        self._policy = (flat, mu, eps, sigma)

    def flat_grad(self, loss: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        """d loss / d G's parameters as one flat vector (the flat buffer's layout)."""
        params = list(self.nets.G.parameters())
        grads = torch.autograd.grad(loss, params, retain_graph=retain_graph)
        return torch.cat([g.reshape(-1) for g in grads])


def guarded_step(opt: torch.optim.Optimizer, grad_norm: torch.Tensor) -> torch.Tensor:
    """Adam step that is skipped on the device when the gradient is not finite.

    The gradient's norm is finite exactly when every entry is, so one scalar check
    replaces a pass over all parameters. Fused Adam reads `found_inf` (the hook
    torch's GradScaler uses) and leaves params and state untouched when it is 1.
    Returns the 0/1 'skipped' flag; the weights stay as they were before a bad step.
    """
    bad = (~torch.isfinite(grad_norm)).float()
    fused_adam_step(opt, bad)
    return bad


def fused_adam_step(opt: torch.optim.Adam, found_inf: torch.Tensor) -> None:
    """What opt.step() does for the lab's one-tensor fused Adam (make_adam), without
    the optimiser's per-call Python (group checks, device grouping, profiler hooks):
    the same kernel on the same state tensors, so state_dict and checkpoints are
    unchanged. The first step goes through opt.step(), which creates the state."""
    group = opt.param_groups[0]
    (param,) = group["params"]
    state = opt.state.get(param)
    if not state or group["amsgrad"] or group["maximize"] or not group["fused"] \
            or group.get("decoupled_weight_decay"):
        opt.found_inf = found_inf
        opt.step()
        return
    step = state["step"]
    step.add_(1)
    torch._fused_adam_([param], [param.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [],
                       [step], amsgrad=False, lr=group["lr"], beta1=group["betas"][0],
                       beta2=group["betas"][1], weight_decay=group["weight_decay"],
                       eps=group["eps"], maximize=False, grad_scale=None,
                       found_inf=found_inf)
    step.sub_(found_inf)   # a skipped step does not count (as opt.step() does)


def clip_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale grad to at most max_norm (0 = no clip); returns the norm before clipping."""
    norm = grad.norm()
    if max_norm > 0:
        grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


def add_r1_grad_(nets: Nets, real: torch.Tensor, gamma: float) -> None:
    """Add the gradient of the R1 penalty gamma/2 E||grad_x D(real)||^2 (Mescheder et
    al. 2018) to D's gradient buffer. A gradient of a gradient: autograd does this one
    (double backward through the MLP), only when the penalty is on. A packed D (pac > 1)
    is penalised per pack: its input is the whole pack."""
    params = list(nets.D.parameters())
    pac = nets.D.pac
    with torch.enable_grad():
        x = real.detach().requires_grad_(True)
        (grad_x,) = torch.autograd.grad(nets.D(x).sum(), x, create_graph=True)
        if pac > 1:   # each pack's logit came back once per row: count it once, per pack
            grad_x = grad_x.reshape(-1, pac * grad_x.shape[1]) / pac
        penalty = 0.5 * gamma * grad_x.pow(2).sum(1).mean()
        grads = torch.autograd.grad(penalty, params, materialize_grads=True)  # biases: 0
    nets.d_flat.grad.add_(torch.cat([g.reshape(-1) for g in grads]))


def discriminator_step(nets: Nets, real: torch.Tensor, fake: torch.Tensor,
                       update: bool = True, r1: float = 0.0) -> dict:
    """One BCE step of D on real vs fake (one forward over both); with update=False
    only its metrics (a rule that freezes D). `r1` > 0 adds the R1 penalty on real data.

    The loss is BCE(real, 1) + BCE(fake, 0), each a batch mean: what is logged as
    d_loss is exactly what is differentiated (plus the penalty, when on). A packed D
    (PackedD) gives each row its pack's logit, so these are means over packs; real and
    fake never share a pack because n_real is a multiple of pac (the batch size is)."""
    n_real = real.shape[0]
    logits, acts = nets.D.forward_cached(torch.cat([real, fake]))
    labels = torch.zeros_like(logits)
    labels[:n_real] = 1.0
    probs = torch.sigmoid(logits)
    nets.D.backward_manual(acts, logits, (probs - labels) / n_real)
    if r1 > 0 and update:
        add_r1_grad_(nets, real, r1)
    d_norm = nets.d_flat.grad.norm()
    skipped = guarded_step(nets.d_opt, d_norm) if update else torch.zeros(())
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / n_real
    return {"d_loss": loss, "d_real": probs[:n_real].mean(), "d_fake": probs[n_real:].mean(),
            "d_grad_norm": d_norm, "d_skipped": skipped}


def draw_batch(x: torch.Tensor, cfg, gen: torch.Generator) -> tuple:
    """A real batch (random indices into the preloaded tensor) and its z."""
    idx = torch.randint(x.shape[0], (cfg.batch_size,), generator=gen, device=x.device)
    z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen, device=x.device)
    return torch.index_select(x, 0, idx), z   # x[idx]'s rows, without advanced indexing


_CHECKED: set = set()   # (rule, fast path) pairs whose outputs were checked once


def check_outputs(rule_name: str, fast: bool, metrics: dict) -> None:
    """The first step of each rule (and path) returns what every rule must."""
    if (rule_name, fast) in _CHECKED:
        return
    problem = missing_outputs(rule_name, metrics)
    if problem:
        raise ContractError(problem)
    _CHECKED.add((rule_name, fast))


def uses_fast_path(rule_name: str, fast: bool = True) -> bool:
    return fast and RULES[rule_name].fast_grad is not None


@torch.no_grad()
def train_step(nets: Nets, batches: list[tuple], ctx: StepContext,
               fast: bool = True) -> dict[str, float]:
    """One iteration: cfg.d_steps D updates (one batch each), then one G update.

    G's forward from the last D step is reused for the G update (one G forward per
    D step, not two as in the source; same maths, D updated in between). `fast=False`
    forces the rule's autograd loss even where it has a fast path.
    """
    cfg = ctx.cfg
    rule = RULES[cfg.rule]
    own = rule.own_update is not None
    fast = not own and uses_fast_path(cfg.rule, fast)
    update_d = rule.trains_d(ctx.options)
    for i, (real, z) in enumerate(batches):
        ctx.z = z
        if not (fast or own) and i == len(batches) - 1:
            with torch.enable_grad():
                mu_graph = nets.G(z)      # the autograd forward the G loss needs
            mu, g_acts = mu_graph.detach(), None
        else:
            mu, g_acts = nets.G.forward_cached(z)
        sample, extra = rule.emit(mu, ctx)
        d_out = discriminator_step(nets, real, mu if cfg.d_sees == "mean" else sample,
                                   update_d, cfg.r1)
    if own:
        with torch.enable_grad():
            g_out = rule.own_update(mu, extra, ctx)
        check_outputs(cfg.rule, fast, g_out)
        found = {**d_out, "g_skipped": torch.zeros(()), **g_out}
        return _floats(found, nets.g_flat.device)
    if fast:
        g_out = rule.fast_grad(mu, g_acts, extra, ctx)
    else:
        with torch.enable_grad():
            loss, g_out = rule.loss(mu_graph, extra, ctx)
            nets.g_flat.grad.copy_(ctx.flat_grad(loss))
    check_outputs(cfg.rule, fast, g_out)
    g_norm = clip_(nets.g_flat.grad, cfg.grad_clip)
    g_out = {**g_out, "g_grad_norm": g_norm, "g_skipped": guarded_step(nets.g_opt, g_norm)}
    return _floats({**d_out, **g_out}, nets.g_flat.device)


def _floats(found: dict, device: torch.device) -> dict[str, float]:
    """Metric tensors as floats, read back in one transfer (on the CPU there is no
    transfer to save, and reading each is several times cheaper than stacking)."""
    if device.type == "cpu":
        return {k: float(v) for k, v in found.items()}
    values = torch.stack([torch.as_tensor(v).float().reshape(()).to(device)
                          for v in found.values()]).tolist()
    return dict(zip(found, values))
