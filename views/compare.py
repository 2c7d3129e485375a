"""Compare: update rules side by side, in lockstep, from an identical start."""
import streamlit as st

from ui import compare_view, gradient_view, run_view, runs_panel, seeds_view, sweep_view
from ui.text import code

st.title("Compare update rules")
arena = compare_view.current()
wanted = st.query_params.get(compare_view.QUERY_KEY)
if wanted and arena is None:
    st.warning(f"Comparison {code(wanted)} is not running in this server (it may have been "
               "restarted). Start a new one.")
    compare_view.detach()
job = seeds_view.current() if arena is None else None   # many seeds (seeds_view.py)
wanted = seeds_view.requested()
if wanted and arena is None and job is None:
    st.warning(f"Seed comparison {code(wanted)} is not in this server (it may have been "
               "restarted). Start a new one.")
    seeds_view.detach()
sweep = sweep_view.current() if arena is None and job is None else None   # sweep_view.py

with st.sidebar:
    if job is not None or sweep is not None:
        st.caption("A comparison over seeds or a sweep: New comparison to configure "
                   "another.")
    elif arena is None:
        st.subheader("New comparison")
        cfg, arms, warmup = compare_view.form()
        plan = seeds_view.form()
    else:
        st.subheader("Arms")
        compare_view.rule_switches(arena)

run_view.show_flash()
runs_panel.show(next((j.run_id for j in (arena, job) if j is not None), None))
if sweep is not None:
    sweep_view.view(sweep)
elif job is not None:
    seeds_view.job_view(job)
elif arena is None and plan.seeds > 1:
    seeds_view.start_button(cfg, arms, warmup, plan)
    st.info(f"{plan.seeds} seeds: one arena per seed (same weights and batches for every "
            "arm within a seed), run as independent tasks; the charts and the paired "
            "verdict build up as seeds finish.")
    sweep_view.launcher(cfg, arms, warmup)   # or a grid of settings x seeds
elif arena is None:
    compare_view.start_buttons(cfg, arms, warmup)
    st.info("Every arm starts from the same weights and sees the same batches and z at "
            "every step; only the generator update rule differs. Choose the arms in the "
            "sidebar, then **Start comparison**.")
    sweep_view.launcher(cfg, arms, warmup)
else:
    compare_view.controls(arena)
    compare_view.live_view(arena)
    gradient_view.show(arena)   # 2-D data: each sample's update under each rule
