"""Options of an extension (an update rule, a reward): a frozen dataclass of option() fields.

Each field's metadata says everything a form, the CLI and the validation need: its
label and help, its choices (a Registry or a tuple) or its bounds (low, high, and
low_open for "greater than"), and "auto" = (value on 2-D data, value on images) with
auto_when = the value that means auto (0 unless given). Options.validate() checks
every field from that metadata; a subclass adds checks between fields in check().
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from core.base.validate import ConfigError, check_choice, check_range

KINDS = {"bool": bool, "int": int, "float": float, "str": str}


def option(default: Any, label: str, help: str = "", *, choices=None, **bounds: Any):
    """A dataclass field with the metadata described above. A number needs low and high;
    a text may have choices."""
    return field(default=default, metadata={"label": label, "help": help,
                                            "choices": choices, **bounds})


def kind_of(f: dataclasses.Field) -> type:
    """The Python type an option holds (annotations are strings here)."""
    name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    return KINDS.get(name, object)


def is_auto(f: dataclasses.Field, value: Any) -> bool:
    return f.metadata.get("auto") is not None and value == f.metadata.get("auto_when", 0)


def check_value(prefix: str, f: dataclasses.Field, value: Any) -> None:
    """One option's value against its declared kind, choices and bounds."""
    name, meta, kind = prefix + f.name, f.metadata, kind_of(f)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} = {value!r} must be true or false")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} = {value!r} must be text")
        if meta.get("choices") is not None:
            check_choice(name, value, tuple(meta["choices"]))
    elif kind in (int, float) and not is_auto(f, value):
        try:
            check_range(name, value, meta["low"], meta["high"], integer=kind is int,
                        low_open=meta.get("low_open", False))
        except ConfigError as exc:
            auto = meta.get("auto_when", 0)
            if meta.get("auto") is None or meta["low"] <= auto <= meta["high"]:
                raise
            raise ConfigError(f"{exc} (or {auto:g} = auto)") from None


def contract_problems(options_type: type) -> list[str]:
    """What an options class lacks to be usable by the config, the forms and the CLI."""
    if not (isinstance(options_type, type) and issubclass(options_type, Options)):
        return [f"its options {getattr(options_type, '__name__', options_type)!r} must "
                "subclass core.base.options.Options"]
    if not dataclasses.is_dataclass(options_type):
        return [f"its options {options_type.__name__} must be a @dataclass(frozen=True)"]
    problems = []
    for f in fields(options_type):
        meta, kind = f.metadata, kind_of(f)
        if "label" not in meta:
            problems.append(f"option {f.name!r} is not declared with option(...)")
        elif kind is object:
            problems.append(f"option {f.name!r} must be a bool, int, float or str")
        elif kind in (int, float) and not {"low", "high"} <= set(meta):
            problems.append(f"option {f.name!r} is a number without low= and high= bounds")
    return problems


@dataclass(frozen=True)
class Options:
    """Base of every options class; with no fields, the options of a rule that has none."""

    def validate(self, prefix: str, cfg) -> None:
        """Every field against its metadata, then the checks between fields."""
        for f in fields(self):
            check_value(prefix, f, getattr(self, f.name))
        self.check(prefix, cfg)

    def check(self, prefix: str, cfg) -> None:
        """Checks between fields, or against the run's config; none by default."""


def resolved(options, name: str, is_2d: bool):
    """An option's value with "auto" resolved for the kind of data."""
    f = next(f for f in fields(options) if f.name == name)
    value = getattr(options, name)
    return f.metadata["auto"][0 if is_2d else 1] if is_auto(f, value) else value


def auto_text(values: tuple) -> str:
    """An option's "auto" values, (2-D data, images), as help text."""
    return f"{values[0]:g} on 2-D data, {values[1]:g} on images"


def option_fields(options_type: type) -> list:
    """The fields of an options class, for forms and the CLI."""
    return list(fields(options_type))
