"""The data a checkpoint carries itself: a run on the user's own 2-D points.

Why the points, not only a fingerprint: the CSV a run's config names may move, change
or never exist on the machine that opens the checkpoint (a drawing lives in one
server's checkpoint folder). The points are small (at most 100,000 rows, 1.6 MB; a
drawing is a few KB), so every checkpoint of such a run holds them ("data_points",
float64 as given, validated by core/io/schema.py), and resuming, sampling, scoring and
pictures use them: the run goes on with exactly its data. Where the CSV now differs,
resume_note says so (with both fingerprints), so nobody thinks the new file is in use.
"""
from __future__ import annotations

import os

from core.data import points as user_points
from core.data.datasets import DataSet, load_dataset, points_dataset
from core.io.schema import config_of

FIELD = "data_points"


def fields_of(data: DataSet) -> dict:
    """The checkpoint fields that carry a data set: {} for the built-in ones."""
    return {FIELD: data.raw} if data.raw is not None else {}


def saved_dataset(state: dict) -> DataSet | None:
    """The data set a validated run state carries, or None (it names its data only)."""
    raw = state.get(FIELD)
    if raw is None:
        return None
    root = state["config"].get("data_root") or "saved points"
    return points_dataset(raw.numpy(), f"{root} (as saved in the checkpoint)")


def dataset_of(state: dict) -> DataSet:
    """A run state's data: the points it carries, else loaded as its config says."""
    return saved_dataset(state) or load_dataset(config_of(state))


def resume_note(state: dict) -> str | None:
    """A line for the run's log when the CSV its config names no longer holds the
    saved points (moved, changed, unreadable); None when it still does."""
    raw = state.get(FIELD)
    if raw is None:
        return None
    root = state["config"].get("data_root", "")
    saved = user_points.fingerprint(raw.numpy())
    try:
        now = user_points.fingerprint(user_points.read_csv(root))
    except user_points.PointsError as exc:
        why = ("is no longer there (moved or deleted)" if not os.path.exists(root)
               else f"cannot be used now ({exc})")
    else:
        if now == saved:
            return None
        why = f"has changed since (fingerprint {now}, the run's is {saved})"
    return (f"data: the CSV {root!r} {why}; the run goes on with the {len(raw):,} points "
            "saved in its checkpoint. Start a new run to train on the CSV as it is now")
