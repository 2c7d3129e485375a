"""What an update rule is: a class with an options dataclass and an autograd loss.

A rule says what G puts in front of D this step (`emit`) and returns the generator's
loss under autograd with its metrics (`loss`). Metrics are logged under the names
they are returned with. A rule may also offer `fast_grad`, a hand-written gradient
for the MLPs that writes d loss / d params into `ctx.nets.g_flat.grad`; the engine
uses it when present, and tests/test_rules.py proves it equal to `loss`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch


def option(default: Any, label: str, help: str = "", *, choices=None, **bounds: Any):
    """A rule option: a dataclass field whose metadata the UI reads to draw its input.

    `choices` is a Registry (or tuple) of allowed values; bounds are low / high for
    numbers (documentation for the form; validate() enforces them); auto = (value on
    2-D data, value on images) for an "auto" option, shown by the form, whose auto
    value is 0 or `auto_when`."""
    return field(default=default, metadata={"label": label, "help": help,
                                            "choices": choices, **bounds})


@dataclass(frozen=True)
class NoOptions:
    """Options of a rule that has none."""

    def validate(self, prefix: str, cfg) -> None:
        pass


def resolved(options, name: str, is_2d: bool):
    """An option's value with "auto" resolved for the kind of data, from the same field
    metadata the form reads (auto = (2-D, images), auto_when = the auto value, 0 unless
    given)."""
    meta = next(f.metadata for f in fields(options) if f.name == name)
    value = getattr(options, name)
    if meta.get("auto") is not None and value == meta.get("auto_when", 0):
        return meta["auto"][0 if is_2d else 1]
    return value


def auto_text(values: tuple) -> str:
    """An option's "auto" values, (2-D data, images), as help text."""
    return f"{values[0]:g} on 2-D data, {values[1]:g} on images"


def option_fields(options_type: type) -> list:
    """The fields of an options dataclass, for forms and the CLI."""
    return list(fields(options_type))


class Rule:
    Options: type = NoOptions
    fast_grad = None     # optional: fast_grad(mu, g_acts, extra, ctx) -> metrics

    def emit(self, mu: torch.Tensor, ctx) -> tuple[torch.Tensor, Any]:
        """(the sample G emits this step, whatever loss() needs besides mu)."""
        return mu, None

    def loss(self, mu: torch.Tensor, extra: Any, ctx) -> tuple[torch.Tensor, dict]:
        """(G's loss as a differentiable function of mu = G(z), metrics by name)."""
        raise NotImplementedError
