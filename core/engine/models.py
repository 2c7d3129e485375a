"""The source's MLP generator and discriminator, with a hand-written backward pass.

At the source's sizes (batch 64, layers of 128) a training step is dominated by
per-op Python, autograd and optimiser overhead, not by the matrix work. These
MLPs therefore carry an explicit forward that caches activations and a backward
that writes parameter gradients directly (a test checks it against autograd).
The modules stay ordinary nn.Modules, so state_dict / load_state_dict / autograd
forward all work as usual for sampling, evaluation and checkpoints.
"""
from __future__ import annotations

import torch
from torch import nn

from core.engine.config import TrainConfig


def tanh_fast_(h: torch.Tensor) -> torch.Tensor:
    """tanh(h) = 2 sigmoid(2h) - 1, in place: within 2e-7 of torch.tanh, and on CPU
    about 3x faster (aten's vectorised tanh is far slower than its sigmoid; bench/engine.py
    shows the step's share)."""
    return h.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


# Does this CPU multiply bfloat16 natively (AVX512-BF16 / AMX)? Elsewhere bf16 products
# are emulated and slower than float32, so MLP.logits_near stays in float32 there.
NATIVE_BF16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
WIDE_INPUT = 256   # below this input width the product is too small for bf16 to pay


class MLP(nn.Module):
    """Linear -> ReLU -> ... -> Linear (-> tanh)."""
    pac = 1   # rows D scores together (PackedD); 1 = each row alone

    def __init__(self, sizes: list[int], tanh_out: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.tanh_out = tanh_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.forward_cached(x)
        return out

    def forward_cached(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output and the input of every layer (what the manual backward needs)."""
        acts = [x]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = torch.addmm(layer.bias, acts[-1], layer.weight.t())
            if i < last:
                acts.append(torch.relu_(h) if not h.requires_grad else torch.relu(h))
        if self.tanh_out:
            out = tanh_fast_(h) if not h.requires_grad else torch.tanh(h)
        else:
            out = h
        return out, acts

    @torch.no_grad()
    def logits_near(self, mu: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
        """Outputs of x = mu[:, None] + sigma eps, (B, K, dim) -> (B K, 1), no gradient:
        a policy's K samples per z scored for their rewards. The first layer is split as
        (W mu + b) + sigma (W eps): the second product, K times the first, is most of the
        cost, and on images it runs in bfloat16 where the CPU multiplies it natively. Its
        rounding error then scales with sigma eps, not with x, so a small sigma keeps
        its detail (a test bounds the change in reinforce's advantages)."""
        first, (batch, k, dim) = self.layers[0], eps.shape
        weight = first.weight.t()
        base = torch.addmm(first.bias, mu, weight)
        flat_eps = eps.reshape(batch * k, dim)
        if NATIVE_BF16 and dim >= WIDE_INPUT and eps.device.type == "cpu":
            noise = torch.mm(flat_eps.bfloat16(), weight.bfloat16()).float()
        else:
            noise = torch.mm(flat_eps, weight)
        h = torch.add(base.unsqueeze(1), noise.view(batch, k, -1), alpha=sigma)
        h = h.view(batch * k, -1)
        for layer in self.layers[1:]:
            h = torch.addmm(layer.bias, h.relu_(), layer.weight.t())
        return tanh_fast_(h) if self.tanh_out else h

    def backward_manual(self, acts: list[torch.Tensor], out: torch.Tensor,
                        grad_out: torch.Tensor, *, param_grads: bool = True,
                        input_grad: bool = False) -> torch.Tensor | None:
        """Backpropagate grad_out (d loss / d output) without autograd.

        Writes .grad of every parameter in place when param_grads (replacing, not
        adding; see flatten_parameters) and returns d loss / d input when input_grad.
        """
        # aten's fused backward kernels: one op each instead of two or three
        g = torch.ops.aten.tanh_backward(grad_out, out) if self.tanh_out else grad_out
        for i in range(len(self.layers) - 1, -1, -1):
            layer, a = self.layers[i], acts[i]
            if param_grads:
                torch.mm(g.t(), a, out=layer.weight.grad)
                torch.sum(g, 0, out=layer.bias.grad)
            if i > 0 or input_grad:
                g = g.mm(layer.weight)
                if i > 0:
                    g = torch.ops.aten.threshold_backward(g, a, 0)  # ReLU' from the output
        return g if input_grad else None

    def score_points(self, x: torch.Tensor) -> torch.Tensor:
        """One output per row of x, each row on its own (see PackedD.score_points)."""
        return self(x)


class PackedD(MLP):
    """PacGAN's discriminator (Lin et al. 2018): D sees packs of `pac` consecutive rows,
    (B, dim) -> (B/pac, pac*dim), and each pack's logit is given back to every one of
    its rows. So every caller keeps one logit per row: a loss that is a mean over rows
    is the mean over packs, and the manual backward sums a pack's rows' gradients, as
    autograd does through repeat_interleave. B must be a multiple of pac (the config
    checks the batch size); score_points scores rows of any count one by one."""

    def __init__(self, sizes: list[int], pac: int) -> None:
        super().__init__([sizes[0] * pac, *sizes[1:]], tanh_out=False)
        self.pac = pac

    def _pack(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.pac:
            raise ValueError(f"D packs {self.pac} rows at a time and got {x.shape[0]}; "
                             "score single points with score_points()")
        return x.reshape(x.shape[0] // self.pac, self.pac * x.shape[1])

    def forward_cached(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out, acts = super().forward_cached(self._pack(x))
        return out.repeat_interleave(self.pac, 0), acts

    def backward_manual(self, acts: list[torch.Tensor], out: torch.Tensor,
                        grad_out: torch.Tensor, *, param_grads: bool = True,
                        input_grad: bool = False) -> torch.Tensor | None:
        # a pack's logit went to each of its rows: their gradients add up (D has no
        # tanh, so the MLP's backward never reads `out`)
        grad_packs = grad_out.view(-1, self.pac).sum(1, keepdim=True)
        g = super().backward_manual(acts, out, grad_packs, param_grads=param_grads,
                                    input_grad=input_grad)
        return g.reshape(-1, acts[0].shape[1] // self.pac) if input_grad else None

    def score_points(self, x: torch.Tensor) -> torch.Tensor:
        """D's logit of each row x scored as the pack (x, x, ..., x): what D thinks of
        one point, for any number of rows (heatmaps over a grid, per-sample fields)."""
        return MLP.forward_cached(self, x.repeat(1, self.pac))[0]


def build_models(cfg: TrainConfig, data_dim: int, is_image: bool) -> tuple[MLP, MLP]:
    """G (latent -> data) and D (data -> one logit), initialised from cfg.seed; with
    cfg.pac > 1, D scores packs of pac samples (PackedD).

    Images get tanh outputs (data is in [-1, 1]); 2-D points are unbounded (grid25
    spans +-4), so G's output is linear there.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator = MLP([cfg.latent_dim, *cfg.g_hidden, data_dim], tanh_out=is_image)
        d_sizes = [data_dim, *cfg.d_hidden, 1]
        discriminator = (PackedD(d_sizes, cfg.pac) if cfg.pac > 1
                         else MLP(d_sizes, tanh_out=False))
    return generator, discriminator


def flatten_parameters(module: nn.Module) -> nn.Parameter:
    """Make every parameter (and its .grad) a view into one flat buffer.

    The optimiser then updates one tensor per network in one fused kernel, and
    gradient norms, clipping and finiteness checks are single ops. load_state_dict
    copies in place, so the views survive checkpoint loading.
    """
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    flat = torch.empty(total, dtype=params[0].dtype, device=params[0].device)
    grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        flat[offset:offset + n].copy_(p.data.reshape(-1))
        p.data = flat[offset:offset + n].view_as(p)
        p.grad = grad[offset:offset + n].view_as(p)
        offset += n
    flat_param = nn.Parameter(flat)
    flat_param.grad = grad
    return flat_param


def make_adam(flat: torch.nn.Parameter, opt_cfg) -> torch.optim.Adam:
    """The one Adam of the lab (fused: one kernel per network), from an OptimConfig."""
    return torch.optim.Adam([flat], lr=opt_cfg.lr, betas=(opt_cfg.beta1, opt_cfg.beta2),
                            fused=True)
