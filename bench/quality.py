"""Quality on the 2-D benchmarks: an ablation of the options every rule shares.

For each data set, ablation row and seed, one arena (bce and reinforce in lockstep
from the same start, on the same batches) trains `--steps` steps at the data set's
"recommended" preset plus the row's changes; then each arm's raw G and its EMA are
scored on the same 2,500 fixed z with the published metrics (high quality = within
3 std of a mode, modes covered, reverse KL; core/quality/metrics.py). Tasks run on a
local process pool, one per (data set, row, seed). Prints mean ± s.e. over seeds,
then the published rows to compare with.

    python bench/quality.py [--steps 10000] [--seeds 10] [--data ring8,grid25]
                            [--rows base,linear,r1,linear+r1] [--workers 2]
                            [--log results.jsonl]

With --log each finished task is appended to that file as one JSON line, and a run
with the same --log skips the tasks it already holds: a long table can be stopped and
resumed, and the table is printed from every line of the file that matches the run.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("q_modes", "q_high_quality", "q_reverse_kl")
# Each row: the config changes over the recommended preset (every arm alike). "base" is
# the preset without R1 (which the 2-D presets now include, from this table).
ROWS = {
    "base": {"r1": 0.0},
    "linear": {"r1": 0.0, "lr_schedule": "linear"},
    "cosine": {"r1": 0.0, "lr_schedule": "cosine"},
    "r1": {"r1": 0.1},
    "r1=1": {"r1": 1.0},
    "linear+r1": {"lr_schedule": "linear", "r1": 0.1},
    "pac2": {"pac": 2},                 # PacGAN packing over the preset (R1 0.1 included)
    "pac4": {"pac": 4},
    "pac2-r1=0": {"pac": 2, "r1": 0.0},
}
PUBLISHED = [   # (data, method, modes, high quality %, reverse KL): PacGAN and VEEGAN tables
    ("ring8", "GAN (PacGAN table)", 6.3, 98.2, None),
    ("ring8", "PacGAN2", 7.9, 95.6, 0.07),
    ("ring8", "VEEGAN", 8.0, 52.9, None),
    ("grid25", "PacGAN4", 24.8, 93.6, 0.04),
    ("grid25", "ALI", 24.1, 95.7, 0.14),
]


def one_task(data: str, row: str, seed: int, steps: int) -> tuple:
    """Train one arena and score every arm's raw and EMA weights."""
    import torch

    from core.engine.arena import Arena
    from core.engine.config import preset
    from core.quality.evaluate import evaluator_for

    torch.set_num_threads(1)
    cfg = preset("recommended", data=data, seed=seed, steps=steps, eval_every=0,
                 sample_every=10**9, device="cpu", **ROWS[row])
    arena = Arena(cfg, ["bce", "reinforce"])
    start = time.perf_counter()
    arena.run_here()
    evaluate = evaluator_for(arena.data)
    scores = {(name, which): evaluate(G) for name, arm in arena.arms.items()
              for which, G in (("raw", arm.nets.G), ("ema", arm.G_ema))}
    return data, row, seed, scores, time.perf_counter() - start


def mean_se(values: list[float], digits: int) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {se:.{digits}f}"


def table(results: dict, seeds: int, steps: int) -> str:
    lines = [f"{steps} steps, {seeds} seeds per row, mean ± s.e. (high quality in %)",
             f"{'data':<8}{'row':<11}{'rule':<10}{'weights':<8}{'modes':<16}"
             f"{'high quality':<16}{'reverse KL':<16}"]
    for (data, row, rule, which), rows in sorted(results.items(), key=lambda kv: (
            kv[0][0], list(ROWS).index(kv[0][1]), kv[0][2], kv[0][3])):
        cells = [mean_se([r["q_modes"] for r in rows], 2),
                 mean_se([r["q_high_quality"] for r in rows], 1),
                 mean_se([r["q_reverse_kl"] for r in rows], 3)]
        lines.append(f"{data:<8}{row:<11}{rule:<10}{which:<8}" +
                     "".join(f"{c:<16}" for c in cells))
    lines.append("published (one run or mean, as reported):")
    for data, method, modes, hq, kl in PUBLISHED:
        lines.append(f"{data:<8}{method:<29}{modes:<16}{hq:<16}{'' if kl is None else kl}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--data", default="ring8,grid25")
    parser.add_argument("--rows", default="base,linear,r1,linear+r1",
                        help=f"ablation rows, from: {', '.join(ROWS)}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log", type=Path, default=None,
                        help="a JSON-lines file: each finished task is appended; tasks "
                             "already in it are skipped")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    wanted = [(d, r, s) for s in range(args.seeds) for d in args.data.split(",") for r in rows]
    found = {}   # (data, row, seed) -> {(rule, weights): scores}, from --log
    if args.log and args.log.exists():
        for line in args.log.read_text().splitlines():
            item = json.loads(line)
            if item["steps"] == args.steps:
                found[(item["data"], item["row"], item["seed"])] = item["scores"]
    tasks = [t for t in wanted if t not in found]
    print(f"{len(wanted) - len(tasks)} of {len(wanted)} tasks already in the log",
          file=sys.stderr, flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(one_task, d, r, s, args.steps) for d, r, s in tasks]
        for done, future in enumerate(as_completed(futures), 1):
            data, row, seed, scores, seconds = future.result()
            found[(data, row, seed)] = {f"{rule}/{which}": v for (rule, which), v in scores.items()}
            if args.log:
                with args.log.open("a") as log:
                    log.write(json.dumps({"data": data, "row": row, "seed": seed,
                                          "steps": args.steps,
                                          "scores": found[(data, row, seed)]}) + "\n")
            print(f"[{done}/{len(tasks)}] {data} {row} seed {seed}: {seconds:.0f} s",
                  file=sys.stderr, flush=True)
    results: dict[tuple, list[dict]] = {}
    for data, row, seed in wanted:
        for key, values in found[(data, row, seed)].items():
            rule, which = key.split("/")
            results.setdefault((data, row, rule, which), []).append(values)
    print(table(results, args.seeds, args.steps))


if __name__ == "__main__":
    main()
