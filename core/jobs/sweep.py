"""Sweeps: the arms of one arena over a grid of settings and several seeds.

`python -m core sweep --grid lr=1e-4,3e-4,1e-3 --seeds 5 ...` runs one task per
(grid point, seed) on a runner backend (core/jobs/backends.py) and writes

    sweep.csv            one row per grid point x arm x metric: mean, se, n (across seeds)
    sweep.md             every (grid point, arm), the best first by the ranking metric
    heatmap_<q>.png      per quality metric: rows = arms, columns = grid points
    <point>/seed_<s>/    each task's run folder (as `compare` writes them)

The ranking metric is the first quality metric present of q_modes (2-D data) and
q_classes (images), higher is better; without quality metrics, g_loss, lower is better.
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.base.files import csv_bytes, folder_name
from core.engine.config import TrainConfig
from core.engine.metric_info import METRICS
from core.jobs.arena_task import Task
from core.jobs.backends import run_tasks
from core.jobs.multi_seed import (
    FINAL_WINDOW,
    check_and_prepare,
    missing_line,
    summarize,
    write_result,
)

RANKING = (("q_modes", "higher"), ("q_classes", "higher"))
FALLBACK = ("g_loss", "lower")
SHORTHANDS = {"lr": ("g_opt.lr", "d_opt.lr")}
NOT_IN_GRID = ("seed",)       # seeds come from --seed and --seeds
MAX_POINTS = 1000


@dataclass
class SweepResult:
    points: list[dict]
    table: pd.DataFrame             # sweep.csv
    ranking: pd.DataFrame           # sweep.md's rows, best first
    metric: str                     # the ranking metric
    heatmaps: list[Path] = field(default_factory=list)
    failures: list = field(default_factory=list)


# -- the grid ------------------------------------------------------------------------------
def parse_grid(texts: list[str], cfg: TrainConfig | None = None) -> list[tuple[str, list]]:
    """['lr=1e-4,3e-4', 'batch_size=64,128; g_ema=0,0.995'] -> [(key, values), ...].
    With cfg, every value is tried on it, so a bad key or value fails here."""
    grid: list[tuple[str, list]] = []
    for text in texts:
        for item in text.split(";"):
            if not item.strip():
                continue
            key, sep, values = item.partition("=")
            key = key.strip()
            if not sep or not key or not values.strip():
                raise ValueError(f"{item.strip()!r} must look like KEY=V1,V2,... "
                                 "(e.g. lr=1e-4,3e-4,1e-3)")
            if key in NOT_IN_GRID:
                raise ValueError(f"{key} cannot be swept; use --seed and --seeds")
            if key in {k for k, _ in grid}:
                raise ValueError(f"{key} is given twice")
            parsed = [_value(v.strip()) for v in values.split(",") if v.strip()]
            if len(set(map(repr, parsed))) != len(parsed):
                raise ValueError(f"{key}: a value is repeated")
            if key == "steps" and 0 in parsed:   # 0 = until stopped: the sweep never ends
                raise ValueError("steps=0 would train until stopped; sweep positive step "
                                 "counts")
            grid.append((key, parsed))
    if not grid:
        raise ValueError("give at least one KEY=V1,V2,... (e.g. --grid lr=1e-4,3e-4,1e-3)")
    count = math.prod(len(values) for _, values in grid)
    if count > MAX_POINTS:
        raise ValueError(f"{count} grid points; use at most {MAX_POINTS}")
    if cfg is not None:
        for key, values in grid:
            for value in values:
                try:
                    cfg.replace(**expand({key: value}))
                except Exception as exc:   # noqa: BLE001 - ConfigError, ValueError, TypeError
                    raise ValueError(f"{key}={value}: {' '.join(str(exc).split())}") from None
    return grid


def _value(text: str):
    """A grid value as JSON where it parses (numbers, true/false), else a string."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def expand(point: dict) -> dict:
    """Config changes of a grid point (lr -> g_opt.lr and d_opt.lr)."""
    out = {}
    for key, value in point.items():
        for target in SHORTHANDS.get(key, (key,)):
            out[target] = value
    return out


def points_of(grid: list[tuple[str, list]]) -> list[dict]:
    keys = [k for k, _ in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in grid))]


def label(point: dict) -> str:
    return ",".join(f"{k}={_fmt(v)}" for k, v in point.items())


def point_folder(point: dict) -> str:
    return folder_name(label(point))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if not isinstance(value, (list, dict)) else json.dumps(value)


# -- the run ---------------------------------------------------------------------------------
def run_sweep(cfg: TrainConfig, arms: list, grid: list[tuple[str, list]], seeds: list[int],
              out: Path, warmup_steps: int = 0, backend: str = "local",
              workers: int | None = None, address: str | None = None,
              hook=None, log=None, should_stop=None, on_result=None,
              on_failure=None) -> SweepResult:
    """Every (grid point, seed) task, then the tables and pictures. log, should_stop and
    on_failure go to run_tasks; on_result(result) runs after a task's folder is written
    (a page's background job counts progress and re-reads the folder with them)."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = points_of(grid)
    cfgs = {i: cfg.replace(**expand(p)) for i, p in enumerate(points)}
    labels = [a if isinstance(a, str) else (a.name or a.rule) for a in arms]
    (out / "config.json").write_text(json.dumps(
        {"config": cfg.to_dict(), "arms": labels, "grid": [[k, v] for k, v in grid],
         "seeds": seeds, "warmup_steps": warmup_steps, "final_window": FINAL_WINDOW},
        indent=2))
    check_and_prepare([c.replace(seed=s) for c in cfgs.values() for s in seeds[:1]], arms,
                      warmup_steps, backend, address)
    tasks = [Task(key=f"{point_folder(p)}/seed_{seed}", seed=seed,
                  config=cfgs[i].replace(seed=seed).to_dict(), arms=tuple(arms),
                  warmup_steps=warmup_steps, run_id=f"{out.name}-p{i}-seed{seed}",
                  point={"index": i, **p}, hook=hook)
             for i, p in enumerate(points) for seed in seeds]
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"sweep: {len(points)} grid point(s) x {len(seeds)} seed(s) = {len(tasks)} tasks: "
        f"{' vs '.join(labels)} on {cfg.data}")
    finals: dict[tuple[int, int], dict] = {}

    def collect(result) -> None:
        write_result(out / result.task.key, result)
        finals[(result.task.point["index"], result.task.seed)] = result.finals
        if on_result is not None:
            on_result(result)

    failures = run_tasks(tasks, collect, backend=backend, workers=workers, address=address,
                         log=log, on_failure=on_failure, should_stop=should_stop)
    table = sweep_table(points, seeds, finals)
    (out / "sweep.csv").write_bytes(csv_bytes(table))
    metric, better = ranking_metric(table)
    ranking = rank(table, metric, better)
    heatmaps = [heatmap(table, points, name, out / f"heatmap_{name}.png")
                for name in table["metric"].drop_duplicates() if name.startswith("q_")]
    axes = "; ".join(f"{k} in {{{', '.join(map(_fmt, v))}}}" for k, v in grid)
    title = (f"{cfg.data}: {' vs '.join(labels)} over {len(points)} grid point(s) "
             f"({axes}), "
             f"{len(seeds)} seed(s) each, {cfg.steps} steps"
             + (f" after {warmup_steps} bce warm-up steps" if warmup_steps else "")
             + "; mean ± s.e. across seeds, "
             f"ranked by {metric} ({better} is better)\n\n")
    (out / "sweep.md").write_text(title + markdown(ranking)
                                  + missing_line(failures, what="task"))
    return SweepResult(points, table, ranking, metric, heatmaps, failures)


def sweep_table(points: list[dict], seeds: list[int], finals: dict) -> pd.DataFrame:
    """One row per grid point x arm x metric: point, the grid values, arm, metric,
    mean, se, n."""
    frames = []
    for i, point in enumerate(points):
        per_arm: dict[str, list[dict]] = {}
        for seed in seeds:          # seed order: the same numbers whatever finished first
            for arm, values in finals.get((i, seed), {}).items():
                per_arm.setdefault(arm, []).append(values)
        summary = summarize(per_arm)
        if len(summary):
            frames.append(summary.assign(point=label(point),
                                         **{k: [v] * len(summary) if isinstance(v, list)
                                            else v for k, v in point.items()}))
    keys = list(points[0]) if points else []
    columns = ["point", *keys, "arm", "metric", "mean", "se", "n"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def ranking_metric(table: pd.DataFrame) -> tuple[str, str]:
    present = set(table["metric"])
    for name, better in RANKING:
        if name in present:
            return name, better
    return FALLBACK


def rank(table: pd.DataFrame, metric: str, better: str) -> pd.DataFrame:
    """One row per (grid point, arm), best first by metric; 'mean ± se' cells."""
    if table.empty:
        return pd.DataFrame(columns=["rank", "point", "arm", metric])
    cells = table.assign(cell=[_cell(m, s) for m, s in zip(table["mean"], table["se"])])
    wide = cells.pivot_table(index=["point", "arm"], columns="metric", values="cell",
                             aggfunc="first", sort=False)
    means = cells[cells["metric"] == metric].set_index(["point", "arm"])["mean"]
    n = cells[cells["metric"] == metric].set_index(["point", "arm"])["n"]
    order = [m for m in table["metric"].drop_duplicates()]
    order = [metric] + [m for m in order if m != metric]
    wide = wide.reindex(columns=order)
    wide["n"] = n.reindex(wide.index)
    key = means.reindex(wide.index)
    key = -key if better == "higher" else key
    wide = wide.assign(_key=key.fillna(math.inf).values).sort_values("_key", kind="stable")
    wide = wide.drop(columns="_key").reset_index()
    wide.insert(0, "rank", range(1, len(wide) + 1))
    return wide


def _cell(mean: float, se: float) -> str:
    if mean != mean:
        return "–"
    return f"{mean:.4g}" if se != se else f"{mean:.4g} ± {se:.2g}"


def markdown(ranking: pd.DataFrame) -> str:
    head = list(ranking.columns)
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    for _, row in ranking.iterrows():
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def heatmap(table: pd.DataFrame, points: list[dict], metric: str, path: Path) -> Path:
    """Rows = arms, columns = grid points, colour = mean, text = mean ± s.e."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = table[table["metric"] == metric]
    arms = list(rows["arm"].drop_duplicates())
    cols = [label(p) for p in points]
    mean = np.full((len(arms), len(cols)), np.nan)
    text = [["–"] * len(cols) for _ in arms]
    for _, r in rows.iterrows():
        i, j = arms.index(r["arm"]), cols.index(r["point"])
        mean[i, j] = r["mean"]
        text[i][j] = _cell(r["mean"], r["se"])
    entry = METRICS.get(metric)
    better = getattr(entry, "better", None)
    cmap = "viridis_r" if better == "lower" else "viridis"
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(cols) + 1.5),
                                    max(2.0, 0.7 * len(arms) + 1.4)), dpi=100)
    image = ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30 if len(cols) > 3 else 0,
                  ha="right" if len(cols) > 3 else "center", fontsize=8)
    ax.set_yticks(range(len(arms)), arms, fontsize=9)
    finite = mean[np.isfinite(mean)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(arms)):
        for j in range(len(cols)):
            dark = np.isfinite(mean[i, j]) and ((mean[i, j] < mid) != (cmap == "viridis_r"))
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    title = getattr(entry, "title", metric) if entry else metric
    ax.set_title(f"{title} ({metric}): mean ± s.e. across seeds"
                 + (f", {better} is better" if better else ""), fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


# -- a page's value lists ------------------------------------------------------------------
def parse_values(key: str, text: str, cfg: TrainConfig, example: str = "") -> list:
    """'1e-4, 3e-4' typed for one field -> [1e-4, 3e-4], each value tried on cfg; a
    ValueError names the field, the bad value and how to write the list."""
    how = "Write the values separated by commas" + (f", e.g. {example}" if example else "")
    if not text.strip():
        raise ValueError(f"{key}: no values. {how}.")
    if ";" in text or "=" in text:
        raise ValueError(f"{key}: {text.strip()!r} holds ';' or '='. {how}.")
    try:
        ((_, values),) = parse_grid([f"{key}={text}"], cfg)
    except ValueError as exc:
        # parse_grid says "KEY=VALUE: why" of a bad value, "KEY: why" of the list
        head, _, why = str(exc).partition(": ")
        bad = head.partition("=")[2]
        said = f"{bad!r} does not fit ({why})" if bad else why
        raise ValueError(f"{key}: {said}. {how}.") from None
    return values


def grid_of(fields: list[tuple[str, str]], cfg: TrainConfig,
            examples: dict | None = None) -> list[tuple[str, list]]:
    """[(key, typed values), ...] -> a grid for run_sweep, or a ValueError saying what
    to change (a key twice, lr beside g_opt.lr, a bad value, too many cells)."""
    grid: list[tuple[str, list]] = []
    for key, text in fields:
        clash = [k for k, _ in grid if set(expand({k: 0})) & set(expand({key: 0}))]
        if clash:
            raise ValueError(f"{key} and {clash[0]} set the same setting; sweep one of them")
        grid.append((key, parse_values(key, text, cfg, (examples or {}).get(key, ""))))
    if not grid:
        raise ValueError("choose a setting to sweep and its values")
    count = math.prod(len(v) for _, v in grid)
    if count > MAX_POINTS:
        raise ValueError(f"{count} grid cells; use at most {MAX_POINTS}")
    return grid
