"""Config problems shown next to their inputs, all at once.

The form reserves a slot (an st.empty) under every input, keyed by the config field
the input sets ("g_opt.lr", "reinforce.sigma_start"). core.engine.config.preset_problems()
says what is wrong with each field; fill() writes each message into its field's slot
and lists every problem at the foot too, since a slot can sit in a closed expander.
"""
from __future__ import annotations

import re

import streamlit as st

from ui.text import code, plain

_NUMBER = r"-?\d[\d.]*(?:e[+-]?\d+)?"
# core writes ranges as intervals, "[2, 4096]" or "(0, 1]": say them in words
_INTERVAL = re.compile(rf"(?:in )?([\[(])({_NUMBER}), ({_NUMBER})([\])])")


def in_words(message: str) -> str:
    def words(m: re.Match) -> str:
        low = f"from {m.group(2)}" if m.group(1) == "[" else f"above {m.group(2)},"
        high = f"to {m.group(3)}" if m.group(4) == "]" else f"below {m.group(3)}"
        return f"{low} {high}" if m.group(1) == "[" else f"{low} up {high}"
    return _INTERVAL.sub(words, message)


def describe(field: str, message: str, label: str) -> str:
    """'**Batch size** (`batch_size`): 1 is out of range; allowed: from 2 to 4096'."""
    text = message[len(field) + 3:] if message.startswith(f"{field} = ") else message
    return f"**{label}** ({code(field)}): {plain(in_words(text))}"


class Slots:
    """field -> (label, where, placeholder) for every input of the form."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[str, str, object]] = {}

    def add(self, field: str, label: str, where=st, section: str = "") -> None:
        # the label without its "(0 = auto)"-style note: the message says the value
        self._slots[field] = (label.split(" (")[0], section, where.empty())

    def fill(self, problems: dict[str, str]) -> None:
        """Each problem under its input; the foot names them all (the full message
        too where the field has no input of its own)."""
        names = []
        for field, message in problems.items():
            label, section, slot = self._slots.get(field, (field or "Settings", "", None))
            if slot is not None:
                slot.error(describe(field, message, label), icon=":material/error:")
                names.append(f"**{label}**" + (f" (in *{section}*)" if section else ""))
            else:
                names.append(describe(field, message, label))
        if names:
            count = "1 setting needs" if len(names) == 1 else f"{len(names)} settings need"
            st.error(f"{count} fixing before Start: " + "; ".join(names),
                     icon=":material/error:")
