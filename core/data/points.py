"""A user's own 2-D points: a CSV of x,y rows, checked and scaled for the 2-D networks.

Checked here, before any training: a drawn or uploaded file is the user's, so every
problem (not text, a word where a number belongs, NaN or inf, too few or too many rows,
a third column) is one line naming the row and the fix, never a traceback.

Scaled: centred on their mean and divided by one common scale, the larger of the two
axes' standard deviations. One scale for both axes keeps a drawn shape's proportions
(a circle stays a circle); unit spread is the range the 2-D networks and pictures are
sized for (ring8 has radius 1, grid25 spans +-4). The points as given are what a
checkpoint keeps (core/io/saved_points.py); scaling them again gives the same tensor.

Pure numpy: core/data/datasets.py builds the DataSet and registers "points".
"""
from __future__ import annotations

import hashlib
import math
import re

import numpy as np

from core.base.files import read_bounded

MIN_POINTS = 10                # fewer: nothing a GAN (or a k-NN metric) can learn from
MAX_POINTS = 100_000           # rows; a drawing has hundreds
MAX_CSV_BYTES = 16 * 2**20     # 100,000 rows of two long numbers is about 5 MB
MAX_ABS = 1e12                 # a coordinate's size: beyond, the spread drowns in rounding
SHUFFLE_SEED = 0               # rows are shuffled once, so x[:n] is a fair subset
DELIMITERS = (",", ";", "\t")  # else whitespace


class PointsError(ValueError):
    """The points cannot be used; the message names the problem and the fix."""


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _not_a_number(cell: str, where: str) -> PointsError:
    if not cell:
        return PointsError(f"{where} is empty; every row needs two numbers, x and y")
    hint = (" (use a point as the decimal mark, or save with ';' between columns)"
            if re.fullmatch(r"[-+]?\d+,\d+", cell) else "")
    return PointsError(f"{where} is {cell[:40]!r}, not a number{hint}; every cell "
                       "must be a number (one header row such as x,y is allowed first)")


def _cells(line: str, delimiter: str | None) -> list[str]:
    cells = [c.strip().strip('"').strip("'").strip() for c in
             (line.split(delimiter) if delimiter else line.split())]
    while cells and not cells[-1]:   # "1,2," : a trailing separator is not a column
        cells.pop()
    return cells


def too_big(size: int, name: str) -> str:
    return (f"{name} is {size / 2**20:.1f} MB; at most {MAX_CSV_BYTES // 2**20} MB "
            f"({MAX_POINTS:,} x,y rows fit in far less): keep only the x,y columns, or a "
            "random subset of rows")


def parse_csv(raw: bytes, name: str = "the CSV") -> np.ndarray:
    """x,y rows of a CSV's bytes as a float64 (N, 2) array, or PointsError. Blank lines
    and lines starting with # are skipped; the first row may be a header (no numbers
    in it); commas, semicolons, tabs or spaces may separate the columns."""
    if len(raw) > MAX_CSV_BYTES:
        raise PointsError(too_big(len(raw), name))
    if b"\0" in raw[:65536]:
        raise PointsError(f"{name} is not a text file (it holds binary bytes); save the "
                          "points as a CSV with two columns, x and y")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PointsError(f"{name} is not UTF-8 text; save it as a UTF-8 CSV with two "
                          "columns, x and y") from None
    rows: list[tuple[float, float]] = []
    delimiter, header_seen = None, False
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if delimiter is None and not rows and not header_seen:
            delimiter = next((d for d in DELIMITERS if d in line), None)
        cells = _cells(line, delimiter)
        values = [_number(c) for c in cells]
        if not rows and not header_seen and all(v is None for v in values):
            header_seen = True   # a header: names, no numbers
            continue
        where = f"{name}, line {lineno}"
        if len(cells) != 2:
            shown = ", ".join(c[:20] for c in cells[:5]) + (", ..." if len(cells) > 5 else "")
            raise PointsError(
                f"{where} has {len(cells)} column{'s' if len(cells) != 1 else ''} ({shown}); "
                "a points CSV has exactly two columns, x and y" + (
                    ": delete the other columns" if len(cells) > 2 else
                    ", separated by a comma"))
        for col, (cell, value) in enumerate(zip(cells, values), 1):
            if value is None:
                raise _not_a_number(cell, f"{where}, column {col}")
            if not math.isfinite(value):
                raise PointsError(f"{where}, column {col} is {cell!r}, not a finite number; "
                                  "remove the rows with NaN or infinite values")
            if abs(value) > MAX_ABS:
                raise PointsError(f"{where}, column {col} is {cell!r}; coordinates must be "
                                  f"at most {MAX_ABS:.0e} in size: rescale the data")
        if len(rows) == MAX_POINTS:
            raise PointsError(f"{name} has more than {MAX_POINTS:,} points; use at most "
                              f"{MAX_POINTS:,} (a random subset keeps the shape)")
        rows.append((values[0], values[1]))
    points = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    problem = points_problem(points)
    if problem:
        raise PointsError(f"{name} {problem}")
    return points


def points_problem(points: np.ndarray) -> str | None:
    """What makes an (N, 2) array unusable as a data set, or None (for arrays that did
    not come through parse_csv: a drawing, a checkpoint's saved points)."""
    if points.ndim != 2 or points.shape[1] != 2:
        return f"holds an array of shape {points.shape}, not (N, 2) x,y points"
    n = len(points)
    if n < MIN_POINTS:
        return (f"has {n} point{'s' if n != 1 else ''}; at least {MIN_POINTS} are needed "
                "(draw or add more)")
    if n > MAX_POINTS:
        return f"has {n:,} points; use at most {MAX_POINTS:,} (a random subset keeps the shape)"
    if not np.isfinite(points).all() or np.abs(points).max() > MAX_ABS:
        return f"holds NaN, infinite or huge (over {MAX_ABS:.0e}) values"
    centre, scale = _centre_scale(points)
    if scale <= 1e-9 * max(1.0, float(np.abs(centre).max())):
        return ("has all its points in one place (no spread): there is no shape to "
                "learn; give points that differ")
    return None


def _centre_scale(points: np.ndarray) -> tuple[np.ndarray, float]:
    centre = points.mean(axis=0)
    return centre, float(points.std(axis=0).max())


def scaled(points: np.ndarray) -> tuple[np.ndarray, str]:
    """The points centred, divided by the larger axis's std and shuffled with a fixed
    seed, as float32; and a sentence saying what was done (the UI and CLI show it)."""
    problem = points_problem(points)
    if problem:
        raise PointsError(f"the points {problem}")
    centre, scale = _centre_scale(points)
    out = ((points - centre) / scale).astype(np.float32)
    out = out[np.random.default_rng(SHUFFLE_SEED).permutation(len(out))]
    note = (f"{len(points):,} points, centred on their mean ({centre[0]:.4g}, "
            f"{centre[1]:.4g}) and divided by {scale:.4g} (the larger axis's standard "
            "deviation), so the shape keeps its proportions; pictures and samples are in "
            "these scaled units")
    return out, note


def fingerprint(points: np.ndarray) -> str:
    """A short hash of the points as given (float64, row order kept)."""
    data = np.ascontiguousarray(points, dtype="<f8").tobytes()
    return hashlib.sha256(data).hexdigest()[:12]


def read_csv(path: str) -> np.ndarray:
    """The points of a CSV file on disk (see parse_csv), or PointsError."""
    if not path:
        raise PointsError("no CSV given: draw points, upload a CSV, or give a file's path")
    try:
        raw = read_bounded(path, MAX_CSV_BYTES, "points CSV")
    except FileNotFoundError:
        raise PointsError(f"{path!r}: no such file; give the path of a CSV of x,y rows") from None
    except IsADirectoryError:
        raise PointsError(f"{path!r} is a folder; give a CSV file of x,y rows") from None
    except OSError as exc:
        raise PointsError(f"{path!r} cannot be read ({exc.strerror or exc})") from None
    return parse_csv(raw, repr(path))


def csv_bytes(points: np.ndarray) -> bytes:
    """The points as a CSV with an x,y header; repr keeps every float64 exactly."""
    lines = ["x,y"] + [f"{x!r},{y!r}" for x, y in np.asarray(points, dtype=np.float64).tolist()]
    return ("\n".join(lines) + "\n").encode()
