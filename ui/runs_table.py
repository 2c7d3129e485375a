"""Runs side by side as a table (the runs panel): every setting of each chosen run or
arm, the ones that differ marked, and the final quality metrics; downloadable as CSV."""
from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core.base.files import csv_bytes
from core.engine.metric_info import METRICS
from ui.text import plain


def flat(settings: dict, prefix: str = "") -> dict:
    """{"rlhf": {"kl_weight": 0.1}} -> {"rlhf.kl_weight": 0.1}; lists as text."""
    out = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        else:
            out[name] = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) \
                else value
    return out


def final_quality(log) -> dict:
    """The last logged value of each quality metric (q_*), by its label."""
    out = {}
    for name in log.columns:
        if name.startswith("q_"):
            last = log.last_logged(name, 1)
            if last and math.isfinite(last[0]):
                entry = METRICS.get(name)
                out[entry.title if entry else name] = round(last[0], 4)
    return out


def table(runs: dict[str, tuple[dict, dict]]) -> pd.DataFrame:
    """Rows: settings, then final quality; a column per run; `differs` marks the rows
    whose values are not all the same."""
    settings = {name: flat(cfg) for name, (cfg, _) in runs.items()}
    keys = list(dict.fromkeys(k for s in settings.values() for k in s))
    rows = {k: [str(settings[n].get(k, "–")) for n in runs] for k in keys}
    quality = {name: q for name, (_, q) in runs.items()}
    metrics = list(dict.fromkeys(m for q in quality.values() for m in q))
    for m in metrics:
        rows[f"final {m}"] = [quality[n].get(m, "–") for n in runs]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(runs))
    frame.insert(0, "differs", [len(set(map(str, v))) > 1 for v in rows.values()])
    return frame


def candidates(entries) -> dict:
    """name -> (config dict, final quality) of every run and every arena arm listed."""
    out = {}
    for e in entries:
        if e.kind == "run":
            out[e.name] = (e.job.cfg.to_dict(), final_quality(e.job.log))
        elif e.kind == "arena":
            for arm_name, arm in e.job.arms.items():
                out[f"{e.name} · {arm_name}"] = (arm.cfg.to_dict(), final_quality(arm.log))
    return out


def show(entries) -> None:
    found = candidates(entries)
    if len(found) < 2:
        return
    chosen = st.multiselect("Compare as a table", list(found), key="panel_table_pick",
                            help="Their settings side by side (the ones that differ "
                                 "first and marked) and their final quality")
    if len(chosen) < 2:
        return
    frame = table({n: found[n] for n in chosen})
    only = st.toggle("Only what differs", value=True, key="panel_table_diff")
    shown = frame[frame["differs"]] if only else frame.sort_values("differs", ascending=False,
                                                                  kind="stable")
    st.dataframe(shown.style.apply(
        lambda row: ["font-weight: bold" if row["differs"] else ""] * len(row), axis=1),
        key="panel_table")
    st.download_button("Table CSV", data=lambda: csv_bytes(frame.reset_index(
        names="setting")), file_name="runs.csv", mime="text/csv", on_click="ignore",
        key="panel_table_csv")
    st.caption(plain(f"{int(frame['differs'].sum())} of {len(frame)} rows differ."))
