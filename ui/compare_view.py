"""The Compare page's pieces: arena registry, form, controls and live view.

Arenas live in their own process-wide registry (same RunRegistry class as single
runs, behind st.cache_resource), keyed by arena id, with the id in the URL under
"arena", so a reload re-attaches. An arena is one training thread whatever its arm
count; it takes one slot of the same limit as the Train page's runs (runs.slots()).
"""
from __future__ import annotations

import atexit

import pandas as pd
import streamlit as st

from core.base.files import csv_bytes
from core.data.datasets import DATASETS
from core.engine.arena import Arena, ArmSpec
from core.engine.config import PRESETS, ConfigError, TrainConfig, preset
from core.engine.metric_info import METRICS, has_panel
from core.engine.rules import RULES
from core.engine.samples import grid_problem
from core.engine.trainer import new_run_id
from core.jobs.multi_seed import DEFAULT_IMAGE_WARMUP
from ui import charts, finetune_view, live_chart, points_input, run_view, runs, swipe, widgets
from ui.run_view import flash_error
from ui.text import code, plain

QUERY_KEY = "arena"
COMPARED_PARAM = "compared"   # st.query_params: "Compared steps only" is on
SESSION_KEY = "attached_arena"
# The data sets that need no files, 2-D first (they compare in seconds), then the user's own 2-D points (drawn,
# uploaded or a CSV path, the Train form's picker: ui/points_input.py)
DATA_CHOICES = tuple(sorted(DATASETS.names(needs_root=None),
                            key=lambda n: not DATASETS.entry(n).extra.get("is_2d"))) + ("points",)
NO_ARM = "(none)"
K = "cmp_"      # session-state prefix of the form's widgets


@st.cache_resource(show_spinner=False)
def registry() -> runs.RunRegistry:
    runs.configure_torch_threads()
    reg = runs.RunRegistry(slots=runs.slots(), where="Compare page")   # one shared limit
    atexit.register(reg.stop_all)
    return reg


def live_arenas() -> list[Arena]:
    """Comparisons that are running or paused (listed on the Checkpoints page)."""
    return [a for a in registry().runs() if a.status.live]


LINK = runs.RunLink(QUERY_KEY, SESSION_KEY)
attach, detach = LINK.attach, LINK.detach


def current() -> Arena | None:
    arena = registry().get(LINK.requested())
    if arena is not None:
        attach(arena)
    return arena


# -- the form ----------------------------------------------------------------------------
def _warmup_for(data: str) -> int:
    """Digits are compared after a bce warm-up (from random weights every arm draws
    noise for a long while); the 2-D mixtures from the start."""
    return DEFAULT_IMAGE_WARMUP if not DATASETS.entry(data).extra.get("is_2d") else 0


def _warmup_follows_data() -> None:
    """on_change of the data set: the warm-up takes the new data set's default unless
    the person typed another value."""
    state = st.session_state
    before = state.get(K + "warmup_default", 0)
    now = _warmup_for(state[K + "data"])
    if state.get(K + "warmup", before) == before:
        state[K + "warmup"] = now
    state[K + "warmup_default"] = now


def form() -> tuple[TrainConfig | None, list[ArmSpec], int]:
    """Sidebar form: data, arms, shared settings. Returns (cfg or None, arms, warm-up)."""
    data = st.selectbox("Data set", DATA_CHOICES, key=K + "data",
                        on_change=_warmup_follows_data,
                        help="ring8 / grid25: 2-D mixtures (fast, show mode collapse); "
                             "mnist5k: digits, compared after a bce warm-up by default")
    root = ""
    if data == "points":
        root, problem = points_input.picker(K)
        if problem:
            st.info(plain(problem[0].upper() + problem[1:]), icon=":material/draw:")
            return None, [], 0
    if K + "warmup" not in st.session_state:   # the first draw: this data set's default
        st.session_state[K + "warmup"] = st.session_state[K + "warmup_default"] = \
            _warmup_for(data)
    c1, c2 = st.columns(2)
    names = list(RULES)
    rules = [c1.selectbox("Arm 1", names, index=0, key=K + "arm1"),
             c2.selectbox("Arm 2", names, index=1, key=K + "arm2")]
    third = st.selectbox("Arm 3 (optional)", (NO_ARM, *names), key=K + "arm3")
    if third != NO_ARM:
        rules.append(third)
    name = st.selectbox("Preset", list(PRESETS), key=K + "preset",
                        index=list(PRESETS).index("recommended"),
                        help="recommended: settings found to train well on this data set "
                             "(shared by every arm); source: the source document's")
    options = widgets.rule_options(K, rules, "options ({} arms)")
    try:   # the shared section follows the preset and data set, as on the Train page
        widgets.follow_preset(K, widgets.shared_values(preset(name, data=data,
                                                              data_root=root)))
    except ConfigError:
        pass
    shared = widgets.fairness_options(K)
    c1, c2 = st.columns(2)
    steps = c1.number_input("Compared steps (0 = until stopped)", value=3000, step=500,
                            key=K + "steps",
                            help="Per arm, after any warm-up: every arm takes each "
                                 "compared step on the same batch")
    seed = c2.number_input("Seed", value=0, step=1, key=K + "seed")
    warmup = c1.number_input("bce warm-up steps", step=500, key=K + "warmup",
                             help="Train one bce run this long, then fork every arm from "
                                  "it (RL fine-tuning of a pretrained GAN)")
    sample_every = c2.number_input("Sample every", value=100, step=50, key=K + "sample_every")
    batch = c1.number_input("Batch size (0 = preset)", value=0, step=64, key=K + "batch")
    changes = {"data": data, "data_root": root, "steps": int(steps), "seed": int(seed),
               "sample_every": int(sample_every), **options, **shared}
    if batch:
        changes["batch_size"] = int(batch)
    try:
        cfg = preset(name, **changes)
    except ConfigError as exc:
        st.error(f"Invalid setting: {exc}", icon=":material/error:")
        return None, [], 0
    return cfg, [ArmSpec(r) for r in rules], int(warmup)


# -- controls ----------------------------------------------------------------------------
def _start(cfg: TrainConfig, arms: list[ArmSpec], warmup: int) -> None:
    try:
        arena = Arena(cfg, arms, warmup_steps=max(0, warmup),
                      run_id=new_run_id(f"arena-{cfg.data}"))
        registry().start(arena)
    except runs.CapReached as exc:
        flash_error(str(exc))
        return
    except Exception as exc:
        flash_error(f"Could not start: {exc}")
        return
    attach(arena)


def start_buttons(cfg: TrainConfig | None, arms: list[ArmSpec], warmup: int) -> None:
    # Plain buttons, not on_click callbacks: a callback's args are the config of the
    # previous run, so a value typed just before the click would be missed.
    row = st.container(horizontal=True, key="cmp_start_row")   # wraps, never cuts labels
    start = row.button("Start comparison", type="primary", key="cmp_start",
                       disabled=cfg is None)
    warm = row.button("Warm up with bce, then compare", key="cmp_warm", disabled=cfg is None,
                      help="One bce run first (the warm-up steps above, or "
                           f"{DEFAULT_IMAGE_WARMUP}), then every arm forks from it")
    if start or warm:
        _start(cfg, arms, warmup if start else (warmup or DEFAULT_IMAGE_WARMUP))
        st.rerun()


def _reset(arena: Arena) -> None:
    arena.stop()
    detach()


def _save(arena: Arena) -> None:
    from ui.checkpoints import checkpoint_dir
    try:
        path = arena.save_checkpoint(folder=checkpoint_dir() / arena.run_id)
        st.session_state["cmp_saved"] = str(path)
    except RuntimeError as exc:
        flash_error(str(exc))


def controls(arena: Arena) -> None:
    cols = run_view.button_row("cmp_row")
    run_view.run_buttons(cols, arena, registry(), "cmp",
                         "One lockstep step of every arm while paused")
    cols[3].button("New comparison", key="cmp_reset", on_click=_reset, args=(arena,),
                   width="stretch", help="Stop these arms and configure new ones")
    cols[4].button("Save checkpoint", key="cmp_save", on_click=_save, args=(arena,),
                   disabled=arena.warming_up, width="stretch",
                   help="One file with every arm (extract an arm with python -m core extract)")
    saved = st.session_state.pop("cmp_saved", None)
    if saved:
        st.toast(f"Saved {plain(saved)}")


def rule_switches(arena: Arena) -> None:
    """Sidebar: switch an arm's rule mid-run (leaves a marker on that arm's traces)."""
    for name, arm in arena.arms.items():
        key = f"cmp_rule_{arena.run_id}_{name}"
        st.session_state.setdefault(key, arm.cfg.rule)
        st.selectbox(f"Arm **{plain(name)}** rule", list(RULES), key=key,
                     disabled=not arena.status.live or arena.warming_up,
                     on_change=lambda n=name, k=key: arena.set_rule(n, st.session_state[k]))


# -- the live view -------------------------------------------------------------------------
def status(arena: Arena) -> None:
    s = arena.status
    arms = " vs ".join(f"**{plain(n)}**" for n in arena.arms)
    with st.container(key="cmp_status_line"):
        st.markdown(f"**{s.state}** · step **{s.step:,}** · {s.steps_per_s:,.0f} lockstep "
                    f"steps/s · {arms} on {plain(arena.cfg.data)} · "
                    f"arena {code(arena.run_id)}",
                    help="Each step trains every arm once on the same batch and z")
    # one count throughout: compared steps per arm (every arm takes each lockstep step),
    # the warm-up counted on its own; the status line's step is the global one
    if arena.warming_up:
        st.progress(min(1.0, s.step / max(1, arena.warmup_steps)),
                    text=f"bce warm-up: {s.step:,} / {arena.warmup_steps:,} steps, then "
                         + (f"{arena.cfg.steps:,} compared steps per arm"
                            if arena.cfg.steps else "compared steps until stopped"))
    elif arena.cfg.steps:
        done = max(0, s.step - arena.fork_step)
        st.progress(min(1.0, done / arena.cfg.steps),
                    text=f"{done:,} / {arena.cfg.steps:,} compared steps per arm"
                         + (f" (after the fork at step {arena.fork_step:,})"
                            if arena.fork_step else ""))
    run_view.state_message(arena)
    hashes = arena.hashes()
    same = len(set(hashes["init"].values())) == 1
    init = " · ".join(f"{plain(n)} {code(h)}" for n, h in hashes["init"].items())
    start = "the warm-up" if arena.fork_step else "step 0"
    st.caption(f"Initial weights ({start}): {init} "
               f"{'— identical' if same else '— DIFFERENT'} · one batch stream "
               f"{code(hashes['batches'] or '-')} feeds every arm")
    st.caption(run_view.fairness_caption(arena.cfg))
    run_view.quality_notice(arena.active_runs()[0])


def _events(arena: Arena) -> list[tuple[int, str]]:
    out = set()
    for name, arm in arena.arms.items():
        for step, text in list(arm.log.events):
            out.add((step, text if "fork" in text or "from " in text else f"{name}: {text}"))
    return sorted(out)


HISTORY_COLOR = "#999999"   # the shared history before the arms fork: no arm's colour


def _sources(arena: Arena, compared_only: bool) -> list[live_chart.Source]:
    """The warm-up (or the forked run's past) in grey, then one colour per arm from the
    fork on, each arm's line starting at the fork point."""
    history = f"{arena.run_id}:history"
    warmup = arena.warmup   # read once: the training thread sets it to None at the fork
    if warmup is not None:
        return [live_chart.Source(history, "warm-up (bce)", warmup.log, HISTORY_COLOR)]
    first = next(iter(arena.arms.values()))
    fork_row = first.log.row_of_step(arena.fork_step) if arena.fork_step else 0
    out = []
    if fork_row and not compared_only:
        out.append(live_chart.Source(history, "before the fork", first.log, HISTORY_COLOR,
                                     end_row=fork_row))
    for i, (name, arm) in enumerate(arena.arms.items()):
        out.append(live_chart.Source(f"{arena.run_id}:{name}", name, arm.log,
                                     charts.PALETTE[i % len(charts.PALETTE)],
                                     first_row=max(0, fork_row - 1)))
    return out


def metric_charts(arena: Arena, smoothing: float, compared_only: bool) -> None:
    # active_runs: during a warm-up the arms' logs are still empty; the warm-up's has
    # the columns (else every chart stayed blank until the fork)
    columns = {c for run in arena.active_runs() for c in run.log.columns}
    if not live_chart.metric_charts("cmp_chart_", _sources(arena, compared_only), columns,
                                    smoothing=smoothing, events=_events(arena),
                                    group="compare"):
        st.caption("Charts appear after the first steps.")
    if has_panel(columns, "overopt"):
        overopt(arena)
    run_view.quality_notes(columns, arena.active_runs()[0].log)


def overopt(arena: Arena) -> None:
    """The rlhf over-optimisation chart, one line per rlhf arm (every arm is passed, in
    the arena's order, so each keeps its colour; an arm without the metrics draws
    nothing). Rebuilt only when an arm's evaluation lands."""
    key = f"cmp_overopt_{arena.run_id}"
    rows = tuple(str(arm.log.last_row([m for m in charts.OVEROPT if m in arm.log.columns]))
                 for arm in arena.arms.values())
    got = st.session_state.get(key)
    if got is None or got[0] != rows:
        arms = {name: arm.log.decimated(list(charts.OVEROPT), charts.MAX_POINTS)
                for name, arm in arena.arms.items()}
        got = (rows, charts.overoptimisation_figure(arms))
        st.session_state[key] = got
    st.plotly_chart(got[1], key="cmp_chart_overopt", width="stretch",
                    config={"displaylogo": False})


def table_columns(latest: dict) -> list[str]:
    """Step metrics in the registry's order (undeclared ones after), then quality."""
    step = [m for m in METRICS if m in latest and not m.startswith(charts.QUALITY_PREFIX)]
    other = sorted(c for c in latest if c not in METRICS and c != "step"
                   and not c.startswith(charts.QUALITY_PREFIX))
    return step + other + charts.quality_columns(latest)


def verdict(arena: Arena) -> str | None:
    """Which arm leads on each quality measure that has a better direction, at the
    latest evaluation all arms share, in words (None before the first one)."""
    latest = {}
    for name, arm in arena.arms.items():   # the last evaluation, not a copy of the log
        q = [c for c in charts.quality_columns(arm.log.columns)
             if METRICS.get(c) and METRICS.entry(c).better]
        row = arm.log.last_row(q)
        if row is None:
            return None
        latest[name] = row
    steps = {row["step"] for row in latest.values()}
    common = [c for c in charts.quality_columns(next(iter(latest.values())))
              if METRICS.get(c) and METRICS.entry(c).better
              and all(c in row and pd.notna(row[c]) for row in latest.values())]
    if not common or len(steps) != 1:
        return None
    wins: dict[str, list[str]] = {name: [] for name in latest}
    parts = []
    for c in common:
        entry = METRICS.entry(c)
        values = {n: float(row[c]) for n, row in latest.items()}
        best = (max if entry.better == "higher" else min)(values, key=values.get)
        if list(values.values()).count(values[best]) == 1:
            wins[best].append(entry.title)
        parts.append(f"{entry.title} {' vs '.join(f'{v:.3g}' for v in values.values())}")
    leader = max(wins, key=lambda n: len(wins[n]))
    head = (f"**{leader}** leads on {len(wins[leader])} of {len(common)} quality measures"
            if wins[leader] else "No arm leads on any quality measure")
    return (f"{head} at step {steps.pop():,} ({', '.join(parts)}; arms in the order "
            f"{', '.join(latest)}). One seed: run several (python -m core compare --seeds "
            "N) before trusting a gap.")


def latest_table(arena: Arena) -> pd.DataFrame:
    rows = {}
    for name, arm in arena.arms.items():
        latest = arm.log.latest()
        row = {"rule": arm.cfg.rule, "step": f"{int(latest.get('step', 0)):,}"}
        for col in table_columns(latest):
            if col in latest:
                row[col] = f"{latest[col]:.4g}"   # strings: one column mixes kinds
        rows[name] = row
    table = pd.DataFrame(rows)   # metrics down, arms across: fits a narrow column
    # "—" where an arm does not log a metric (bce has no grad_cosine), not "None"
    return table.fillna("—").rename_axis("metric").reset_index()


# Each arm's grid at least 440 px (a digit ~2x its 28 px); a row holds as many as fit,
# so two arms share a row at 1400 px and each has its own at 800 px. A style-only
# st.html takes no space.
# Each arm sits in the row's own flex item (a stLayoutWrapper).
GRID_STYLE = ("<style>.st-key-cmp_grids > [data-testid='stLayoutWrapper'] {flex: 1 1 440px; "
              "min-width: min(440px, 100%); max-width: 640px}</style>")


def samples(arena: Arena) -> int | None:
    """The arms' grids (and the A/B swipe) at the one snapshot step; returns that step
    while the person browses the history, None while following the latest."""
    arms = arena.arms
    warm = arena.warmup   # read once: the training thread drops it at the fork
    if warm is not None:
        warmup_samples(arena, warm)
        return None
    steps = sorted(set().union(*(a.snapshots.steps() for a in arms.values())))
    if not steps:
        st.caption("No samples yet.")
        return None
    follow_key, step_key = f"cmp_follow_{arena.run_id}", f"cmp_snap_{arena.run_id}"
    # Defaults live in the widgets (value=True), never in session_state: in a live
    # browser a widget whose state was pre-set could come back at its own default
    # (follow off, first step) and stick there. The checkbox has its own row: beside
    # the slider, in this narrow column, its label was cut to "Foll...".
    follow = st.checkbox("Follow latest", value=True, key=follow_key)
    label, tip = "Snapshot step (all arms)", "Untick Follow latest to browse the history"
    if follow or len(steps) == 1:
        step = steps[-1]
        if len(steps) > 1:   # display only, keyless: it moves with the newest snapshot
            st.select_slider(label, options=steps, value=step, disabled=True, help=tip)
    else:
        if st.session_state.get(step_key) not in steps:
            st.session_state[step_key] = steps[-1]
        step = st.select_slider(label, options=steps, key=step_key, help=tip)
    real = arena.data.x[:1000].float().cpu().numpy() if not arena.data.is_image else None
    st.html(GRID_STYLE)
    row = st.container(horizontal=True, key="cmp_grids")
    for name, arm in arms.items():
        snap = arm.snapshots.at_step(step)
        with row.container(key=f"cmp_grid_{name}"):
            if snap is None:
                st.caption(f"{plain(name)}: no samples yet")
            elif snap.png is not None and (problem := grid_problem(snap)):
                # a resumed arena's grids come from its file: a damaged one is one line
                st.error(plain(f"{name}: {problem}"), icon=":material/broken_image:")
            elif snap.png is not None:
                st.image(snap.png, caption=f"{name} ({arm.cfg.rule}) at step {snap.step:,}",
                         width="stretch")
            else:
                live_chart.toy_picture(f"cmp_toy_{name}", f"{arena.run_id}:{name}", snap,
                                       real, f"{name} · step {snap.step:,}")
    if real is not None:
        st.caption("Black: real points (on top) · orange: each arm's samples on the same "
                   "fixed z · background: that arm's D(x), blue = D says fake, red = real")
    elif len(arms) > 1:
        ab_swipe(arena, step)
    return None if follow or len(steps) == 1 else step


def warmup_samples(arena: Arena, warm) -> None:
    """The warm-up's latest samples: the one generator every arm will start from."""
    snap = warm.snapshots.latest()
    if snap is None:
        st.caption(f"bce warm-up: the first samples come at step {arena.cfg.sample_every:,}")
        return
    caption = (f"bce warm-up at step {snap.step:,}: every arm starts from this generator "
               f"at step {arena.warmup_steps:,}")
    if snap.png is not None:
        with st.container(key="cmp_grid_warmup"):
            st.image(snap.png, caption=caption, width=460)
    else:
        live_chart.toy_picture("cmp_toy_warmup", f"{arena.run_id}:warmup", snap,
                               arena.data.x[:1000].float().cpu().numpy(), caption)


def ab_swipe(arena: Arena, step: int) -> None:
    """Two arms' grids at the slider's step in one frame, a divider to drag between
    them (ui/swipe.py); the first two arms unless the person picks others."""
    names = list(arena.arms)
    a, b = names[:2]
    if len(names) > 2:
        row = st.container(horizontal=True, key="cmp_swipe_pick")
        a = row.selectbox("Swipe: A (left)", names, index=0, key="cmp_swipe_a", width=220)
        b = row.selectbox("B (right)", names, index=1, key="cmp_swipe_b", width=220)
    snaps = [arena.arms[n].snapshots.at_step(step) for n in (a, b)]
    if any(s is None or s.png is None or grid_problem(s) for s in snaps):
        return   # the grids above say what is missing or damaged
    st.markdown("**A/B swipe, same z**", help="Drag the divider (or focus the picture and "
                "use the arrow keys): left of it arm A, right of it arm B, both at the "
                "snapshot step above")
    swipe.swipe("cmp_swipe", *(swipe.Side(f"{side}: {n} · step {s.step:,}", s.png)
                               for side, n, s in zip("AB", (a, b), snaps)))


def downloads(arena: Arena) -> None:
    from core.io.checkpoint import to_bytes
    row = st.container(horizontal=True, key="cmp_downloads")   # wraps at 800 px
    for name in arena.arms:
        row.download_button(f"{name} as a single run", key=f"cmp_dl_{name}",
                            data=lambda n=name: to_bytes(arena.arm_state(n)),
                            file_name=f"{arena.run_id}_{name}_step_{arena.step_count}.safetensors",
                            on_click="ignore",
                            disabled=arena.status.state == "running" or arena.warming_up,
                            help="Pause first. Resume or sample it on the Checkpoints page "
                                 "or with python -m core train --resume")
    row.download_button(
        "Metrics CSV (all arms)", key="cmp_csv", mime="text/csv", on_click="ignore",
        file_name=f"{arena.run_id}_metrics.csv",
        data=lambda: all_arms_csv(arena))


def all_arms_csv(arena: Arena) -> bytes:
    """Every arm's full metric log in one CSV with an `arm` column (built on click)."""
    frames = [a.log.to_frame().assign(arm=n) for n, a in arena.arms.items()]
    return csv_bytes(pd.concat(frames))


def live_view(arena: Arena) -> None:
    # one wrapping row: at 800 px a fixed column cut the toggle's label ("Compar...")
    row = st.container(horizontal=True, vertical_alignment="bottom", key="cmp_view_row")
    smoothing = row.slider("EMA smoothing", 0.0, 0.99, 0.9, 0.01, key="cmp_smoothing",
                           help="Raw values faint, smoothed bold; one colour per arm, the "
                           "history before the fork in grey")
    # kept in the URL too, so a reload keeps it (a new session starts from the URL)
    if "cmp_compared_only" not in st.session_state and st.query_params.get(COMPARED_PARAM):
        st.session_state["cmp_compared_only"] = True
    compared_only = row.toggle("Compared steps only", key="cmp_compared_only",
                               width="content",
                               help="Hide the warm-up (or the forked run's past)")
    if compared_only and st.query_params.get(COMPARED_PARAM) != "1":
        st.query_params[COMPARED_PARAM] = "1"
    elif not compared_only and COMPARED_PARAM in st.query_params:
        del st.query_params[COMPARED_PARAM]

    warming = arena.warming_up   # what the sidebar and the buttons were drawn for

    def body() -> None:
        if arena.warming_up != warming:
            # the fork: the sidebar's rule switches, Save checkpoint and the downloads
            # outside this fragment were drawn disabled for the warm-up; redraw them
            st.rerun()
        status(arena)
        left, right = run_view.side_by_side("cmp_split", 340)
        with left:
            metric_charts(arena, smoothing, compared_only)
        with right:
            said = verdict(arena)
            if said:
                st.info(said, icon=":material/balance:")
            st.markdown("**Latest metrics per arm**")
            table = latest_table(arena)
            st.dataframe(table, key="cmp_table", width="stretch", hide_index=True,
                         height=35 * (len(table) + 1) + 3,   # every row, no scrolling
                         column_config={"metric": st.column_config.TextColumn(width=130)})
        # the grids full width below the split: in the 340 px column a digit was ~19 px
        step = samples(arena)
        finetune_view.warnings(arena)
        finetune_view.base_vs_tuned(arena, step)

    run_view.live_fragment(arena, body)
    downloads(arena)
