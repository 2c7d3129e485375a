"""The process-wide run registry, and the run id in the URL.

Runs must outlive a browser tab: st.session_state is reset by a reload, so trainers
live in one registry behind st.cache_resource (shared by every session of the
server process), keyed by run id; the page keeps only the run id, in
st.query_params, so a refresh or a second tab re-attaches to the same run.
"""
from __future__ import annotations

import atexit
import threading

import streamlit as st
import torch

from core.engine.trainer import Trainer, torch_threads

MAX_RUNNING = 2      # running training threads, all pages together; 2 CPU cores
MAX_KEPT = 12        # finished / stopped runs kept in memory for charts and saving
QUERY_KEY = "run"
SESSION_KEY = "attached_run"


class CapReached(RuntimeError):
    """Starting one more run would exceed the limit; the message says what to do."""


class Slots:
    """The one limit on training threads in this server process, shared by every
    registry: the Train page's runs and the Compare page's arenas (an arena is one
    thread, whatever its arm count). Only running ones count: a paused run holds no
    slot, and resuming it asks for one again."""

    def __init__(self, limit: int = MAX_RUNNING) -> None:
        self.limit = limit
        self.lock = threading.Lock()   # check + start is one step across registries
        self._registries: list[tuple["RunRegistry", str]] = []

    def join(self, registry: "RunRegistry", where: str) -> None:
        self._registries.append((registry, where))

    def running(self) -> list[tuple[object, str]]:
        """(run, where it is shown) for every running training thread."""
        return [(t, where) for reg, where in list(self._registries) for t in reg.running()]

    def check(self, starting) -> None:
        """Raise CapReached, naming what runs and how to free a slot, when full."""
        others = [(t, where) for t, where in self.running() if t is not starting]
        if len(others) < self.limit:
            return
        names = ", ".join(f"`{t.run_id}` ({where})" for t, where in others)
        raise CapReached(
            f"{len(others)} trainings are already running: {names}; the limit is "
            f"{self.limit} at a time on this machine. To free a slot, pause or stop one "
            "of them on its page.")


class RunRegistry:
    """Runs by run id. Pure Python: the Streamlit part is `registry()` below.

    Registries that share one `Slots` share its limit on running threads."""

    def __init__(self, max_running: int = MAX_RUNNING, max_kept: int = MAX_KEPT, *,
                 slots: Slots | None = None, where: str = "Train page") -> None:
        self.slots = slots if slots is not None else Slots(max_running)
        self.slots.join(self, where)
        self.max_kept = max_kept
        self._runs: dict[str, Trainer] = {}
        self._lock = threading.Lock()   # sessions run scripts in parallel threads

    @property
    def max_running(self) -> int:
        return self.slots.limit

    def get(self, run_id: str | None) -> Trainer | None:
        with self._lock:
            return self._runs.get(run_id) if run_id else None

    def runs(self) -> list[Trainer]:
        with self._lock:
            return list(self._runs.values())

    def running(self) -> list[Trainer]:
        return [t for t in self.runs() if t.status.state == "running"]

    def add(self, trainer: Trainer) -> Trainer:
        with self._lock:
            self._runs[trainer.run_id] = trainer
            self._evict()
        return trainer

    def _evict(self) -> None:
        # Oldest first (dicts keep insertion order); live runs are never dropped.
        done = [rid for rid, t in self._runs.items() if not t.status.live]
        for rid in done[:max(0, len(self._runs) - self.max_kept)]:
            self._runs.pop(rid).stop()

    def start(self, trainer: Trainer) -> None:
        """Register and start, or raise CapReached (the run is then not registered)."""
        with self.slots.lock:
            self.slots.check(trainer)
            with self._lock:
                self._runs[trainer.run_id] = trainer
                trainer.start()
                self._evict()

    def resume(self, trainer: Trainer) -> None:
        with self.slots.lock:
            self.slots.check(trainer)
            trainer.resume()

    def remove(self, run_id: str) -> None:
        with self._lock:
            trainer = self._runs.pop(run_id, None)
        if trainer is not None:
            trainer.stop()

    def stop_all(self) -> None:
        for trainer in self.runs():
            trainer.stop(timeout=1.0)

    def clear(self) -> None:
        self.stop_all()
        with self._lock:
            self._runs.clear()


def configure_torch_threads() -> None:
    """One intra-op thread per training run, set deliberately: the server and other
    runs share the cores, and torch's default of one OpenMP thread per core
    spin-waits when they are busy (bench/engine.py measures both settings).
    GANLAB_TORCH_THREADS overrides it (e.g. on a bigger machine or a GPU).
    """
    torch.set_num_threads(torch_threads())


@st.cache_resource(show_spinner=False)
def slots() -> Slots:
    """The process-wide limit on training threads (Train runs + Compare arenas)."""
    return Slots(MAX_RUNNING)


@st.cache_resource(show_spinner=False)
def registry() -> RunRegistry:
    configure_torch_threads()
    reg = RunRegistry(slots=slots(), where="Train page")
    # A server shutdown must not leave training threads behind.
    atexit.register(reg.stop_all)
    return reg


class RunLink:
    """Which run a page shows: its id in the URL (a reload keeps it) and in the session
    (a page switch drops the query string). One per page kind (Train runs, arenas)."""

    def __init__(self, query_key: str, session_key: str) -> None:
        self.query_key, self.session_key = query_key, session_key

    def requested(self) -> str | None:
        return st.query_params.get(self.query_key) or st.session_state.get(self.session_key)

    def attach(self, run) -> None:
        if st.query_params.get(self.query_key) != run.run_id:
            st.query_params[self.query_key] = run.run_id
        st.session_state[self.session_key] = run.run_id

    def detach(self) -> None:
        if self.query_key in st.query_params:
            del st.query_params[self.query_key]
        st.session_state.pop(self.session_key, None)


TRAIN_LINK = RunLink(QUERY_KEY, SESSION_KEY)
requested_run_id, attach, detach = TRAIN_LINK.requested, TRAIN_LINK.attach, TRAIN_LINK.detach


def current_run() -> Trainer | None:
    """The requested run, if this process knows it (and put it back in the URL)."""
    trainer = registry().get(requested_run_id())
    if trainer is not None:
        attach(trainer)
    return trainer
