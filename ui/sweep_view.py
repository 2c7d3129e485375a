"""The Compare page's sweep mode: run a grid of one or two settings x seeds as a
background job (core/jobs/sweep_job.py), or open a sweep folder the CLI wrote; see each
quality metric over the grid (ui/sweep_charts.py) and click a cell to open its seeds in
the seed views (ui/seeds_view.py).

The URL's "sweep" is a running job's id or a sweep folder's path, so a reload, a second
tab or a server restart (the folder stays) shows the same sweep. A job takes one slot
of the shared limit on running trainings while it runs, as a seed job does.
"""
from __future__ import annotations

import atexit
import functools
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.cli.checks import SEED_MAX
from core.engine.arena import ArmSpec
from core.engine.config import TrainConfig
from core.engine.trainer import new_run_id
from core.jobs.seed_job import SeedResult
from core.jobs.sweep import grid_of
from core.jobs.sweep_job import SweepJob
from core.jobs.sweep_read import (
    SweepGrid,
    SweepReadError,
    cell_frames,
    read_sweep,
    signature,
)
from ui import run_view, runs, seeds_view, sweep_charts
from ui.checkpoints import checkpoint_dir
from ui.run_view import flash_error
from ui.text import code, plain

QUERY_KEY = "sweep"
SESSION_KEY = "attached_sweep"
CELL_KEY = "sw_cell"          # (sweep, cell index) of the open cell
K = "sw_"
NONE = "(none)"
# What a person may sweep from the page, with an example value list (the CLI's --grid
# takes any config key).
FIELDS = {"lr": "1e-4, 3e-4, 1e-3", "batch_size": "64, 128, 256", "d_steps": "1, 2, 5",
          "g_ema": "0, 0.99, 0.995", "grad_clip": "0, 1, 5", "latent_dim": "2, 8, 32",
          "g_opt.beta1": "0, 0.5, 0.9", "reinforce.sigma_start": "0.02, 0.05, 0.1",
          "reinforce.samples_per_z": "2, 4, 8"}
HELP = {"lr": "both learning rates (G and D)"}


@st.cache_resource(show_spinner=False)
def registry() -> runs.RunRegistry:
    reg = runs.RunRegistry(slots=runs.slots(), where="Compare page (sweep)")
    atexit.register(reg.stop_all)
    return reg


LINK = runs.RunLink(QUERY_KEY, SESSION_KEY)


def sweeps_dir() -> Path:
    return checkpoint_dir() / "sweeps"


@dataclass(frozen=True)
class Target:
    """What the view shows: a folder, and the job writing it (None: opened)."""
    folder: Path
    job: SweepJob | None = None

    @property
    def run_id(self) -> str:
        return self.job.run_id if self.job is not None else str(self.folder)


def current() -> Target | None:
    wanted = LINK.requested()
    if not wanted:
        return None
    job = registry().get(wanted)
    if job is not None:
        LINK.attach(job)
        return Target(job.out, job)
    folder = Path(wanted)   # a job's id after a restart: its folder is still there
    return Target(folder if folder.is_absolute() else sweeps_dir() / wanted)


def detach() -> None:
    LINK.detach()
    st.session_state.pop(CELL_KEY, None)


# -- starting or opening ---------------------------------------------------------------
def launcher(cfg: TrainConfig | None, arms: list[ArmSpec], warmup: int) -> None:
    """Below the comparison's start buttons: run a sweep of the sidebar's arms and
    settings, or open a sweep folder."""
    with st.expander("Sweep settings over a grid", icon=":material/grid_on:",
                     key=K + "launcher"):
        run_tab, open_tab = st.tabs(["Run a sweep", "Open a sweep folder"])
        with run_tab:
            _run_form(cfg, arms, warmup)
        with open_tab:
            _open_form()


def _field(col, n: int, optional: bool) -> tuple[str, str] | None:
    names = ([NONE] if optional else []) + list(FIELDS)
    key = col.selectbox(f"Setting {n}", names, key=f"{K}key{n}",
                        format_func=lambda k: f"{k} ({HELP[k]})" if k in HELP else k)
    if key == NONE:
        return None
    text = col.text_input(f"Values of {key}", key=f"{K}values{n}_{key}", value=FIELDS[key],
                          help="Comma-separated, e.g. " + FIELDS[key])
    return key, text


def _run_form(cfg: TrainConfig | None, arms: list[ArmSpec], warmup: int) -> None:
    st.caption("Every cell of the grid runs the sidebar's arms and settings with the values "
               "below, once per seed (one arena each); the heatmap fills in as runs finish.")
    c1, c2 = st.columns(2)
    fields = [f for f in (_field(c1, 1, False), _field(c2, 2, True)) if f]
    seeds = int(c1.number_input("Seeds per cell", min_value=1, max_value=seeds_view.MAX_SEEDS,
                                value=2, step=1, key=K + "seeds"))
    steps = int(c2.number_input("Steps per run", min_value=1, value=2000, step=500,
                                key=K + "steps"))
    every = int(c1.number_input("Quality metrics every (steps)", min_value=1, value=500,
                                step=100, key=K + "eval_every",
                                help="Each cell's quality is its seeds' last evaluation"))
    with c2:
        backend, address, where_ok = seeds_view.where_to_run(K)
    grid, problem = None, None
    if cfg is not None:
        try:
            grid = grid_of(fields, cfg.replace(steps=steps, eval_every=every), FIELDS)
        except ValueError as exc:
            problem = str(exc)
        first = cfg.seed
        if grid and first + seeds - 1 > SEED_MAX:
            problem = f"seeds {first}..{first + seeds - 1} go past the largest seed, {SEED_MAX}"
    if problem:   # it quotes what was typed: plain text
        st.error(plain(problem), icon=":material/error:")
    elif grid:
        cells = 1
        for _, values in grid:
            cells *= len(values)
        with st.container(key=K + "plan"):
            st.caption(f"{' × '.join(k for k, _ in grid)}: {cells} cell(s) × {seeds} "
                       f"seed(s) = {cells * seeds} runs of "
                       f"{' vs '.join(a.name or a.rule for a in arms)} on {cfg.data}, "
                       f"{steps} steps each, quality every {every} steps, seeds "
                       f"{cfg.seed}..{cfg.seed + seeds - 1}")
    go = st.button("Run sweep", type="primary", key=K + "start",
                   disabled=cfg is None or grid is None or not where_ok)
    if go:
        _start(cfg.replace(steps=steps, eval_every=every), arms, warmup, grid,
               list(range(cfg.seed, cfg.seed + seeds)), backend, address)
        st.rerun()


def _start(cfg, arms, warmup, grid, seeds, backend, address) -> None:
    run_id = new_run_id(f"sweep-{cfg.data}")
    job = SweepJob(cfg, arms, grid, seeds, sweeps_dir() / run_id, run_id=run_id,
                   warmup_steps=max(0, warmup), backend=backend, address=address)
    try:
        registry().start(job)
    except runs.CapReached as exc:
        flash_error(str(exc))
        return
    st.session_state.pop(CELL_KEY, None)
    LINK.attach(job)


def _open_form() -> None:
    path = st.text_input("Sweep folder", key=K + "open_path",
                         placeholder="the --out folder of python -m core sweep",
                         help=f"Sweeps run on this page are saved in {sweeps_dir()}/<id>")
    if st.button("Open sweep", key=K + "open", disabled=not path.strip()):
        folder = Path(path.strip()).expanduser().resolve()
        try:
            read_sweep(folder)
        except SweepReadError as exc:   # it quotes the path: plain text
            st.error(plain(exc), icon=":material/error:")
            return
        st.session_state.pop(CELL_KEY, None)
        LINK.attach(Target(folder))     # an opened folder: its path is its id
        st.rerun()


# -- the view ---------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def _read(folder: str, sig: tuple) -> SweepGrid:
    """Read again only when a task has finished (the signature changes)."""
    return read_sweep(folder)


def _new(target: Target) -> None:
    if target.job is not None:
        target.job.stop()
    detach()


def controls(target: Target) -> None:
    c1, c2, _ = st.columns([1.2, 1.6, 2])
    if target.job is not None:
        run_view.stop_button(c1, K + "stop", target.job.stop,
                             disabled=not target.job.status.live,
                             note="Stop ends the sweep: no more runs start; the folder "
                                  "keeps what finished.")
    c2.button("New comparison", key=K + "reset", on_click=_new, args=(target,),
              width="stretch")


def progress(target: Target, grid: SweepGrid) -> None:
    keys = " × ".join(f"**{plain(k)}**" for k in grid.keys)
    arms = " vs ".join(plain(a) for a in grid.arms)
    cfg = grid.config
    st.markdown(f"Sweep of {keys} · {arms} on {plain(cfg.get('data', '?'))} · "
                f"{len(grid.seeds)} seed(s) per cell · {cfg.get('steps', '?')} steps · "
                f"folder {code(grid.folder)}")
    job = target.job
    if job is None:
        if grid.finished < grid.total:
            st.caption(f"{grid.finished} of {grid.total} runs have results in this folder.")
        return
    s, eta = job.status, job.eta()
    st.progress(job.finished / job.total if job.total else 0.0,
                text=f"**{s.state}** · {len(job.done)} / {job.total} runs done"
                     + (f" · {len(job.failures)} failed" if job.failures else "")
                     + f" · elapsed {run_view.fmt_time(job.elapsed())}"
                     + (f" · ETA {run_view.fmt_time(eta)}" if eta is not None and s.live
                        else ""))
    if s.state == "failed":
        st.error(plain(s.message), icon=":material/error:")
    elif s.message:
        st.warning(plain(s.message))
    for f in job.failures:
        st.warning(f"{plain(f.task.key)} failed twice: {plain(f.error)}",
                   icon=":material/warning:")


def _picked(key: str, sweep_id: str) -> None:
    """on_select of a grid figure: the clicked point's cell opens (a cleared selection
    leaves the open cell as it is)."""
    points = (st.session_state.get(key) or {}).get("selection", {}).get("points", [])
    for point in points:
        custom = point.get("customdata")
        index = custom[0] if isinstance(custom, (list, tuple)) and custom else custom
        if isinstance(index, (int, float)):
            st.session_state[CELL_KEY] = (sweep_id, int(index))
            return


def figures(target: Target, grid: SweepGrid) -> None:
    metrics = grid.metrics()
    if not metrics:
        st.caption("The grid fills in as runs finish.")
        return
    if not any(m.startswith("q_") for m in metrics):
        st.caption("No quality metric was logged (quality metrics every: past the steps); "
                   "the step metrics are shown.")
    table = grid.table()
    for metric, fig in sweep_charts.sweep_figures(table, grid.grid, grid.arms, metrics,
                                                  [c.label for c in grid.cells]):
        key = f"{K}fig_{metric}"
        st.plotly_chart(fig, key=key, width="stretch", config={"displaylogo": False},
                        on_select=functools.partial(_picked, key, target.run_id),
                        selection_mode="points")
    st.caption("Each cell: the mean over its finished seeds (hover for ± s.e., the spread "
               "and the number of seeds). Click a cell to open its seeds.")


@dataclass
class CellRuns:
    """A cell's seeds in the shape the seed views read (what a SeedJob offers)."""
    run_id: str
    results: dict[int, SeedResult]

    def snapshot(self):
        return dict(self.results), []

    def finals(self) -> dict[int, dict[str, dict]]:
        return {seed: r.finals for seed, r in self.results.items()}


def cell_view(target: Target, grid: SweepGrid) -> None:
    picked = st.session_state.get(CELL_KEY)
    if not picked or picked[0] != target.run_id or not 0 <= picked[1] < len(grid.cells):
        return
    cell = grid.cells[picked[1]]
    st.subheader(f"Cell {cell.label}", anchor=False)
    frames = cell_frames(grid, cell)
    st.caption(f"{len(frames)} of {len(grid.seeds)} seed(s) finished · runs in "
               f"{code(cell.folder)}")
    if not frames:
        return
    runs_ = CellRuns(f"{target.run_id}#{cell.index}", {
        seed: SeedResult(seed, by_arm, cell.finals[seed], 0.0, "", 1, "")
        for seed, by_arm in frames.items()})
    seeds_view.verdict(runs_)
    seeds_view.seed_charts_view(runs_)
    seeds_view.summary(runs_)


def view(target: Target) -> None:
    controls(target)

    def body() -> None:
        try:
            grid = _read(str(target.folder), signature(target.folder))
        except SweepReadError as exc:
            if target.job is not None and not target.folder.exists():
                progress_only(target)
                return
            st.error(plain(exc), icon=":material/error:")
            return
        progress(target, grid)
        for problem in grid.problems:
            st.warning(plain(problem), icon=":material/warning:")
        figures(target, grid)
        cell_view(target, grid)

    if target.job is not None:
        run_view.live_fragment(target.job, body)
    else:
        body()


def progress_only(target: Target) -> None:
    """Before the job has written its folder (or when it failed before that)."""
    s = target.job.status
    st.markdown(f"**{s.state}** · sweep {code(target.job.run_id)}")
    if s.state == "failed":
        st.error(plain(s.message), icon=":material/error:")
