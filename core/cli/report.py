"""Quality results as text and strict JSON, for the CLI."""
from __future__ import annotations

import math

from core.engine.metric_info import METRICS
from core.quality.metrics import QUALITY_METRICS


def json_safe(obj):
    """NaN (e.g. reverse KL with no high-quality sample) -> None, for strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def describe(result: dict) -> str:
    """A metrics dict from evaluate_state as aligned text lines."""
    head = f"{result.get('data')} at step {result.get('step')}, n = {result.get('n')}"
    if "unavailable" in result:
        return f"{head}\nunavailable: {result['unavailable']}"
    lines = [head]
    for key in QUALITY_METRICS:
        if key in result:
            entry = METRICS.entry(key)
            label = entry.title + (f" ({entry.unit})" if entry.unit else "")
            lines.append(f"  {label:<30} {result[key]:.4g}  ({key})")
    return "\n".join(lines)
