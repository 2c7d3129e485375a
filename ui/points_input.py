"""The Train form's picker for the user's own 2-D points: draw, upload a CSV, or a path.

Drawn and uploaded points are checked (core/data/points.py) and saved as a plain x,y
CSV under the checkpoint folder, named after their fingerprint (points/drawn-<hash>.csv,
points/upload-<hash>.csv); that file is the run's data_root. The name follows the
content, so a changed drawing is a new file, never an edit of one that a run (or the
data cache) has already read. Checkpoints keep the points themselves as well.
"""
from __future__ import annotations

import os

import numpy as np
import streamlit as st

from core.base.files import write_atomic
from core.data import points as user_points
from ui.point_canvas import point_canvas
from ui.text import code, plain

SOURCES = {"draw": "Draw", "upload": "Upload a CSV", "path": "CSV on the server"}
FORMAT_HELP = ("Two columns of numbers, x and y, one point per row (comma, semicolon, "
               "tab or space between them); a header row such as x,y is allowed, blank "
               f"lines and # comments are skipped. {user_points.MIN_POINTS} to "
               f"{user_points.MAX_POINTS:,} rows, at most {user_points.MAX_CSV_BYTES // 2**20} MB.")


def picker(k: str) -> tuple[str, str | None]:
    """Draw the inputs; return (data_root, None) or ("", what to fix)."""
    source = st.radio("Points from", list(SOURCES), format_func=SOURCES.get,
                      key=k + "points_source", horizontal=True)
    if source == "draw":
        st.caption("Click or drag on the square to add points (a few around each spot); "
                   "Undo removes the last stroke.")
        drawn = point_canvas(k + "points_canvas")
        if not drawn:
            return "", (f"draw at least {user_points.MIN_POINTS} points on the canvas "
                        "(click or drag), or upload a CSV")
        return _saved(np.asarray(drawn, dtype=np.float64), "drawn")
    if source == "upload":
        up = st.file_uploader("CSV of x,y points", type=["csv", "txt", "tsv"],
                              key=k + "points_file", help=FORMAT_HELP)
        if up is None:
            return "", "upload a CSV of x,y rows, or draw points"
        return _uploaded(up)
    path = st.text_input("CSV path", key=k + "points_path", placeholder="path/to/points.csv",
                         help="A CSV file on the server's disk. " + FORMAT_HELP)
    if not path:
        return "", "give the path of a CSV of x,y rows on the server"
    return _on_disk(path)


def _uploaded(up) -> tuple[str, str | None]:
    """Parsed once per uploaded file (reruns reuse the answer)."""
    done = st.session_state.setdefault("points_uploads", {})
    if up.file_id not in done:
        done.clear()   # only the current upload is worth keeping
        if up.size > user_points.MAX_CSV_BYTES:   # refused before its bytes are copied
            done[up.file_id] = ("", user_points.too_big(up.size, repr(up.name)))
        else:
            try:
                raw = user_points.parse_csv(up.getvalue(), repr(up.name))
            except user_points.PointsError as exc:
                done[up.file_id] = ("", str(exc))
            else:
                done[up.file_id] = (raw,)
    answer = done[up.file_id]
    return _saved(answer[0], "upload") if len(answer) == 1 else answer


@st.cache_data(show_spinner=False, max_entries=16)
def _read(path: str, stamp: tuple) -> tuple:
    """(points,) or (None, problem) of a CSV; the file's size and mtime key the cache."""
    try:
        return (user_points.read_csv(path),)
    except user_points.PointsError as exc:
        return (None, str(exc))


def _on_disk(path: str) -> tuple[str, str | None]:
    try:
        info = os.stat(path)
        stamp = (info.st_size, info.st_mtime_ns)
    except OSError:
        stamp = None
    answer = _read(os.path.abspath(path), stamp)
    if len(answer) == 2:
        return "", answer[1]
    _describe(answer[0], f"Reads {code(path)}")
    return path, None


def _saved(raw: np.ndarray, kind: str) -> tuple[str, str | None]:
    """Check the points and save them as points/<kind>-<fingerprint>.csv."""
    problem = user_points.points_problem(raw)
    if problem:
        return "", f"the {'drawing' if kind == 'drawn' else 'file'} {problem}"
    from ui.checkpoints import checkpoint_dir  # here: ui.checkpoints imports the form
    path = checkpoint_dir() / "points" / f"{kind}-{user_points.fingerprint(raw)}.csv"
    if not path.exists():
        try:
            write_atomic(user_points.csv_bytes(raw), path)
        except OSError as exc:
            return "", f"the points could not be saved in {path.parent} ({exc.strerror or exc})"
    _describe(raw, f"Saved as {code(path)}")
    return str(path), None


def _describe(raw: np.ndarray, where: str) -> None:
    _, note = user_points.scaled(raw)
    st.caption(f"{where} · {plain(note)}")
