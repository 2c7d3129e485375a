"""Can a compiled bce step reach the GEMM limit? (issue 24), in one run at 1 thread.

Variants of one bce fast-path training step at the source preset (mnist5k, batch 64,
G 100-128-128-784 tanh, D 784-128-128-1), each driven through the real Trainer (its
batch stream, lr schedule, timing and metric log) with that trainer's `run.train` and
`stream.draw` replaced inside this process only (same RNG draws, same bookkeeping):

  engine              Trainer.step() as shipped (eager fast path, fused Adam)
  eager-lean          the same maths in eager with fewer ops (105 aten ops, not 122):
                      G's output written straight into D's preallocated input and the
                      real rows gathered into it (no cat), in-place error terms, metrics
                      from std_mean / one mean over both halves, one stack + .tolist()
  inductor-2+adam     torch.compile (inductor, fullgraph, dynamic=False) of the two
                      halves of the step maths (G fwd + D fwd/bwd | D fwd/bwd on G's
                      output + G bwd); both fused Adam kernels and the EMA stay eager
  inductor-1          the whole step in one compiled graph: gather, both forwards and
                      backwards, both Adam updates written out (the fused kernel's maths,
                      skipped when the gradient is not finite), the EMA and all metrics
  inductor-1-cppwrap  the same with inductor's C++ wrapper (no Python between kernels)
  jit-trace-1         torch.jit.trace of the same whole-step function (no C++ compiler)
  harness-only        no maths at all: what the Trainer loop costs around a step

plus two ceilings measured in the same rounds: "GEMM limit" (bench/engine.py's: the
step's matrix products replayed back to back into preallocated outputs) and "GEMM
limit + optimizer" (that, plus both guarded fused Adam updates with their gradient
norms and the EMA lerp on buffers of the real sizes: what any step that keeps aten's
fused Adam must do at least). aten's fused Adam cannot go inside an inductor graph in
torch 2.14 (no fake impl for a tensor lr; a functionalization assert with a float lr):
--variants inductor-1-fusedadam shows it. (jit.trace of it traces, but the traced
graph drops the in-place updates: jit-trace-1-fusedadam's diff is 1.)

Rates are best of --rounds, interleaved round by round, both by wall clock and by this
thread's CPU time (torch runs at 1 thread, in this thread; on a shared machine the CPU
time leaves out the time spent waiting for a core, so its ratios are the stable ones).
Cold compile: the first step in a fresh process on an empty TORCHINDUCTOR_CACHE_DIR;
warm start: the first step in another fresh process on that cache. Correctness: each
variant's G, D, EMA and Adam moments after 1 and 50 steps against the engine's, from the
same seed and batch stream, as max |a - b| / max |b| over each tensor; the engine's own
autograd path (which tests/test_rules.py holds equal to the fast path) is the floor.

    python bench/compile_probe.py [--steps 200] [--rounds 8] [--variants a,b,...]
                                  [--no-subprocess] [--cache-root DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from core.engine.config import preset  # noqa: E402
from core.engine.trainer import Trainer  # noqa: E402

CORRECT_STEPS = 50
METRICS = ("d_loss", "d_real", "d_fake", "d_grad_norm", "d_skipped",
           "g_loss", "reward_mean", "reward_std", "g_grad_norm", "g_skipped")


def new_trainer() -> Trainer:
    return Trainer(preset("source", rule="bce", device="cpu", sample_every=10**9,
                          eval_every=0))


def layer_shapes(mlp) -> list[tuple[int, int]]:
    return [tuple(layer.weight.shape) for layer in mlp.layers]


def unflat(flat: torch.Tensor, shapes) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(W, b) views of a flat buffer in flatten_parameters' layout."""
    out, o = [], 0
    for n_out, n_in in shapes:
        w = flat[o:o + n_out * n_in].view(n_out, n_in)
        o += n_out * n_in
        out.append((w, flat[o:o + n_out]))
        o += n_out
    return out


# -- the step maths as one pure-ish function (inputs mutated in place) ---------------------

def _mlp_forward(params, x, tanh_out):
    acts = [x]
    h = x
    last = len(params) - 1
    for i, (w, b) in enumerate(params):
        h = torch.addmm(b, h, w.t())
        if i < last:
            h = torch.relu(h)
            acts.append(h)
    return (torch.tanh(h) if tanh_out else h), acts


def _mlp_backward(params, acts, g, param_grads, input_grad):
    """Manual backward from d loss / d pre-activation of the last layer; returns
    ([dW, db] per layer in flat order, d input)."""
    grads = []
    for i in range(len(params) - 1, -1, -1):
        w, _ = params[i]
        a = acts[i]
        if param_grads:
            grads = [g.t().mm(a).reshape(-1), g.sum(0)] + grads
        if i > 0 or input_grad:
            g = g.mm(w)
            if i > 0:
                g = torch.where(a > 0, g, 0.0)
    return grads, (g if input_grad else None)


def _adam(p, grad, m, v, step, lr, beta1, beta2, eps, norm):
    """The fused Adam kernel's update, skipped (all four unchanged) when the gradient's
    norm is not finite; returns (p, m, v, step, skipped) as new tensors."""
    bad = ~torch.isfinite(norm)
    step1 = step + 1
    m1 = m.lerp(grad, 1 - beta1)
    v1 = v * beta2 + (1 - beta2) * grad * grad
    bc1 = 1 - torch.pow(beta1, step1)
    bc2_sqrt = torch.sqrt(1 - torch.pow(beta2, step1))
    denom = v1.sqrt() / bc2_sqrt + eps
    p1 = p - (lr / bc1) * m1 / denom
    return (torch.where(bad, p, p1), torch.where(bad, m, m1), torch.where(bad, v, v1),
            torch.where(bad, step, step1), bad.float())


def _fused_adam(p, grad, m, v, step, lr, beta1, beta2, eps, norm):
    """The engine's guarded_step inside the graph: aten's fused Adam kernel itself
    (bit-identical to the eager step), in place; returns the 0/1 skipped flag."""
    bad = (~torch.isfinite(norm)).float()
    step.add_(1)
    torch._fused_adam_([p], [grad], [m], [v], [], [step], amsgrad=False, lr=lr,
                       beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, maximize=False,
                       grad_scale=None, found_inf=bad)
    step.sub_(bad)
    return bad


def make_whole_step(g_shapes, d_shapes, g_hyper, d_hyper, ema_decay, n_real,
                    fused_adam=False):
    """One bce iteration as a function of tensors only (what torch.compile / jit.trace
    get): mutates g, d, their Adam state and the EMA in place, returns the metrics.
    `fused_adam`: the updates by aten's fused Adam kernel in the graph (an extern call)
    instead of its maths written out (which inductor fuses, not bit-identically)."""
    gb1, gb2, geps = g_hyper
    db1, db2, deps = d_hyper

    def whole_step(x, idx, z, g, d, gm, gv, gs, dm, dv, ds, ema, g_lr, d_lr):
        G, D = unflat(g, g_shapes), unflat(d, d_shapes)
        h, g_acts = _mlp_forward(G, z, False)
        mu = torch.sigmoid(h * 2.0) * 2.0 - 1.0   # the engine's tanh_fast_
        xin = torch.cat([torch.index_select(x, 0, idx), mu])
        logits, d_acts = _mlp_forward(D, xin, False)
        probs = torch.sigmoid(logits)
        labels = torch.cat([torch.ones(n_real, 1), torch.zeros(logits.shape[0] - n_real, 1)])
        d_grads, _ = _mlp_backward(D, d_acts, (probs - labels) / n_real, True, False)
        d_grad = torch.cat(d_grads)
        d_norm = d_grad.norm()
        d_loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / n_real
        d_real, d_fake = probs[:n_real].mean(), probs[n_real:].mean()
        if fused_adam:
            d_skip = _fused_adam(d, d_grad, dm, dv, ds, d_lr, db1, db2, deps, d_norm)
            d1 = d
        else:
            d1, dm1, dv1, ds1, d_skip = _adam(d, d_grad, dm, dv, ds, d_lr, db1, db2, deps,
                                              d_norm)
            d.copy_(d1), dm.copy_(dm1), dv.copy_(dv1), ds.copy_(ds1)
        # G's gradient through the updated D
        D1 = unflat(d1, d_shapes)
        gl, gd_acts = _mlp_forward(D1, mu, False)
        _, grad_mu = _mlp_backward(D1, gd_acts, (torch.sigmoid(gl) - 1.0) / gl.shape[0],
                                   False, True)
        grad_h = grad_mu * (1 - mu * mu)
        g_grads, _ = _mlp_backward(G, g_acts, grad_h, True, False)
        g_grad = torch.cat(g_grads)
        g_norm = g_grad.norm()
        log_d = -F.softplus(-gl)
        if fused_adam:
            g_skip = _fused_adam(g, g_grad, gm, gv, gs, g_lr, gb1, gb2, geps, g_norm)
            ema.lerp_(g, 1.0 - ema_decay)
        else:
            g1, gm1, gv1, gs1, g_skip = _adam(g, g_grad, gm, gv, gs, g_lr, gb1, gb2, geps,
                                              g_norm)
            g.copy_(g1), gm.copy_(gm1), gv.copy_(gv1), gs.copy_(gs1)
            ema.copy_(ema.lerp(g1, 1.0 - ema_decay))
        return torch.stack([d_loss, d_real, d_fake, d_norm, d_skip, -log_d.mean(),
                            log_d.mean(), log_d.std(), g_norm, g_skip])

    return whole_step


def make_halves(g_shapes, d_shapes, n_real):
    """The step maths in two functions with the fused Adam of D between them: gradients
    are written into the flat .grad buffers (as the eager path does)."""

    def d_half(x, idx, z, g, d, d_grad):
        G, D = unflat(g, g_shapes), unflat(d, d_shapes)
        h, g_acts = _mlp_forward(G, z, False)
        mu = torch.sigmoid(h * 2.0) * 2.0 - 1.0   # the engine's tanh_fast_
        xin = torch.cat([torch.index_select(x, 0, idx), mu])
        logits, d_acts = _mlp_forward(D, xin, False)
        probs = torch.sigmoid(logits)
        labels = torch.cat([torch.ones(n_real, 1), torch.zeros(logits.shape[0] - n_real, 1)])
        grads, _ = _mlp_backward(D, d_acts, (probs - labels) / n_real, True, False)
        d_grad.copy_(torch.cat(grads))
        d_norm = d_grad.norm()
        d_loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / n_real
        bad = (~torch.isfinite(d_norm)).float()
        return mu, g_acts, torch.stack([d_loss, probs[:n_real].mean(), probs[n_real:].mean(),
                                        d_norm]), bad

    def g_half(g, d, mu, g_acts, g_grad):
        G, D = unflat(g, g_shapes), unflat(d, d_shapes)
        gl, gd_acts = _mlp_forward(D, mu, False)
        _, grad_mu = _mlp_backward(D, gd_acts, (torch.sigmoid(gl) - 1.0) / gl.shape[0],
                                   False, True)
        grads, _ = _mlp_backward(G, g_acts, grad_mu * (1 - mu * mu), True, False)
        g_grad.copy_(torch.cat(grads))
        g_norm = g_grad.norm()
        log_d = -F.softplus(-gl)
        bad = (~torch.isfinite(g_norm)).float()
        return torch.stack([-log_d.mean(), log_d.mean(), log_d.std(), g_norm]), bad

    return d_half, g_half


# -- eager with fewer ops ------------------------------------------------------------------

def make_lean_step(nets, n_real, batch):
    """The engine's step in eager with fewer ops and allocations: G's output is written
    straight into the second half of D's preallocated input and the real rows are
    gathered into the first (no cat), in-place activations, the D gradient's error
    term built in place, metrics as a handful of 0-d tensors read in one .tolist()."""
    G, D = nets.G, nets.D
    xin = torch.empty(n_real + batch, G.layers[-1].weight.shape[0])
    mu = xin[n_real:]
    labels = torch.zeros(n_real + batch, 1)
    labels[:n_real] = 1.0
    g_layers = [(layer.weight, layer.bias) for layer in G.layers]
    d_layers = [(layer.weight, layer.bias) for layer in D.layers]
    g_grads = [(layer.weight.grad, layer.bias.grad) for layer in G.layers]
    d_grads = [(layer.weight.grad, layer.bias.grad) for layer in D.layers]
    inv_n, inv_b = 1.0 / n_real, 1.0 / batch
    addmm, mm, tb = torch.addmm, torch.mm, torch.ops.aten.threshold_backward
    from core.engine.step import fused_adam_step

    def backward(layers, grads, acts, g, input_grad):
        for i in range(len(layers) - 1, -1, -1):
            w, _ = layers[i]
            if grads is not None:
                mm(g.t(), acts[i], out=grads[i][0])
                torch.sum(g, 0, out=grads[i][1])
            if i > 0 or input_grad:
                g = g.mm(w)
                if i > 0:
                    g = tb(g, acts[i], 0)
        return g

    def forward(layers, x, out=None):
        acts = [x]
        h = x
        for w, b in layers[:-1]:
            h = addmm(b, h, w.t()).relu_()
            acts.append(h)
        w, b = layers[-1]
        return (addmm(b, h, w.t()) if out is None else addmm(b, h, w.t(), out=out)), acts

    def step(x, idx, z):
        torch.index_select(x, 0, idx, out=xin[:n_real])
        _, g_acts = forward(g_layers, z, out=mu)
        mu.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)   # tanh_fast_
        logits, d_acts = forward(d_layers, xin)
        probs = torch.sigmoid(logits)
        d_means = probs.view(2, -1).mean(1) if n_real == batch else None
        d_loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") * inv_n
        backward(d_layers, d_grads, d_acts, probs.sub_(labels).mul_(inv_n), False)
        d_norm = nets.d_flat.grad.norm()
        d_bad = (~torch.isfinite(d_norm)).float()
        fused_adam_step(nets.d_opt, d_bad)
        gl, gd_acts = forward(d_layers, mu)
        grad_mu = backward(d_layers, None, gd_acts, torch.sigmoid(gl).sub_(1.0).mul_(inv_b),
                           True)
        backward(g_layers, g_grads, g_acts, torch.ops.aten.tanh_backward(grad_mu, mu), False)
        log_d = F.softplus(gl.neg_()).neg_()
        g_norm = nets.g_flat.grad.norm()
        g_bad = (~torch.isfinite(g_norm)).float()
        fused_adam_step(nets.g_opt, g_bad)
        std, mean = torch.std_mean(log_d)
        return torch.stack([d_loss, d_means[0], d_means[1], d_norm, d_bad, -mean, mean, std,
                            g_norm, g_bad])

    return step


# -- driving a variant through the real Trainer ------------------------------------------

def ensure_adam_state(opt) -> dict:
    """The state a fused Adam creates on its first step (so a compiled step can own
    every step, the first included)."""
    (p,) = opt.param_groups[0]["params"]
    if not opt.state.get(p):
        opt.state[p] = {"step": torch.zeros((), dtype=torch.float32),
                        "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    return opt.state[p]


def install(trainer: Trainer, variant: str, compiled: dict) -> None:
    """Replace this trainer's stream.draw and run.train by the variant's (same RNG
    draws, same bookkeeping as Run.train: lr, step maths, EMA, timing, log)."""
    if variant == "engine":
        return
    run, stream = trainer.run, trainer.stream
    nets, cfg = run.nets, run.cfg
    assert cfg.d_steps == 1 and cfg.r1 == 0 and cfg.grad_clip == 0 and cfg.d_sees == "sample"
    n, b = cfg.batch_size, cfg.batch_size
    gen, x = stream.gen, stream.x

    def draw(cfg):
        idx = torch.randint(x.shape[0], (cfg.batch_size,), generator=gen)
        return [(idx, torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen))]
    stream.draw = draw

    gst, dst = ensure_adam_state(nets.g_opt), ensure_adam_state(nets.d_opt)
    g_lr, d_lr = torch.zeros(()), torch.zeros(())
    g, d, ema = nets.g_flat.detach(), nets.d_flat.detach(), run.ema_flat
    if variant == "harness-only":
        math = make_harness_only()
    elif variant == "eager-lean":
        lean = make_lean_step(nets, n, b)

        def math(idx, z):
            out = lean(x, idx, z)
            ema.lerp_(g, 1.0 - cfg.g_ema)
            return out
    elif variant.startswith(("inductor-1", "jit")):
        fn = compiled[variant]

        def math(idx, z):
            return fn(x, idx, z, g, d, gst["exp_avg"], gst["exp_avg_sq"], gst["step"],
                      dst["exp_avg"], dst["exp_avg_sq"], dst["step"], ema, g_lr, d_lr)
    elif variant.startswith("inductor-2"):
        d_half, g_half = compiled[variant]
        from core.engine.step import fused_adam_step
        g_grad, d_grad = nets.g_flat.grad, nets.d_flat.grad

        def math(idx, z):
            mu, g_acts, d_m, d_bad = d_half(x, idx, z, g, d, d_grad)
            fused_adam_step(nets.d_opt, d_bad)
            g_m, g_bad = g_half(g, d, mu, g_acts, g_grad)
            fused_adam_step(nets.g_opt, g_bad)
            ema.lerp_(g, 1.0 - cfg.g_ema)
            return torch.cat([d_m, d_bad.view(1), g_m, g_bad.view(1)])
    else:
        raise ValueError(variant)

    def train(batches, fixed_z, lr_scale=1.0):
        cfg = run.cfg
        for opt, opt_cfg, lr in ((nets.g_opt, cfg.g_opt, g_lr), (nets.d_opt, cfg.d_opt, d_lr)):
            opt.param_groups[0]["lr"] = opt_cfg.lr * lr_scale
            lr.fill_(opt_cfg.lr * lr_scale)
        start = time.perf_counter()
        ((idx, z),) = batches
        with torch.no_grad():
            values = dict(zip(METRICS, math(idx, z).tolist()))
        dt = time.perf_counter() - start
        run._ema_dt = dt if run._ema_dt == 0 else 0.95 * run._ema_dt + 0.05 * dt
        values["steps_per_s"] = 1.0 / run._ema_dt
        run.step_count += 1
        run.log.append(run.step_count, {k: v for k, v in values.items()
                                        if not k.endswith("_skipped")})
        if run.step_count % cfg.sample_every == 0:
            run.take_snapshot(fixed_z)
        return values
    run.train = train


def build_compiled(variant: str, trainer: Trainer):
    """The compiled function(s) of a variant, for this trainer's shapes."""
    nets, cfg = trainer.nets, trainer.cfg
    g_shapes, d_shapes = layer_shapes(nets.G), layer_shapes(nets.D)
    hyper = lambda o: (o.beta1, o.beta2, nets.g_opt.param_groups[0]["eps"])  # noqa: E731
    if variant.startswith("inductor-1") or variant.startswith("jit"):
        fn = make_whole_step(g_shapes, d_shapes, hyper(cfg.g_opt), hyper(cfg.d_opt),
                             cfg.g_ema, cfg.batch_size, fused_adam="fusedadam" in variant)
        if variant.startswith("jit"):
            return JitLazy(fn)
        opts = {"cpp_wrapper": True} if "cppwrap" in variant else None
        return torch.compile(fn, fullgraph=True, dynamic=False, options=opts)
    if variant.startswith("inductor-2"):
        d_half, g_half = make_halves(g_shapes, d_shapes, cfg.batch_size)
        return (torch.compile(d_half, fullgraph=True, dynamic=False),
                torch.compile(g_half, fullgraph=True, dynamic=False))
    return None


class JitLazy:
    """torch.jit.trace on the first call (tracing needs example inputs)."""

    def __init__(self, fn) -> None:
        self.fn, self.traced = fn, None

    def __call__(self, *args):
        if self.traced is None:
            # tracing runs the function once: trace on clones so the state moves once
            clones = [a.clone() for a in args]
            self.traced = torch.jit.trace(self.fn, tuple(clones), check_trace=False)
        return self.traced(*args)


def make_harness_only():
    """No step maths at all: what the Trainer's loop costs around the maths (batch draw,
    lr, log, bookkeeping): the floor any variant sits on."""
    zeros = torch.zeros(len(METRICS))
    return lambda idx, z: zeros


# -- measurements ------------------------------------------------------------------------

# inductor-1-fusedadam (aten's fused Adam inside the one graph) does not compile in
# torch 2.14: _fused_adam_ has no fake impl for a tensor lr, and with a float lr
# functionalization asserts; --variants inductor-1-fusedadam shows the error.
VARIANTS = ("engine", "eager-lean", "inductor-2+adam", "inductor-1", "inductor-1-cppwrap",
            "jit-trace-1")
COMPILED = ("inductor-2+adam", "inductor-1", "inductor-1-cppwrap", "inductor-1-fusedadam",
            "inductor-1-fusedadam-cppwrap", "jit-trace-1", "jit-trace-1-fusedadam")


def ready_trainer(variant: str, compiled: dict) -> Trainer:
    trainer = new_trainer()
    install(trainer, variant, compiled)
    return trainer


def snapshot_state(trainer: Trainer) -> dict:
    nets = trainer.nets
    out = {"G": nets.g_flat.detach().clone(), "D": nets.d_flat.detach().clone(),
           "EMA": trainer.run.ema_flat.clone()}
    for name, opt in (("G adam", nets.g_opt), ("D adam", nets.d_opt)):
        (p,) = opt.param_groups[0]["params"]
        for key in ("exp_avg", "exp_avg_sq"):
            out[f"{name} {key}"] = opt.state[p][key].clone()
    return out


def max_diff(a: dict, b: dict) -> tuple[float, str, bool]:
    """(max over tensors of max|a - b| / max|b|, the worst tensor's name, whether every
    tensor passes the repo's own fast-vs-autograd tolerance: assert_close rtol 1e-4,
    atol 1e-5)."""
    diffs = {k: float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in b}
    worst = max(diffs, key=diffs.get)
    ok = all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in b)
    return diffs[worst], worst, ok


def correctness(variants, compiled: dict, steps: int = CORRECT_STEPS) -> dict:
    """{variant: ((diff, worst, ok) after 1 step, the same after `steps`)} against the
    engine from the same seed and stream; the engine's autograd path as the floor."""
    def states(trainer):
        trainer.step()
        first = snapshot_state(trainer)
        for _ in range(steps - 1):
            trainer.step()
        return first, snapshot_state(trainer)

    want = states(new_trainer())
    found = {}
    for variant in [v for v in variants if v != "engine"] + ["engine autograd (floor)"]:
        if variant == "engine autograd (floor)":
            trainer = new_trainer()
            trainer.run.fast = False
        else:
            trainer = ready_trainer(variant, compiled)
        got = states(trainer)
        found[variant] = (max_diff(got[0], want[0]), max_diff(got[1], want[1]))
    return found


def child(variant: str) -> None:
    """One fresh process: time to the end of the first step of a compiled variant
    (tracing, compiling or loading from the cache dir in the environment, C++ build)."""
    torch.set_num_threads(1)
    trainer = new_trainer()
    start = time.perf_counter()
    compiled = {variant: build_compiled(variant, trainer)}
    install(trainer, variant, compiled)
    trainer.step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    trainer.step()
    print(json.dumps({"first_step_s": first, "second_step_s": time.perf_counter() - start}))


def compile_times(variant: str, root: Path) -> tuple[float, float]:
    """(cold, warm) first-step seconds in fresh processes; cold on an empty cache dir."""
    cache = root / variant
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    got = []
    for _ in range(2):
        out = subprocess.run([sys.executable, __file__, "--child", variant], env=env,
                             capture_output=True, text=True, check=True)
        got.append(json.loads(out.stdout.strip().splitlines()[-1])["first_step_s"])
    return got[0], got[1]


def gemm_replay(gemms: list):
    """bench/engine.py's GEMM limit as a callable: one step's matrix products on
    preallocated operands of the recorded shapes and strides, into preallocated outputs."""
    calls = []
    for fn, operands in gemms:
        tensors = [torch.empty_strided(shape, stride).normal_() for shape, stride in operands]
        a, b = tensors[-2:]
        calls.append((fn, tensors, torch.empty(a.shape[0], b.shape[1])))

    def step():
        for fn, tensors, out in calls:
            fn(*tensors, out=out)
    return step


def optimizer_replay(trainer: Trainer):
    """What the step must do besides its GEMMs however it is compiled: both guarded fused
    Adam updates (gradient norm, finiteness flag, kernel) and the EMA lerp, on buffers
    of the real sizes (the 'GEMM limit + optimizer' row: a compiled step's ceiling)."""
    from core.engine.step import fused_adam_step
    nets = trainer.nets
    nets.g_flat.grad.normal_(0, 1e-3)
    nets.d_flat.grad.normal_(0, 1e-3)
    g, ema = nets.g_flat.detach(), trainer.run.ema_flat

    def step():
        for flat, opt in ((nets.d_flat, nets.d_opt), (nets.g_flat, nets.g_opt)):
            norm = flat.grad.norm()
            fused_adam_step(opt, (~torch.isfinite(norm)).float())
        ema.lerp_(g, 0.005)
    return step


def throughput(variants, compiled: dict, steps: int, rounds: int) -> dict[str, list]:
    """(wall, CPU) steps/s of each variant and of the GEMM limit, interleaved round by
    round. CPU time is this thread's (torch runs at 1 thread, in this thread): on a
    shared machine it leaves out the time the process waited for a core."""
    import engine as bench_engine  # bench/engine.py: the GEMM recorder
    limit_step = gemm_replay(bench_engine.step_gemms("bce"))
    opt_trainer = new_trainer()
    for _ in range(2):
        opt_trainer.step()
    opt_step = optimizer_replay(opt_trainer)

    def limit_opt_step():
        limit_step()
        opt_step()
    trainers = {v: ready_trainer(v, compiled) for v in variants}
    for _ in range(20):
        limit_step()
        for trainer in trainers.values():   # warm-up (and the first, state-creating step)
            trainer.step()

    def rate(step):
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(steps):
            step()
        return steps / (time.perf_counter() - wall), steps / (time.thread_time() - cpu)

    runs = {"GEMM limit": limit_step, "GEMM limit + optimizer": limit_opt_step,
            **{v: t.step for v, t in trainers.items()}}
    seen: dict[str, list] = {name: [] for name in runs}
    for i in range(rounds):
        for name, fn in runs.items():
            seen[name].append(rate(fn))
        print(f"round {i + 1} (wall / cpu steps/s): " + "  ".join(
            f"{k} {v[-1][0]:.0f}/{v[-1][1]:.0f}" for k, v in seen.items()), flush=True)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per measurement")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS + ("harness-only",)))
    parser.add_argument("--no-subprocess", action="store_true",
                        help="skip the cold/warm compile-time processes")
    parser.add_argument("--cache-root", help="reuse the inductor caches of an earlier run "
                        "(with --no-subprocess: no cold compile in this run)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    torch.set_num_threads(1)
    variants = [v for v in args.variants.split(",") if v]
    root = Path(args.cache_root or tempfile.mkdtemp(prefix="compile_probe_"))
    print(f"torch {torch.__version__}, 1 thread, source preset (bce), inductor caches under "
          f"{root}", flush=True)
    times: dict[str, tuple] = {}
    compiled: dict = {}
    for variant in variants:
        if variant not in COMPILED:
            continue
        if not args.no_subprocess:
            try:
                times[variant] = compile_times(variant, root)
            except subprocess.CalledProcessError as exc:
                print(f"{variant}: failed to compile\n{exc.stderr[-2000:]}", flush=True)
                continue
            print(f"{variant}: cold first step {times[variant][0]:.1f} s, warm start "
                  f"{times[variant][1]:.1f} s", flush=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / variant)   # warm from the above
        compiled[variant] = build_compiled(variant, new_trainer())
    variants = [v for v in variants if v not in COMPILED or v in compiled]
    diffs = correctness(variants, compiled)
    for name, ((diff1, worst1, ok1), (diff, worst, ok)) in diffs.items():
        print(f"{name}: max diff after 1 step {diff1:.1e} ({worst1}), after {CORRECT_STEPS} "
              f"steps {diff:.1e} ({worst}); within the tests' rtol 1e-4 / atol 1e-5: "
              f"{ok1}, {ok}", flush=True)
    seen = throughput(variants, compiled, args.steps, args.rounds)
    for col, label in ((1, "CPU time of the thread"), (0, "wall clock")):
        limit = max(r[col] for r in seen["GEMM limit"])
        engine = max(r[col] for r in seen["engine"]) if "engine" in seen else float("nan")
        print(f"\nbest of {args.rounds} x {args.steps} steps, 1 thread, {label}: GEMM limit "
              f"{limit:.0f} steps/s")
        print(f"{'variant':28s} {'steps/s':>8s} {'/ limit':>8s} {'/ engine':>9s} "
              f"{'cold s':>7s} {'warm s':>7s} {'diff@1':>8s} {'diff@50':>8s}")
        for name in [v for v in seen if v != "GEMM limit"]:
            best = max(r[col] for r in seen[name])
            cold, warm = times.get(name, (float("nan"), float("nan")))
            nan = (float("nan"),)
            one, last = diffs.get(name, ((0.0,), (0.0,)) if name == "engine" else (nan, nan))
            if name in ("harness-only", "GEMM limit + optimizer"):   # not a training step
                one = last = nan
            print(f"{name:28s} {best:8.0f} {best / limit:8.2f} {best / engine:9.2f} "
                  f"{cold:7.1f} {warm:7.1f} {one[0]:8.1e} {last[0]:8.1e}")
    one, last = diffs["engine autograd (floor)"]
    print(f"{'engine autograd (floor)':28s} {'':8s} {'':8s} {'':9s} {'':7s} {'':7s} "
          f"{one[0]:8.1e} {last[0]:8.1e}")


if __name__ == "__main__":
    main()
