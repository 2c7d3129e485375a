"""Registries: the one place each extension point's names are declared.

Data sets, update rules, rewards and metrics are each a Registry of entries with
the same metadata (name, label, unit, which direction is better, help). Core, the
CLI and the UI all read their choices, labels and help from here, so adding a data
set, a rule, a reward or a metric is one registration next to its code.

A registry states its contract as code: `required` metadata keys (with their types)
and a `check(name, value, meta)` that returns what an entry lacks. Registering
something that breaks the contract raises at once, naming the entry and what is
missing, instead of failing later far from the cause.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from core.base.validate import ConfigError


class ContractError(TypeError):
    """An extension registered without a piece its registry requires."""


@dataclass(frozen=True)
class Entry:
    name: str
    value: Any                   # the thing registered: a loader, a rule, a function
    label: str = ""
    help: str = ""
    unit: str = ""
    better: str | None = None    # "higher", "lower" or None (no direction)
    extra: dict = field(default_factory=dict)   # kind-specific metadata

    @property
    def title(self) -> str:
        return self.label or self.name


class Registry:
    """An ordered name -> Entry map; unknown names raise ConfigError listing the known."""

    def __init__(self, kind: str, required: dict[str, type] | None = None,
                 check=None) -> None:
        self.kind = kind
        self.required = required or {}
        self.check = check
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, value: Any = None, **meta: Any) -> Any:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        problems = [f"better must be 'higher', 'lower' or None, not {meta['better']!r}"
                    ] if meta.get("better") not in (None, "higher", "lower") else []
        for key, kind in self.required.items():
            if key not in meta:
                problems.append(f"needs {key}= ({kind.__name__})")
            elif not isinstance(meta[key], kind):
                problems.append(f"{key}= must be a {kind.__name__}, not {meta[key]!r}")
        if self.check is not None and not problems:
            problems += self.check(name, value, meta)
        if problems:
            raise ContractError(f"{self.kind} {name!r}: {'; '.join(problems)}")
        known = {"label", "help", "unit", "better"}
        extra = {k: v for k, v in meta.items() if k not in known}
        self._entries[name] = Entry(name, value, **{k: v for k, v in meta.items() if k in known},
                                    extra=extra)
        return value

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(f"{self.kind} {name!r} is not one of: {', '.join(self)}") from None

    def __getitem__(self, name: str) -> Any:
        return self.entry(name).value

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, **where: Any) -> tuple[str, ...]:
        """Names in registration order, optionally only those whose extra metadata
        matches every given key (e.g. names(needs_root=False))."""
        return tuple(n for n, e in self._entries.items()
                     if all(e.extra.get(k) == v for k, v in where.items()))

    def entries(self) -> list[Entry]:
        return list(self._entries.values())
