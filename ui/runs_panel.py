"""The runs panel: every run, comparison and seed job this server holds, on one list.

The jobs live in three process-wide registries (ui/runs.py, ui/compare_view.py,
ui/seeds_view.py), so a run started in another tab is listed too, and finished or
stopped ones stay until the registry lets them go. Open switches to the job's page
with its id in the URL, the way a reload re-attaches. Names and notes are the user's
text: shown as plain text, never markdown (ui/text.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ui import compare_view, run_view, runs, runs_table, seeds_view
from ui.text import plain

TRAIN_PAGE, COMPARE_PAGE = "views/train.py", "views/compare.py"
# the session keys a page re-attaches from: opening a job drops its page's, so the job
# asked for is the one shown (compare.py looks for an arena before a seed job); the
# other page keeps its own
SESSION_KEYS = {TRAIN_PAGE: (runs.SESSION_KEY,),
                COMPARE_PAGE: (compare_view.SESSION_KEY, seeds_view.SESSION_KEY)}
NOTE_PREVIEW = 120   # characters of a note shown in the list


@dataclass(frozen=True)
class Entry:
    job: object
    kind: str          # "run", "arena" or "seeds"
    page: str
    query_key: str

    @property
    def run_id(self) -> str:
        return self.job.run_id

    @property
    def name(self) -> str:
        notes = getattr(self.job, "notes", None) or {}
        return notes.get("name") or self.job.run_id

    @property
    def note(self) -> str:
        return (getattr(self.job, "notes", None) or {}).get("text", "")

    def summary(self) -> str:
        """state · step · data · rules, in words (plain values only)."""
        job = self.job
        if self.kind == "seeds":
            step = f"{len(job.results)}/{job.total} seeds"
            rules = ", ".join(job.arm_names)
        elif self.kind == "arena":
            step = f"step {job.status.step:,}"
            rules = ", ".join(a.cfg.rule for a in job.arms.values())
        else:
            step = f"step {job.status.step:,}"
            rules = job.cfg.rule
        return f"{job.status.state} · {step} · {job.cfg.data} · {rules}"


def entries() -> list[Entry]:
    """Every job of the three registries, live ones first, then newest first."""
    out = [Entry(t, "run", TRAIN_PAGE, runs.QUERY_KEY) for t in runs.registry().runs()]
    out += [Entry(a, "arena", COMPARE_PAGE, compare_view.QUERY_KEY)
            for a in compare_view.registry().runs()]
    out += [Entry(j, "seeds", COMPARE_PAGE, seeds_view.QUERY_KEY)
            for j in seeds_view.registry().runs()]
    out.reverse()   # registries keep the oldest first; sorted() below is stable
    return sorted(out, key=lambda e: not e.job.status.live)


def _open(entry: Entry) -> None:
    for key in SESSION_KEYS[entry.page]:
        st.session_state.pop(key, None)
    st.switch_page(entry.page, query_params={entry.query_key: entry.run_id})


def _save_notes(job, key: str) -> None:
    job.set_notes(st.session_state[f"{key}_name"], st.session_state[f"{key}_text"])


def _edit(entry: Entry, col) -> None:
    """A popover to rename the job and write a note (saved with its checkpoints)."""
    if not hasattr(entry.job, "set_notes"):   # seed jobs save no checkpoint
        return
    key = f"panel_notes_{entry.run_id}"
    with col.popover("Note", icon=":material/edit:",
                     help="Rename it and write a note; both are saved with its checkpoints"):
        st.text_input("Name", value=entry.job.notes["name"], key=f"{key}_name",
                      max_chars=200, placeholder=entry.run_id)
        st.text_area("Note", value=entry.job.notes["text"], key=f"{key}_text",
                     max_chars=10_000, height=100)
        st.button("Save name and note", key=f"{key}_save", on_click=_save_notes,
                  args=(entry.job, key), type="primary")


def counts(items: list[Entry]) -> str:
    """' (1 running, 1 paused)': a paused job is live (it holds a slot) but not running."""
    states = [e.job.status.state for e in items]
    parts = [f"{states.count(s)} {s}" for s in ("running", "paused") if s in states]
    return f" ({', '.join(parts)})" if parts else ""


def show(current: str | None = None) -> None:
    """The panel, collapsed into an expander; `current` is the id the page shows. It
    refreshes with the page's live view (its own fragment, at the same pace) while any
    job is live, so its states and steps move with the charts."""
    polling = any(e.job.status.live for e in entries())
    every = (run_view.poll_interval(current) if current else run_view.POLL_S) \
        if polling else None

    @st.fragment(run_every=every)
    def panel() -> None:
        _panel(current)
        if polling and not any(e.job.status.live for e in entries()):
            st.rerun()   # the last live one ended: redraw the page, which stops polling

    panel()


def _panel(current: str | None) -> None:
    items = entries()
    label = f"Runs and comparisons on this server: {len(items)}{counts(items)}"
    # keyed: the fragment's refresh keeps it open or closed as the person left it
    with st.expander(label, icon=":material/list:", expanded=False, key="panel_expander"):
        if not items:
            st.caption("None yet: runs started here or in another tab appear in this list.")
        for entry in items:
            with st.container(key=f"panel_row_{entry.run_id}"):
                c1, c2 = st.columns([3, 2], vertical_alignment="center")
                buttons = c2.container(horizontal=True, horizontal_alignment="right")
                this = entry.run_id == current
                c1.markdown(f"**{plain(entry.name)}**" + (" (shown)" if this else "")
                            + f"  \n{plain(entry.summary())}"
                            + (f" · {plain(entry.run_id)}" if entry.name != entry.run_id
                               else ""))
                if entry.note:
                    note = entry.note
                    c1.caption(plain(note if len(note) <= NOTE_PREVIEW
                                     else note[:NOTE_PREVIEW] + "..."))
                if buttons.button("Open", key=f"panel_open_{entry.run_id}", disabled=this,
                                  help=f"Show this {entry.kind} on its page"):
                    _open(entry)
                _edit(entry, buttons)
        st.caption("Finished and stopped ones stay listed (up to "
                   f"{runs.MAX_KEPT} of each kind) until the server restarts.")
        runs_table.show(items)
