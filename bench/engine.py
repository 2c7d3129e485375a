"""Engine vs the source document's loop, at the source preset on mnist5k, in one run.

Runs the two alternately (reference, engine, reference, engine, ...) so that load from
other processes hits both alike, and reports each one's median steps/s. The last line
is the ratio.

    python bench/engine.py [--steps 1000] [--rounds 3] [--threads N]
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
from core.trainer import Trainer  # noqa: E402


def engine_steps_per_s(steps: int, rule: str = "bce") -> float:
    """Headless Trainer.step() at the source preset (no thread, no UI)."""
    trainer = Trainer(preset("source", rule=rule, device="cpu", sample_every=10**9))
    for _ in range(20):   # warm-up, as in the reference
        trainer.step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.steps} steps x {args.rounds} rounds, source preset, mnist5k")
    ref, eng, rl = [], [], []
    for i in range(args.rounds):
        ref.append(seed_loop.run(args.steps))
        eng.append(engine_steps_per_s(args.steps))
        rl.append(engine_steps_per_s(args.steps // 2, rule="reinforce"))
        print(f"round {i + 1}: seed loop {ref[-1]:7.1f}  engine bce {eng[-1]:7.1f}  "
              f"engine reinforce {rl[-1]:7.1f} steps/s")
    r, e, p = (statistics.median(v) for v in (ref, eng, rl))
    print(f"median: seed loop {r:.1f}, engine bce {e:.1f}, engine reinforce {p:.1f} steps/s")
    print(f"engine / seed loop = {e / r:.2f}x")


if __name__ == "__main__":
    main()
