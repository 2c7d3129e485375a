"""Engine vs the source document's loop, at the source preset on mnist5k, in one run.

For each torch thread count (1 and 2 by default) they run alternately (reference,
engine, reference, engine, ...) so that load from other processes hits all alike;
each one's median steps/s is reported. The engine is measured both ways it can
compute G's gradient: the rules' hand-written fast path (the default where a rule
has one) and their autograd loss (what a rule without a fast path runs). The engine ships with 1 thread per training
thread (core.engine.trainer.torch_threads); the source loop runs with torch's default (all
cores). That ratio, the product as shipped vs the source as written, is printed next.

The last line is the engine against the physical limit: the matrix products of one bce
step (recorded from a real step, then run back to back into preallocated outputs, same
shapes and strides) at 1 thread, measured in the same rounds as the engine. A step
cannot be faster than its own matrix products; engine / limit says how much of the
rest (element-wise work, the optimiser, Python) is left. reinforce / bce follows it.
The line before it holds the engine against a ceiling no rewrite of the step can pass:
the same matrix products plus the optimiser's work (both fused Adam updates with their
gradient norms, and the EMA of G) on buffers of the real sizes.

    python bench/engine.py [--steps 1000] [--rounds 3] [--threads 1,2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import seed_loop  # noqa: E402  (bench/ is on sys.path when run as a script)

from core.engine.config import preset  # noqa: E402
from core.engine.step import guarded_step  # noqa: E402
from core.engine.trainer import Trainer, torch_threads  # noqa: E402


def engine_steps_per_s(steps: int, rule: str = "bce", fast: bool = True) -> float:
    """Headless Trainer.step() at the source preset (no thread, no UI); `fast=False`
    uses the rule's autograd loss instead of its fast path."""
    trainer = Trainer(preset("source", rule=rule, device="cpu", sample_every=10**9,
                             eval_every=0))
    trainer.run.fast = fast
    for _ in range(20):   # warm-up, as in the reference
        trainer.step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return steps / (time.perf_counter() - start)


GEMMS = {torch.ops.aten.mm.default: torch.mm, torch.ops.aten.mm.out: torch.mm,
         torch.ops.aten.addmm.default: torch.addmm, torch.ops.aten.addmm.out: torch.addmm}


class GemmRecorder(TorchDispatchMode):
    """Records the matrix products run under it: (torch function, [(shape, stride)])."""

    def __init__(self) -> None:
        super().__init__()
        self.gemms: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in GEMMS:
            self.gemms.append((GEMMS[func], [(tuple(a.shape), a.stride()) for a in args
                                             if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def step_gemms(rule: str = "bce") -> list:
    """The matrix products of one engine step (fast path) at the source preset."""
    trainer = Trainer(preset("source", rule=rule, device="cpu", sample_every=10**9,
                             eval_every=0))
    for _ in range(3):
        trainer.step()
    recorder = GemmRecorder()
    with recorder:
        trainer.step()
    return recorder.gemms


def gemm_limit_steps_per_s(steps: int, gemms: list, optimiser: bool = False) -> float:
    """Steps/s if a step were only its matrix products: each one on preallocated
    operands of the recorded shapes and strides, into a preallocated output. With
    `optimiser`, also what no rewrite of the step can drop: both guarded fused Adam
    updates (gradient norm, finiteness flag, kernel) and the EMA of G, on the real
    buffers; they also evict the GEMMs' operands from cache, which is part of the cost."""
    calls = []
    for fn, operands in gemms:
        tensors = [torch.empty_strided(shape, stride).normal_()
                   for shape, stride in operands]
        a, b = tensors[-2:]
        out = torch.empty(a.shape[0], b.shape[1])
        calls.append((fn, tensors, out))
    update = optimiser_replay() if optimiser else (lambda: None)

    def step():
        for fn, tensors, out in calls:
            fn(*tensors, out=out)
        update()

    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def optimiser_replay():
    """One step's optimiser work on a real trainer's buffers (its gradients random)."""
    trainer = Trainer(preset("source", device="cpu", sample_every=10**9, eval_every=0))
    trainer.step()   # creates the Adam state
    nets, ema = trainer.nets, trainer.run.ema_flat
    nets.g_flat.grad.normal_(0, 1e-3)
    nets.d_flat.grad.normal_(0, 1e-3)

    def update():
        for flat, opt in ((nets.d_flat, nets.d_opt), (nets.g_flat, nets.g_opt)):
            guarded_step(opt, flat.grad.norm())
        ema.lerp_(nets.g_flat.detach(), 0.005)
    return update


def measure(threads: int, steps: int, rounds: int) -> dict[str, float]:
    """Median steps/s of the seed loop and of each rule x gradient path."""
    torch.set_num_threads(threads)
    runs = {"seed loop": lambda: seed_loop.run(steps)}
    gemms = step_gemms("bce")
    runs["bce GEMM limit"] = lambda: gemm_limit_steps_per_s(steps, gemms)
    runs["bce GEMM+optimiser"] = lambda: gemm_limit_steps_per_s(steps, gemms, optimiser=True)
    for rule in ("bce", "reinforce"):
        n = steps if rule == "bce" else steps // 2
        runs[f"{rule} fast"] = lambda r=rule, n=n: engine_steps_per_s(n, r, fast=True)
        runs[f"{rule} autograd"] = lambda r=rule, n=n: engine_steps_per_s(n, r, fast=False)
    seen: dict[str, list] = {name: [] for name in runs}
    for i in range(rounds):
        for name, fn in runs.items():
            seen[name].append(fn())
        print(f"{threads} thread(s), round {i + 1}: " + "  ".join(
            f"{name} {v[-1]:7.1f}" for name, v in seen.items()) + " steps/s", flush=True)
    med = {name: statistics.median(v) for name, v in seen.items()}
    ref = med["seed loop"]
    print(f"{threads} thread(s), median: " + ", ".join(
        f"{name} {v:.1f}" + ("" if name == "seed loop" or "GEMM" in name else
                             f" ({v / ref:.2f}x)")
        for name, v in med.items()), flush=True)
    for rule in ("bce", "reinforce"):
        print(f"  {rule}: autograd / fast path = "
              f"{med[f'{rule} autograd'] / med[f'{rule} fast']:.2f}", flush=True)
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="torch thread counts to measure")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    shipped = torch_threads()
    counts = sorted({int(t) for t in args.threads.split(",")} | {shipped, default_threads})
    print(f"torch {torch.__version__}; torch default {default_threads} threads, engine ships "
          f"with {shipped}; {args.steps} steps x {args.rounds} rounds, source preset, mnist5k")
    results = {n: measure(n, args.steps, args.rounds) for n in counts}
    ref = results[default_threads]["seed loop"]
    eng = results[shipped]["bce fast"]
    print(f"engine ({shipped} thread) / seed loop (torch default, {default_threads} threads) "
          f"= {eng / ref:.2f}x")
    one = results.get(1)
    if one:
        print(f"1 thread: bce engine / (GEMMs + optimiser) = {one['bce fast']:.0f} / "
              f"{one['bce GEMM+optimiser']:.0f} = "
              f"{one['bce fast'] / one['bce GEMM+optimiser']:.2f}")
        print(f"1 thread: reinforce / bce = {one['reinforce fast'] / one['bce fast']:.2f}; "
              f"bce engine / GEMM limit = {one['bce fast']:.0f} / {one['bce GEMM limit']:.0f} "
              f"= {one['bce fast'] / one['bce GEMM limit']:.2f}")


if __name__ == "__main__":
    main()
