"""A sweep folder read back as a grid of cells (for the Compare page's sweep view).

A sweep folder is what core/jobs/sweep.py writes: config.json (the grid, arms, seeds)
and <point>/seed_<s>/<arm>/metrics.csv per finished task. Each seed's final values are
recomputed from its metrics.csv the way a task computes them, so a sweep still
running, stopped early or missing its sweep.csv reads the same way. A damaged file
leaves its seed out and says so in `problems`; a folder that is no sweep raises
SweepReadError, whose message says what to open instead.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.base.files import folder_name
from core.engine.metric_info import METRICS
from core.jobs.arena_task import SUMMARY_METRICS, frame_finals
from core.jobs.sweep import label, point_folder, points_of

HOW = "open the folder given to `python -m core sweep --out`, or run a sweep on this page"


class SweepReadError(ValueError):
    """The folder cannot be read as a sweep; the message says why and what to do."""


@dataclass
class Cell:
    index: int
    point: dict                        # swept key -> value
    label: str                         # "lr=0.001,batch_size=64"
    folder: Path
    finals: dict[int, dict[str, dict]] = field(default_factory=dict)  # seed -> arm -> values


@dataclass
class SweepGrid:
    folder: Path
    grid: list[tuple[str, list]]       # [(key, values), ...] in the sweep's order
    arms: list[str]
    seeds: list[int]                   # planned seeds per cell
    config: dict
    cells: list[Cell]
    problems: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.grid]

    @property
    def finished(self) -> int:
        return sum(len(c.finals) for c in self.cells)

    @property
    def total(self) -> int:
        return len(self.cells) * len(self.seeds)

    def table(self) -> pd.DataFrame:
        """One row per cell x arm x metric over the cell's finished seeds: mean, se,
        sd, min, max, n (the spread a reader hovers for)."""
        rows = []
        for cell in self.cells:
            for arm in self.arms:
                per_seed = [f[arm] for f in cell.finals.values() if arm in f]
                for name in sorted({k for f in per_seed for k in f}):
                    v = np.array([f[name] for f in per_seed if name in f], dtype=float)
                    v = v[np.isfinite(v)]
                    n = len(v)
                    rows.append({"cell": cell.index, "point": cell.label, **cell.point,
                                 "arm": arm, "metric": name,
                                 "mean": float(v.mean()) if n else math.nan,
                                 "se": float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
                                 "sd": float(v.std(ddof=1)) if n > 1 else math.nan,
                                 "min": float(v.min()) if n else math.nan,
                                 "max": float(v.max()) if n else math.nan, "n": n})
        columns = ["cell", "point", *self.keys, "arm", "metric", "mean", "se", "sd", "min",
                   "max", "n"]
        return pd.DataFrame(rows, columns=columns)

    def metrics(self) -> list[str]:
        """Quality metrics with a value in some cell, in the registry's order (unknown
        q_ columns after); without any, the summary metrics (g_loss, ...)."""
        present = {k for c in self.cells for f in c.finals.values() for v in f.values()
                   for k in v}
        quality = [m for m in METRICS if m.startswith("q_") and m in present]
        quality += sorted(m for m in present if m.startswith("q_") and m not in METRICS)
        return quality or [m for m in SUMMARY_METRICS if m in present]


def read_sweep(folder) -> SweepGrid:
    folder = Path(str(folder).strip()).expanduser()
    if not str(folder).strip() or not folder.exists():
        raise SweepReadError(f"{folder}: no such folder; {HOW}")
    if not folder.is_dir():
        raise SweepReadError(f"{folder} is a file, not a folder; {HOW}")
    meta = _config(folder)
    grid, arms, seeds = meta["grid"], meta["arms"], meta["seeds"]
    cells, problems = [], []
    for i, point in enumerate(points_of(grid)):
        cell = Cell(i, point, label(point), folder / point_folder(point))
        for seed in seeds:
            finals = _seed_finals(cell.folder / f"seed_{seed}", arms, folder, problems)
            if finals:
                cell.finals[seed] = finals
        cells.append(cell)
    return SweepGrid(folder, grid, arms, seeds, meta.get("config") or {}, cells, problems)


def _config(folder: Path) -> dict:
    """config.json, checked: a grid of [key, [values...]], arm names, seeds."""
    path = folder / "config.json"
    if not path.is_file():
        raise SweepReadError(f"{folder} is not a sweep: it has no config.json; {HOW}")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SweepReadError(f"{path} is damaged ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:120]}); a sweep writes it "
                             "when it starts: rerun the sweep into a new folder") from None
    if not isinstance(meta, dict) or "grid" not in meta:
        raise SweepReadError(f"{folder} is not a sweep: its config.json has no grid (a "
                             f"comparison over seeds, `python -m core compare`?); {HOW}")
    grid, arms, seeds = meta.get("grid"), meta.get("arms"), meta.get("seeds")
    ok = (isinstance(grid, list) and grid
          and all(isinstance(g, list) and len(g) == 2 and isinstance(g[0], str)
                  and isinstance(g[1], list) and g[1] for g in grid)
          and isinstance(arms, list) and arms and all(isinstance(a, str) for a in arms)
          and isinstance(seeds, list) and seeds
          and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds))
    if not ok:
        raise SweepReadError(f"{path} is damaged: it needs a grid ([[key, [values]], ...]), "
                             "arms and seeds as a sweep writes them; rerun the sweep into a "
                             "new folder")
    meta["grid"] = [(k, v) for k, v in grid]
    return meta


def _keep(column: str) -> bool:
    """The columns a final value or a seed chart reads (not every diagnostic)."""
    return column == "step" or column.startswith("q_") or column in SUMMARY_METRICS


def read_metrics(path: Path) -> pd.DataFrame:
    """One arm's metrics.csv; ValueError saying what is wrong with it."""
    try:
        frame = pd.read_csv(path, usecols=_keep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a metrics table ({' '.join(str(exc).split())[:100]})") from None
    if "step" not in frame:
        raise ValueError("not a metrics table (no step column)")
    if frame.empty:
        raise ValueError("no rows")
    bad = [c for c in frame if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ValueError(f"non-numeric values in {', '.join(bad[:3])}")
    return frame


def _seed_finals(seed_dir: Path, arms: list[str], root: Path, problems: list) -> dict:
    """arm -> final values of one finished seed ({} if it has not finished; a damaged
    file is noted in problems and the seed left out)."""
    if not seed_dir.is_dir():
        return {}
    out = {}
    for arm in arms:
        path = seed_dir / folder_name(arm) / "metrics.csv"
        if not path.is_file():
            if (seed_dir / "arena.safetensors").exists():   # written last: it finished
                problems.append(f"{path.relative_to(root)} is missing; delete "
                                f"{seed_dir.relative_to(root)} to leave that seed out, or "
                                "rerun the sweep")
            return {}
        try:
            out[arm] = frame_finals(read_metrics(path))
        except (ValueError, OSError) as exc:
            problems.append(f"{path.relative_to(root)} is damaged ({exc}); that seed is "
                            f"left out: delete {seed_dir.relative_to(root)}, or rerun the "
                            "sweep")
            return {}
    return out


def cell_frames(grid: SweepGrid, cell: Cell) -> dict[int, dict[str, pd.DataFrame]]:
    """seed -> arm -> metric log of a cell's finished seeds (read when it is opened)."""
    out = {}
    for seed in cell.finals:
        try:
            out[seed] = {arm: read_metrics(cell.folder / f"seed_{seed}" / folder_name(arm)
                                           / "metrics.csv") for arm in grid.arms}
        except (ValueError, OSError):   # changed since the grid was read: left out
            continue
    return out


def signature(folder) -> tuple:
    """What changes when a task finishes (a cache key): each metrics.csv's mtime."""
    folder = Path(folder)
    files = sorted(folder.glob("*/seed_*/*/metrics.csv"))
    cfg = folder / "config.json"
    return (cfg.stat().st_mtime_ns if cfg.exists() else 0,
            tuple((str(p), p.stat().st_mtime_ns) for p in files))
