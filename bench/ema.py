"""Quality with and without the EMA of G's weights, on the 2-D toys, over seeds.

For each data set and seed, one arena (bce and reinforce in lockstep at the
"recommended" preset) trains `--steps` steps; then every arm's raw G and its EMA
(decay cfg.g_ema) are scored on the same 2,500 fixed z. Prints mean ± s.e. over
seeds per data set, rule and weights.

    python bench/ema.py [--steps 10000] [--seeds 3] [--data ring8,grid25]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine.arena import Arena  # noqa: E402
from core.engine.config import preset  # noqa: E402
from core.quality.evaluate import evaluator_for  # noqa: E402

METRICS = ("q_high_quality", "q_modes", "q_reverse_kl")


def mean_se(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3g} ± {se:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", default="ring8,grid25")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scores: dict[tuple, list[dict]] = {}
    for data in args.data.split(","):
        for seed in range(args.seeds):
            cfg = preset("recommended", data=data, seed=seed, steps=args.steps, eval_every=0,
                         sample_every=10**9, device="cpu")
            arena = Arena(cfg, ["bce", "reinforce"])
            start = time.perf_counter()
            arena.run_here()
            evaluate = evaluator_for(arena.data)
            for name, arm in arena.arms.items():
                for which, G in (("raw", arm.nets.G), (f"ema {cfg.g_ema}", arm.G_ema)):
                    scores.setdefault((data, name, which), []).append(evaluate(G))
            print(f"{data} seed {seed}: {args.steps} steps in "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print(f"{args.steps} steps, {args.seeds} seeds, mean ± s.e.")
    print(f"{'data':<8}{'rule':<11}{'weights':<11}" + "".join(f"{m:<18}" for m in METRICS))
    for (data, rule, which), rows in scores.items():
        print(f"{data:<8}{rule:<11}{which:<11}" + "".join(
            f"{mean_se([r[m] for r in rows]):<18}" for m in METRICS))


if __name__ == "__main__":
    main()
