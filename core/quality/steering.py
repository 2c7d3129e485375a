"""Is a fine-tune steering, or hacking its reward model? The warning a person needs.

A rising proxy (the reward model's score) says nothing by itself: the lab's own history
is a fine-tune whose proxy rose while judges of other kinds saw no new 7s and the
samples drifted away from anything real. Between the first and the latest quality
evaluation of a fine-tune, the metrics that a real steer should not make worse are
compared: realism per sample (the distance to the nearest real image; on 2-D data the
share of high-quality samples), the share of samples that judges of different kinds
agree on (any class: preferences need no target), and with a digit target the
independent judges' share of it. Class
coverage and the FD to the whole data set are not checked: steering toward a class is
meant to narrow them.
"""
from __future__ import annotations

import math

from core.engine.metric_info import METRICS
from core.quality.judges import AGREED, JUDGE_PREFIX  # (registers the judges' metrics)

PROXY = "q_rm"
REALISM = ("q_nn_dist", "q_high_quality", AGREED)
RISE = 0.1            # the proxy must gain this much (standardised units) to count
WORSE_RELATIVE = 0.1  # a metric 10% worse than at the start
WORSE_ABSOLUTE = 2.0  # ... and by at least this much on a percent scale (judges' shares)


def worsened(first: dict[str, float], last: dict[str, float]) -> list[str]:
    """The checked metrics that got clearly worse from `first` to `last`."""
    out = []
    for name, before in first.items():
        entry, after = METRICS.get(name), last.get(name, math.nan)
        checked = name in REALISM or name.startswith(JUDGE_PREFIX)
        if (not checked or entry is None or entry.better is None
                or not (math.isfinite(before) and math.isfinite(after))):
            continue
        change = (after - before) if entry.better == "higher" else (before - after)
        floor = WORSE_ABSOLUTE if entry.unit == "%" else 0.0
        if change < -max(WORSE_RELATIVE * abs(before), floor, 1e-9):
            out.append(name)
    return out


def steering_warning(first: dict[str, float], last: dict[str, float]) -> str | None:
    """A one-line warning when the proxy rose while realism or the judges fell."""
    if not last.get(PROXY, math.nan) > first.get(PROXY, math.nan) + RISE:
        return None
    names = worsened(first, last)
    if not names:
        return None
    moves = ", ".join(f"{METRICS.entry(n).title} {first[n]:.3g} -> {last[n]:.3g}"
                      for n in names)
    return (f"The reward model's score rose ({first[PROXY]:.2f} -> {last[PROXY]:.2f}) while "
            f"{moves}: the fine-tune may be exploiting the reward model, not steering. Look "
            "at the samples beside the base, and blind-test this arm.")
