"""How much periodic quality evaluation slows training (DESIGN.md section 6).

For each interval E, one run of `--steps` steps with eval_every = E, timing the
training steps and the evaluations separately in the same run:
    ratio = steps/s with evaluation / steps/s without = t_steps / (t_steps + t_eval).
Timing both inside one run keeps the load from other processes (this is a shared
2-core machine) out of the ratio; an A/B comparison of separate runs (--ab) is
printed too but swings with that load. The classifier is built before timing (its
one-off cost is reported by tests/test_evaluate.py and the CLI).

    python bench/eval_cost.py --data mnist5k --every 500 1000 --steps 2000

Measured on the shared 2-core CPU (n = 2,500 samples per evaluation; the load from
other processes swung the step rate between 10 and 1,450 steps/s, so only the
per-evaluation times and in-run ratios are meaningful):
    ring8   about 2-20 ms per evaluation: ratio 0.997 at eval_every 1000 (0.99 at 500)
    mnist5k about 0.3 s per evaluation (one thread): at the quiet-machine rate of
            ~610 steps/s that is a ratio of ~0.84 at 1000 (~0.72 at 500); under load
            0.96 at 1000. Default: eval_every = 1000 (TrainConfig).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import preset  # noqa: E402
from core.evaluate import evaluator_for  # noqa: E402
from core.trainer import Trainer  # noqa: E402


def run(cfg, steps: int) -> tuple[float, float, int]:
    """Seconds in training steps, seconds in evaluations, number of evaluations."""
    trainer = Trainer(cfg)
    t_steps = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        trainer.step()
        t_steps += time.perf_counter() - start
        for hook in trainer.on_step:
            hook(trainer)
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
