"""Engine vs the source document's loop, at the source preset on mnist5k, in one run.

For each torch thread count (1 and 2 by default) the two run alternately (reference,
engine, reference, engine, ...) so that load from other processes hits both alike;
each one's median steps/s is reported. The engine ships with 1 thread per training
thread (core.trainer.torch_threads); the source loop runs with torch's default (all
cores). The last line is that ratio: the product as shipped vs the source as written.

    python bench/engine.py [--steps 1000] [--rounds 3] [--threads 1,2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import seed_loop  # noqa: E402  (bench/ is on sys.path when run as a script)

from core.config import preset  # noqa: E402
from core.trainer import Trainer, torch_threads  # noqa: E402


def engine_steps_per_s(steps: int, rule: str = "bce") -> float:
    """Headless Trainer.step() at the source preset (no thread, no UI)."""
    trainer = Trainer(preset("source", rule=rule, device="cpu", sample_every=10**9,
                             eval_every=0))
    for _ in range(20):   # warm-up, as in the reference
        trainer.step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return steps / (time.perf_counter() - start)


def measure(threads: int, steps: int, rounds: int) -> tuple[float, float, float]:
    torch.set_num_threads(threads)
    ref, eng, rl = [], [], []
    for i in range(rounds):
        ref.append(seed_loop.run(steps))
        eng.append(engine_steps_per_s(steps))
        rl.append(engine_steps_per_s(steps // 2, rule="reinforce"))
        print(f"{threads} thread(s), round {i + 1}: seed loop {ref[-1]:7.1f}  "
              f"engine bce {eng[-1]:7.1f}  engine reinforce {rl[-1]:7.1f} steps/s", flush=True)
    r, e, p = (statistics.median(v) for v in (ref, eng, rl))
    print(f"{threads} thread(s), median: seed loop {r:.1f}, engine bce {e:.1f} ({e / r:.2f}x), "
          f"engine reinforce {p:.1f} steps/s", flush=True)
    return r, e, p


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
    ref = results[default_threads][0]
    eng = results[shipped][1]
    print(f"engine ({shipped} thread) / seed loop (torch default, {default_threads} threads) "
          f"= {eng / ref:.2f}x")


if __name__ == "__main__":
    main()
