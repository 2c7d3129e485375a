"""Learning-rate schedules over a run's step budget, shared by every rule alike.

A schedule scales both networks' learning rates by the same factor, a function of
the share of the budget done: "constant" (1), "linear" (1 -> 0) or "cosine" (1 -> 0,
slow at both ends). Decaying the rates lets G settle on the modes at the end of a
run instead of orbiting them (bench/quality.py measures what it gives).
"""
from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_scale(schedule: str, done: int, total: int) -> float:
    """The factor on the configured learning rates after `done` of `total` steps
    (1 with no budget: a run until stopped has no end to decay towards)."""
    if schedule == "constant" or total <= 0:
        return 1.0
    t = min(max(done / total, 0.0), 1.0)
    return 1.0 - t if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
