"""Comparisons over seeds, headless: one arena per seed, a mean +- s.e. summary.

`python -m core compare ...` calls run_compare(); the page uses summarize() and
final_values() on live arenas too. A seed's per-step values are noisy, so an arm's
"final" value is the mean over its last FINAL_WINDOW steps; quality columns (q_*),
logged every few hundred steps, use their last value.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.base.files import csv_bytes, folder_name, write_atomic
from core.data.datasets import load_dataset
from core.engine.arena import ArmSpec
from core.engine.config import TrainConfig
from core.jobs.arena_task import FINAL_WINDOW, SUMMARY_METRICS, Task
from core.jobs.backends import run_tasks
from core.quality.evaluate import evaluator_for

DEFAULT_IMAGE_WARMUP = 3000   # images compare as "bce continued" vs "fine-tune" by default


def summarize(finals: dict[str, list[dict]]) -> pd.DataFrame:
    """Long table: arm, metric, mean, se (standard error across seeds), n."""
    rows = []
    for arm, per_seed in finals.items():
        names = [m for m in SUMMARY_METRICS if any(m in f for f in per_seed)]
        names += sorted({k for f in per_seed for k in f if k.startswith("q_")})
        for name in names:
            values = np.array([f[name] for f in per_seed if name in f], dtype=float)
            values = values[np.isfinite(values)]
            n = len(values)
            mean = float(values.mean()) if n else math.nan
            se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            rows.append({"arm": arm, "metric": name, "mean": mean, "se": se, "n": n})
    return pd.DataFrame(rows, columns=["arm", "metric", "mean", "se", "n"])


def wide_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per arm, one 'mean +- se' cell per metric (what people read)."""
    def cell(row) -> str:
        if math.isnan(row["se"]):
            return f"{row['mean']:.4g}"
        return f"{row['mean']:.4g} ± {row['se']:.2g}"
    cells = summary.assign(cell=summary.apply(cell, axis=1))
    wide = cells.pivot(index="arm", columns="metric", values="cell")
    order = [m for m in summary["metric"].drop_duplicates()]
    arms = list(summary["arm"].drop_duplicates())
    return wide.loc[arms, order]


def markdown(wide: pd.DataFrame) -> str:
    head = ["arm", *wide.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, row in wide.iterrows():
        lines.append("| " + " | ".join([str(arm), *map(str, row.values)]) + " |")
    return "\n".join(lines) + "\n"


def check_and_prepare(cfgs: list[TrainConfig], arms: list, warmup_steps: int = 0,
                      backend: str = "local", address: str | None = None) -> None:
    """In the driver, before any task starts: every arm's config is valid (a bad one is
    the user's error, not a task failure), the data loads, and where the tasks share
    this file system, the image classifier is trained once (workers read its cache)."""

    specs = [a if isinstance(a, ArmSpec) else ArmSpec.parse(a) for a in arms]
    for cfg in cfgs:
        for spec in specs:
            spec.config(cfg)
    for cfg in {(c.data, c.data_root, c.image_size): c for c in cfgs}.values():
        data = load_dataset(cfg)
        due = any(c.eval_every and c.eval_every <= c.steps + warmup_steps for c in cfgs
                  if (c.data, c.data_root, c.image_size) == (cfg.data, cfg.data_root,
                                                              cfg.image_size))
        if due and data.is_image and not (backend == "ray" and address):
            evaluator = evaluator_for(data)
            if not evaluator.unavailable:
                evaluator.prepare(log=lambda msg: print(msg, file=sys.stderr, flush=True))


def write_result(folder: Path, result) -> None:
    """A task's run folder: <arm>/metrics.csv, samples.png, hashes.json, arena.safetensors."""

    folder = Path(folder)
    for name, csv in result.logs.items():   # arm names hold option values: made safe
        (folder / folder_name(name)).mkdir(parents=True, exist_ok=True)
        (folder / folder_name(name) / "metrics.csv").write_bytes(csv)
    (folder / "samples.png").write_bytes(result.png)
    (folder / "hashes.json").write_text(json.dumps(result.hashes, indent=2))
    for name, data in result.checkpoints.items():
        write_atomic(data, folder / folder_name(name))
    write_atomic(result.checkpoint, folder / "arena.safetensors")


def missing_line(failures: list, what: str = "seed") -> str:
    """'Missing seeds: 3 (RuntimeError: ...), 5 (...)' for a summary."""
    if not failures:
        return ""
    items = ", ".join(f"{f.task.key if what == 'task' else f.task.seed} ({f.error})"
                      for f in failures)
    return f"\n**Missing {what}s** ({len(failures)}, failed twice): {items}\n"


def run_compare(cfg: TrainConfig, arms: list, seeds: list[int], out: Path,
                warmup_steps: int = 0, backend: str = "local", workers: int | None = None,
                address: str | None = None, hook=None) -> pd.DataFrame:
    """One arena per seed, run as independent tasks (core/jobs/backends.py: serial, a local
    process pool, or Ray); per-arm CSVs, pictures and checkpoints; returns the summary
    (wide table; .attrs["failures"] lists the seeds that failed twice)."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [a if isinstance(a, str) else (a.name or a.rule) for a in arms]
    (out / "config.json").write_text(json.dumps(
        {"config": cfg.to_dict(), "arms": labels, "seeds": seeds,
         "warmup_steps": warmup_steps, "final_window": FINAL_WINDOW}, indent=2))
    cfgs = [cfg.replace(seed=seed) for seed in seeds]
    check_and_prepare(cfgs, arms, warmup_steps, backend, address)
    print(f"{len(seeds)} seed(s): {' vs '.join(labels)} on {cfg.data}"
          + (f" after a {warmup_steps}-step bce warm-up" if warmup_steps else ""),
          file=sys.stderr, flush=True)
    tasks = [Task(key=f"seed_{seed}", seed=seed, config=c.to_dict(), arms=tuple(arms),
                  warmup_steps=warmup_steps, run_id=f"{out.name}-seed{seed}", hook=hook)
             for seed, c in zip(seeds, cfgs)]
    by_seed: dict[int, dict] = {}

    def collect(result) -> None:
        write_result(out / result.task.key, result)
        by_seed[result.task.seed] = result.finals
        h = result.hashes
        print(f"  seed {result.task.seed}: initial weights {h['init']}, batch stream "
              f"{h['batches']}", file=sys.stderr, flush=True)

    failures = run_tasks(tasks, collect, backend=backend, workers=workers, address=address)
    finals: dict[str, list[dict]] = {}
    for seed in seeds:            # seed order: the same summary whatever finished first
        for name, values in by_seed.get(seed, {}).items():
            finals.setdefault(name, []).append(values)
    summary = summarize(finals)
    (out / "summary.csv").write_bytes(csv_bytes(summary))
    wide = wide_table(summary) if len(summary) else pd.DataFrame()
    done = len(seeds) - len(failures)
    title = (f"{cfg.data}: {' vs '.join(finals) or ' vs '.join(labels)}, {done} seed(s)"
             + (f" of {len(seeds)}" if failures else "") + ", "
             f"{cfg.steps} compared steps" + (f" after {warmup_steps} bce warm-up steps"
                                               if warmup_steps else "")
             + f"; mean ± s.e. across seeds of each arm's last-{FINAL_WINDOW}-step mean\n\n")
    (out / "summary.md").write_text(title + (markdown(wide) if len(wide) else "")
                                    + missing_line(sorted(failures,
                                                          key=lambda f: f.task.seed)))
    wide.attrs["failures"] = failures
    return wide
