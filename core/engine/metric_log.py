"""A columnar, append-only, thread-safe metric log.

The trainer appends one row per step; readers take snapshots since a cursor or a
decimated view for charts. Columns are numpy arrays that grow by doubling, so a
100k-step run costs a few MB and no per-row Python objects. A column that appears
later (a quality metric) is back-filled with NaN.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from core.base.files import csv_bytes

MAX_EVENTS = 10_000   # markers kept per run (a file holding more is refused); oldest go first


class MetricLog:
    def __init__(self, capacity: int = 1024) -> None:
        self._lock = threading.Lock()
        self._n = 0
        self._cap = capacity
        self._steps = np.zeros(capacity, dtype=np.int64)
        self._cols: dict[str, np.ndarray] = {}
        self.events: list[tuple[int, str]] = []   # (step, text): rule switches, resumes

    def __len__(self) -> int:
        return self._n

    @property
    def columns(self) -> list[str]:
        with self._lock:
            return list(self._cols)

    def _grow(self) -> None:
        self._cap *= 2
        self._steps = np.resize(self._steps, self._cap)
        for name, col in self._cols.items():
            grown = np.full(self._cap, np.nan, dtype=np.float64)
            grown[:self._n] = col[:self._n]
            self._cols[name] = grown

    def _column(self, name: str) -> np.ndarray:
        col = self._cols.get(name)
        if col is None:
            col = np.full(self._cap, np.nan, dtype=np.float64)
            self._cols[name] = col
        return col

    def append(self, step: int, values: dict[str, float]) -> None:
        """Add one row. Columns missing from `values` get NaN in this row."""
        with self._lock:
            if self._n == self._cap:
                self._grow()
            i = self._n
            self._steps[i] = step
            for name, value in values.items():
                self._column(name)[i] = value
            for name, col in self._cols.items():
                if name not in values:
                    col[i] = np.nan
            self._n += 1

    def add_event(self, step: int, text: str) -> None:
        with self._lock:
            self.events.append((int(step), str(text)))
            del self.events[:-MAX_EVENTS]

    def set_at_step(self, step: int, values: dict[str, float]) -> None:
        """Fill values into the row of `step` (the latest row with it), e.g. quality
        metrics computed after the step was logged; appends a row if none exists."""
        with self._lock:
            rows = np.nonzero(self._steps[:self._n] == step)[0]
            if len(rows):
                for name, value in values.items():
                    self._column(name)[rows[-1]] = value
                return
        self.append(step, values)

    # -- readers ----------------------------------------------------------------------
    def since(self, cursor: int = 0) -> tuple[int, dict[str, np.ndarray]]:
        """Rows [cursor, now) as copies, and the new cursor."""
        with self._lock:
            end = self._n
            out = {"step": self._steps[cursor:end].copy()}
            for name, col in self._cols.items():
                out[name] = col[cursor:end].copy()
        return end, out

    def latest(self) -> dict[str, float]:
        """The last non-NaN value of every column (and the last step)."""
        with self._lock:
            if self._n == 0:
                return {}
            out: dict[str, float] = {"step": int(self._steps[self._n - 1])}
            for name, col in self._cols.items():
                valid = np.nonzero(~np.isnan(col[:self._n]))[0]
                if len(valid):
                    out[name] = float(col[valid[-1]])
        return out

    def value_at(self, step: int, name: str) -> float | None:
        """`name` in the row of `step` (the latest with it): None without such a row,
        NaN where that row does not log it."""
        with self._lock:
            rows = np.nonzero(self._steps[:self._n] == step)[0]
            if not len(rows):
                return None
            col = self._cols.get(name)
            return float("nan") if col is None else float(col[rows[-1]])

    def last_row(self, names) -> dict[str, float] | None:
        """The step and the values of `names` at the last row where any of them is
        logged (None if none ever was): e.g. the latest quality evaluation."""
        with self._lock:
            cols = {k: self._cols[k][:self._n] for k in names if k in self._cols}
            if not cols:
                return None
            logged = np.nonzero(~np.isnan(np.stack(list(cols.values()))).all(0))[0]
            if not len(logged):
                return None
            i = logged[-1]
            return {"step": int(self._steps[i]), **{k: float(c[i]) for k, c in cols.items()}}

    def decimated(self, names: list[str], max_points: int = 2000) -> dict[str, np.ndarray]:
        """Steps and columns thinned to at most ~max_points, float32.

        Each bucket keeps its min and its max (in step order), so spikes survive;
        random or stride sampling would hide them.
        """
        with self._lock:
            n = self._n
            steps = self._steps[:n].copy()
            cols = {k: self._cols[k][:n].copy() for k in names if k in self._cols}
        return decimate(steps, cols, max_points)

    def rows(self, names, start: int, end: int | None = None,
             max_rows: int = 1000) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Steps and `names` of rows [start, end), thinned to about max_rows by
        thin_rows (first and last row always kept). For live charts that append."""
        with self._lock:
            end = self._n if end is None else min(end, self._n)
            start = max(0, min(start, end))
            steps = self._steps[start:end].copy()
            cols = {k: (self._cols[k][start:end].copy() if k in self._cols
                        else np.full(end - start, np.nan)) for k in names}
        keep = thin_rows(np.stack(list(cols.values())) if cols else
                         np.zeros((0, len(steps))), max_rows)
        return steps[keep], {k: v[keep] for k, v in cols.items()}

    def last_logged(self, name: str, k: int = 2) -> list[float]:
        """The last k logged (non-NaN) values of a column, oldest first."""
        with self._lock:
            col = self._cols.get(name)
            if col is None:
                return []
            valid = np.flatnonzero(~np.isnan(col[:self._n]))[-k:]
            return [float(col[i]) for i in valid]

    def row_of_step(self, step: int) -> int:
        """The number of rows whose step is at most `step` (steps only grow)."""
        with self._lock:
            return int(np.searchsorted(self._steps[:self._n], step, side="right"))

    def to_frame(self) -> pd.DataFrame:
        _, data = self.since(0)
        return pd.DataFrame(data)

    def to_csv(self) -> bytes:
        return csv_bytes(self.to_frame())   # a column named "=HYPERLINK(...)" stays text

    # -- persistence (checkpoints hold plain arrays) -----------------------------------
    def state(self) -> dict:
        _, data = self.since(0)
        with self._lock:
            events = list(self.events)
        return {"columns": data, "events": events}

    @classmethod
    def from_state(cls, state: dict) -> "MetricLog":
        log = cls()
        columns = {k: np.asarray(v) for k, v in state.get("columns", {}).items()}
        steps = columns.pop("step", np.zeros(0, dtype=np.int64))
        n = len(steps)
        while log._cap < n:
            log._cap *= 2
        log._steps = np.zeros(log._cap, dtype=np.int64)
        log._steps[:n] = steps
        for name, values in columns.items():
            log._column(name)[:n] = values
        log._n = n
        log.events = [(int(s), str(t)) for s, t in state.get("events", [])]
        return log


def decimate(steps: np.ndarray, cols: dict[str, np.ndarray],
             max_points: int = 2000) -> dict[str, np.ndarray]:
    """Each column's logged (non-NaN) rows, thinned by thin_rows (each bucket's min and
    max, so spikes stay), as float32 under keys name and "step:" + name (each column
    keeps its own extremes, so their step axes differ)."""
    out: dict[str, np.ndarray] = {}
    for name, values in cols.items():
        valid = ~np.isnan(values)
        s, v = steps[valid], values[valid]
        keep = thin_rows(v[None, :], max_points)
        out["step:" + name] = s[keep].astype(np.float32)
        out[name] = v[keep].astype(np.float32)
    out["n"] = np.array(len(steps))
    return out


def thin_rows(cols: np.ndarray, max_rows: int) -> np.ndarray:
    """Indices of the rows to keep of `cols` (columns x rows, NaN = not logged): all of
    them up to max_rows; else the first and the last row and, per bucket of rows, each
    column's min and max row, so every spike stays and rows where nothing is logged go.
    """
    n = cols.shape[1]
    if n <= max_rows:
        return np.arange(n)
    inner = cols[:, 1:n - 1]
    buckets = max(1, (max_rows - 2) // (2 * max(1, len(cols))))
    starts = (np.arange(buckets) * inner.shape[1]) // buckets
    sizes = np.diff(np.append(starts, inner.shape[1]))
    keep = [np.array([0, n - 1])]
    for col in inner:
        nan = np.isnan(col)
        for fill, op in ((np.inf, np.minimum), (-np.inf, np.maximum)):
            values = np.where(nan, fill, col)
            reduced = op.reduceat(values, starts)
            hits = np.flatnonzero(values == np.repeat(reduced, sizes))
            first = hits[np.searchsorted(hits, starts)]   # each bucket's first hit
            keep.append(1 + first[np.isfinite(reduced)])
    return np.unique(np.concatenate(keep))
