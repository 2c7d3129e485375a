"""Validation helpers shared by the config and the rules' option classes.

Every error names the field, the bad value and what is allowed, so the CLI and the
dashboard can show it as is.
"""
from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it."""


def check_range(name: str, value: Any, low: float, high: float, *, integer: bool = False,
                low_open: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)):
        raise ConfigError(f"{name} = {value!r} is not {kind}; use {kind} in "
                          f"{'(' if low_open else '['}{low:g}, {high:g}]")
    bad_low = value <= low if low_open else value < low
    if not math.isfinite(value) or bad_low or value > high:
        raise ConfigError(f"{name} = {value!r} is out of range; allowed: "
                          f"{'(' if low_open else '['}{low:g}, {high:g}]")


def check_choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} = {value!r} is not one of: {', '.join(choices)}")
