"""The Compare page's many-seed mode: one arena per seed, run as independent tasks
(core/jobs/backends.py: a local process pool or a Ray cluster) from a background thread
(core/jobs/seed_job.py), drawn as the seeds finish.

Jobs live in their own process-wide registry, like arenas, with the job id in the
URL under "seeds", so a reload or a second tab re-attaches. A job takes one slot of
the shared limit on running trainings (runs.slots()) while it runs.
"""
from __future__ import annotations

import atexit
import importlib.util
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from core.data.datasets import DATASETS
from core.engine.config import TrainConfig
from core.engine.trainer import new_run_id
from core.jobs.backends import RAY_REQUIREMENTS, RunnerError, parse_address
from core.jobs.multi_seed import FINAL_WINDOW, summarize, wide_table
from core.jobs.seed_job import SeedJob
from core.quality import paired
from ui import charts, run_view, runs, seed_charts
from ui.run_view import flash_error
from ui.text import code, plain

QUERY_KEY = "seeds"
SESSION_KEY = "attached_seeds"
K = "cmp_"
MAX_SEEDS = 100
ON_POOL = "this machine (process pool)"
ON_RAY = "Ray cluster"
BACKEND_OF = {ON_POOL: "local", ON_RAY: "ray"}


@st.cache_resource(show_spinner=False)
def registry() -> runs.RunRegistry:
    reg = runs.RunRegistry(slots=runs.slots(), where="Compare page (seeds)")
    atexit.register(reg.stop_all)
    return reg


LINK = runs.RunLink(QUERY_KEY, SESSION_KEY)
detach = LINK.detach


def requested() -> str | None:
    return LINK.requested()


def current() -> SeedJob | None:
    job = registry().get(LINK.requested())
    if job is not None:
        LINK.attach(job)
    return job


@dataclass(frozen=True)
class Plan:
    seeds: int
    backend: str = "local"
    address: str | None = None
    eval_every: int = TrainConfig.eval_every
    ok: bool = True


# -- the form -----------------------------------------------------------------------------
def form() -> Plan:
    """Sidebar: how many seeds, and where they run (1 seed: the live arena)."""
    n = int(st.number_input("Seeds", min_value=1, max_value=MAX_SEEDS, value=1, step=1,
                            key=K + "seeds",
                            help="1: one live arena you can pause and step. More: one "
                                 "arena per seed (the seed above is the first), run as "
                                 "independent tasks, with mean ± s.e. and a paired "
                                 "verdict over seeds"))
    if n == 1:
        return Plan(1)
    # the verdict judges quality metrics, so their interval is asked for here
    eval_every = int(st.number_input(
        "Quality metrics every (steps)", min_value=1, value=TrainConfig.eval_every,
        step=500, key=K + "seeds_eval_every",
        help="Each seed's quality is its last evaluation: make the step budget a "
             "multiple of this"))
    backend, address, ok = where_to_run(K)
    return Plan(n, backend, address, eval_every, ok)


def where_to_run(prefix: str) -> tuple[str, str | None, bool]:
    """(backend, Ray address, ok): the process pool or Ray, checked before a job starts
    (the sweep form asks the same, with its own prefix)."""
    where = st.radio("Run on", (ON_POOL, ON_RAY), key=prefix + "backend", horizontal=True,
                     help="Process pool: one worker per CPU core of this server. Ray: "
                          "a running cluster (ray start --head), or a local Ray")
    if where == ON_POOL:
        return "local", None, True
    address = st.text_input("Ray address", key=prefix + "ray_address",
                            placeholder="auto or HOST:PORT; empty starts a local Ray",
                            help="auto: the cluster `ray start` runs on this machine; "
                                 "HOST:PORT: the head node's address").strip()
    if importlib.util.find_spec("ray") is None:
        st.error(f"Ray is not installed here: pip install -r {RAY_REQUIREMENTS}",
                 icon=":material/error:")
        return "ray", address or None, False
    if address and address != "auto":
        try:
            parse_address(address)     # a malformed one is refused here, not by the job
        except RunnerError as exc:     # the message quotes the address: plain text
            st.error(plain(exc), icon=":material/error:")
            return "ray", None, False
    return "ray", address or None, True


def start_button(cfg: TrainConfig | None, arms: list, warmup: int, plan: Plan) -> None:
    first = cfg.seed if cfg is not None else 0
    go = st.button(f"Run {plan.seeds} seeds", type="primary", key=K + "seeds_start",
                   disabled=cfg is None or not plan.ok,
                   help=f"Seeds {first}..{first + plan.seeds - 1}, one arena each")
    if go:
        _start(cfg, arms, warmup, plan)
        st.rerun()


def _start(cfg: TrainConfig, arms: list, warmup: int, plan: Plan) -> None:
    cfg = cfg.replace(eval_every=plan.eval_every)
    job = SeedJob(cfg, arms, list(range(cfg.seed, cfg.seed + plan.seeds)),
                  run_id=new_run_id(f"seeds-{cfg.data}"), warmup_steps=max(0, warmup),
                  backend=plan.backend, address=plan.address)
    try:
        registry().start(job)
    except runs.CapReached as exc:
        flash_error(str(exc))
        return
    LINK.attach(job)


# -- the view -------------------------------------------------------------------------------
def _new(job: SeedJob) -> None:
    job.stop()
    _FIGURES.pop(job.run_id, None)
    detach()


def controls(job: SeedJob) -> None:
    c1, c2, _ = st.columns([1.2, 1.6, 2])
    run_view.stop_button(c1, K + "seeds_stop", job.stop, disabled=not job.status.live,
                         note="Stop ends the job: no more seeds start, and the seeds "
                              "still running are not shown.")
    c2.button("New comparison", key=K + "seeds_reset", on_click=_new, args=(job,),
              width="stretch")


def progress(job: SeedJob) -> None:
    s = job.status
    where = {"local": "this machine's process pool",
             "ray": f"Ray at {code(job.address)}" if job.address else "a local Ray"}
    arms = " vs ".join(f"**{plain(a)}**" for a in job.arm_names)
    st.markdown(f"**{s.state}** · {arms} on {plain(job.cfg.data)} · {job.total} seeds × "
                f"{budget(job)} on {where.get(job.backend, job.backend)} · "
                f"job {code(job.run_id)}")
    eta = job.eta()
    failed = len(job.failures)
    inside = job.seed_progress() if s.live else {}
    # seeds still training count by their steps, so the bar moves before one finishes
    partial = sum(seed_fraction(*p) for p in inside.values())
    st.progress(min(1.0, (job.finished + partial) / job.total) if job.total else 0.0,
                text=f"{len(job.results)} / {job.total} seeds done"
                     + (f" · {failed} failed" if failed else "")
                     + f" · elapsed {run_view.fmt_time(job.elapsed())}"
                     + (f" · ETA {run_view.fmt_time(eta)}" if eta is not None and s.live
                        else ""))
    for seed, p in inside.items():
        st.progress(seed_fraction(*p), text=f"Seed {seed}: {seed_steps_text(*p)}")
    # messages quote the Ray address and task errors: plain text, never a link or image
    if s.state == "failed":
        st.error(plain(s.message), icon=":material/error:")
    elif s.message:
        st.warning(plain(s.message))
    for f in sorted(job.failures, key=lambda f: f.task.seed):
        st.warning(f"Seed {f.task.seed} failed twice ({f.attempts} attempts): "
                   f"{plain(f.error)}", icon=":material/warning:")
    for r in job.snapshot()[0].values():
        if r.message:
            st.caption(f"Seed {r.seed}: {plain(r.message)}")


def budget(job: SeedJob) -> str:
    """Each seed's budget in the Compare page's one count: compared steps per arm."""
    warm = (f" after a {job.warmup_steps:,}-step bce warm-up" if job.warmup_steps else "")
    return f"{job.cfg.steps:,} compared steps per arm{warm}"


def seed_fraction(step: int, warmup: int, steps: int) -> float:
    """How far one seed is: its global step over the warm-up plus compared steps."""
    return min(1.0, step / (warmup + steps)) if warmup + steps else 0.0


def seed_steps_text(step: int, warmup: int, steps: int) -> str:
    if step < warmup:
        return f"bce warm-up {step:,} / {warmup:,} steps"
    return f"{step - warmup:,} / {steps:,} compared steps per arm"


def verdict(job: SeedJob) -> None:
    finals = job.finals()
    if not finals:
        return
    arms = list(next(iter(finals.values())))
    results = paired.verdicts(finals, arms)
    if not results:
        st.caption("No quality metric with a direction was logged yet (eval_every).")
        return
    st.info(paired.summary_line(results), icon=":material/balance:")
    st.dataframe(pd.DataFrame(paired.table_rows(results)), key=K + "seeds_verdict",
                 hide_index=True, width="stretch")
    st.caption(f"Paired by seed: each arm minus **{plain(arms[0])}**, on each seed's final "
               f"value (quality: the last evaluation); 95% CI: bootstrap of the mean "
               f"difference over seeds. \"within noise\": the interval contains 0.")


def summary(job: SeedJob) -> None:
    finals = job.finals()
    if not finals:
        return
    by_arm: dict[str, list[dict]] = {}
    for by in finals.values():
        for arm, values in by.items():
            by_arm.setdefault(arm, []).append(values)
    table = summarize(by_arm)
    if len(table):
        st.markdown(f"**Final values**, mean ± s.e. over {len(finals)} seed(s) "
                    f"(step metrics: last-{FINAL_WINDOW}-step mean)")
        wide = wide_table(table).rename(columns=charts.metric_title)   # labels, not q_ names
        st.dataframe(wide.reset_index(), key=K + "seeds_summary",
                     hide_index=True, width="stretch")


_FIGURES: dict[str, tuple[tuple, list]] = {}   # job id -> (seeds drawn, figures)


def _figures(job: SeedJob, results: dict) -> list:
    """Rebuilt only when a seed has arrived: the view polls every second."""
    drawn, figures = _FIGURES.get(job.run_id, ((), []))
    if drawn != tuple(results):
        by_arm: dict[str, dict[int, pd.DataFrame]] = {}
        for seed, r in results.items():
            for arm, frame in r.frames.items():
                by_arm.setdefault(arm, {})[seed] = frame
        figures = seed_charts.seed_figures(by_arm)
        _FIGURES[job.run_id] = (tuple(results), figures)
        for gone in set(_FIGURES) - {j.run_id for j in registry().runs()}:
            _FIGURES.pop(gone, None)     # jobs the registry has let go
    return figures


def seed_charts_view(job: SeedJob) -> None:
    results = job.snapshot()[0]
    if not results:
        st.caption("Charts appear as seeds finish.")
        return
    figures = _figures(job, results)
    cols = st.columns(2)
    for i, (metric, fig) in enumerate(figures):
        cols[i % 2].plotly_chart(fig, key=f"{K}seeds_chart_{metric}", width="stretch",
                                 config={"displaylogo": False})
    st.caption("Bold: the mean over finished seeds, band ± one standard error; thin: "
               "each seed.")
    final_samples(job, results)


def final_samples(job: SeedJob, results: dict) -> None:
    """Each arm's last samples on one finished seed (2-D: over the real points)."""
    shown = {seed: r for seed, r in results.items() if r.png}
    if not shown:
        return
    seed = st.selectbox("Final samples of seed", list(shown), key=K + "seeds_png_seed",
                        help="Each arm's samples at the end of that seed's run")
    st.image(shown[seed].png, width="stretch",
             caption=f"Seed {seed}: each arm's samples on the same fixed z at its last step")
    if DATASETS.entry(job.cfg.data).extra.get("is_2d"):
        st.caption("Grey: real points · red: that arm's samples · blue shading: that "
                   "arm's D(x), darker = D says real")


def log_lines(job: SeedJob) -> None:
    with st.expander("Runner log"):
        st.code("\n".join(job.lines[-40:]) or "(nothing yet)", language=None)


def job_view(job: SeedJob) -> None:
    controls(job)

    def body() -> None:
        progress(job)
        verdict(job)
        seed_charts_view(job)
        summary(job)
        log_lines(job)

    run_view.live_fragment(job, body)
