"""How much periodic quality evaluation slows training.

For each interval E, one run of `--steps` steps with eval_every = E, timing the
training steps and the evaluations separately in the same run:
    ratio = steps/s with evaluation / steps/s without = t_steps / (t_steps + t_eval).
Timing both inside one run keeps the load from other processes (this is a shared
2-core machine) out of the ratio; an A/B comparison of separate runs (--ab) is
printed too but swings with that load. The classifier is built before timing (its
one-off cost is reported by tests/test_evaluate.py and the CLI).

    python bench/eval_cost.py --data mnist5k --every 500 1000 --steps 2000
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine.config import preset  # noqa: E402
from core.engine.trainer import Trainer  # noqa: E402
from core.quality.evaluate import evaluator_for  # noqa: E402


def run(cfg, steps: int) -> tuple[float, float, int]:
    """Seconds in training steps, seconds in evaluations, number of evaluations."""
    trainer = Trainer(cfg)
    t_steps = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        trainer.step()
        t_steps += time.perf_counter() - start
        trainer.after_step()   # quality metrics every eval_every steps
    n_evals = steps // cfg.eval_every if cfg.eval_every else 0
    return t_steps, trainer.quality.seconds, n_evals


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--preset", default="recommended")
    ap.add_argument("--every", type=int, nargs="+", default=[500, 1000])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--ab", action="store_true", help="also time a run without evaluation")
    args = ap.parse_args()
    base = preset(args.preset, data=args.data, device="cpu")
    evaluator_for(Trainer(base).data).prepare(print)   # build / load the classifier first
    print(f"{args.data} ({args.preset}), {args.steps} steps per run")
    if args.ab:
        t_plain, _, _ = run(base, args.steps)
        print(f"  no evaluation: {args.steps / t_plain:.0f} steps/s")
    for every in args.every:
        t_steps, t_eval, n = run(base.replace(eval_every=every), args.steps)
        wall = t_steps + t_eval
        print(f"  eval_every {every}: {n} evaluations, {t_eval / max(n, 1):.3f} s each; "
              f"training {args.steps / t_steps:.0f} steps/s alone, {args.steps / wall:.0f} "
              f"with evaluation: ratio {t_steps / wall:.3f}")


if __name__ == "__main__":
    main()
