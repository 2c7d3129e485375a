"""Comparisons over seeds, headless: one arena per seed, a mean +- s.e. summary.

`python -m core compare ...` calls run_compare(); the page uses summarize() and
final_values() on live arenas too. A seed's per-step values are noisy, so an arm's
"final" value is the mean over its last FINAL_WINDOW steps; quality columns (q_*),
logged every few hundred steps, use their last value.
"""
from __future__ import annotations

import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .arena import Arena
from .config import TrainConfig
from .metric_info import METRICS

FINAL_WINDOW = 100
SUMMARY_METRICS = METRICS.names(summary=True)
DEFAULT_IMAGE_WARMUP = 3000   # images compare as "bce continued" vs "fine-tune" by default


def final_values(log, window: int = FINAL_WINDOW) -> dict[str, float]:
    """An arm's final metrics: step-metric means over the last `window` steps, and the
    last value of each quality (q_*) column."""
    frame = log.to_frame()
    if frame.empty:
        return {}
    out = {}
    tail = frame.tail(window)
    for name in SUMMARY_METRICS:
        if name in tail:
            out[name] = float(tail[name].mean())
    for name in frame.columns:
        if name.startswith("q_"):
            valid = frame[name].dropna()
            if len(valid):
                out[name] = float(valid.iloc[-1])
    return out


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


# -- pictures -----------------------------------------------------------------------------
def side_by_side_png(arena: Arena) -> bytes:
    """Every arm's latest fixed-noise samples, side by side, labelled."""
    snaps = {name: arm.snapshots.latest() for name, arm in arena.arms.items()}
    if arena.data.is_image:
        return _join_grids({n: s.png for n, s in snaps.items()})
    return _scatter_panels(arena.data, snaps)


def _join_grids(pngs: dict[str, bytes]) -> bytes:
    from PIL import Image, ImageDraw
    images = {n: Image.open(io.BytesIO(b)).convert("L") for n, b in pngs.items()}
    w = max(im.width for im in images.values())
    h = max(im.height for im in images.values())
    pad, top = 10, 18
    canvas = Image.new("L", (len(images) * (w + pad) - pad, h + top), 255)
    draw = ImageDraw.Draw(canvas)
    for i, (name, im) in enumerate(images.items()):
        x = i * (w + pad)
        draw.text((x + 2, 3), name, fill=0)
        canvas.paste(im, (x, top))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _scatter_panels(data, snaps: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(snaps), figsize=(4.2 * len(snaps), 4.4), dpi=90)
    real = data.x[:2000].numpy()
    for ax, (name, snap) in zip(np.atleast_1d(axes), snaps.items()):
        ax.imshow(snap.heatmap, extent=snap.extent, origin="lower", cmap="Blues",
                  vmin=0, vmax=1, alpha=0.7)
        ax.scatter(real[:, 0], real[:, 1], s=3, c="0.45", label="real")
        ax.scatter(snap.points[:, 0], snap.points[:, 1], s=3, c="tab:red", alpha=0.6,
                   label="generated")
        ax.set_xlim(snap.extent[:2])
        ax.set_ylim(snap.extent[2:])
        ax.set_aspect("equal")
        ax.set_title(f"{name} @ step {snap.step}", fontsize=10)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# -- the headless run -----------------------------------------------------------------------
def run_arena(arena: Arena, log_every: float = 5.0, quiet: bool = False) -> None:
    """Step an arena to its budget in this thread (the same loop as the dashboard's),
    with a progress line on stderr every log_every seconds; stops early if an arm
    diverges (and says so, unless quiet: the caller reports arena.status.message)."""
    last = [time.perf_counter()]

    def progress(out: dict) -> None:
        if time.perf_counter() - last[0] > log_every:
            last[0] = time.perf_counter()
            losses = "  ".join(f"{n}: d {v['d_loss']:.3f} g {v['g_loss']:.3f}"
                               for n, v in out.items())
            print(f"  step {arena.step_count}/{arena.end_step}  {losses}", file=sys.stderr,
                  flush=True)

    arena.take_snapshot()
    arena.run_here(should_stop=lambda: arena.status.state == "diverged", on_step=progress)
    if arena.status.state == "diverged":
        if not quiet:
            print(f"\n{arena.status.message}", file=sys.stderr)
        arena.take_snapshot()


def check_and_prepare(cfgs: list[TrainConfig], arms: list, warmup_steps: int = 0,
                      backend: str = "local", address: str | None = None) -> None:
    """In the driver, before any task starts: every arm's config is valid (a bad one is
    the user's error, not a task failure), the data loads, and where the tasks share
    this file system, the image classifier is trained once (workers read its cache)."""
    from .arena import ArmSpec
    from .data import load_dataset
    from .evaluate import evaluator_for

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
    from .checkpoint import write_atomic

    folder = Path(folder)
    for name, csv in result.logs.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "metrics.csv").write_bytes(csv)
    (folder / "samples.png").write_bytes(result.png)
    (folder / "hashes.json").write_text(json.dumps(result.hashes, indent=2))
    for name, data in result.checkpoints.items():
        write_atomic(data, folder / name)
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
    """One arena per seed, run as independent tasks (core/runner.py: serial, a local
    process pool, or Ray); per-arm CSVs, pictures and checkpoints; returns the summary
    (wide table; .attrs["failures"] lists the seeds that failed twice)."""
    from .runner import Task, run_tasks

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
    summary.to_csv(out / "summary.csv", index=False)
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
