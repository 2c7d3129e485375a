"""Train: configure a run, control it, watch it live."""
import streamlit as st

from ui import guide, run_view, runs, runs_panel, share_link, train_view, widgets
from ui.text import code, plain

st.title("Train")
trainer = runs.current_run()
if trainer is None:
    share_link.offer(train_view.start)   # a shared link's run, first thing on the page
guide.show(full=trainer is None)
wanted = runs.requested_run_id()
if wanted and trainer is None:
    st.warning(f"Run {code(wanted)} is not running in this server (it may have been restarted). "
               "Start a new run, or resume it from a checkpoint on the Checkpoints page.")
    runs.detach()

cfg = None
with st.sidebar:
    if trainer is None:
        st.subheader("New run")
        cfg, _ = widgets.config_form()
    else:
        st.subheader("This run")
        widgets.rule_switch(trainer)
        widgets.config_summary(trainer.cfg)
        if trainer.data.note:   # the user's own points: how they were scaled
            st.caption(plain(trainer.data.note))

run_view.show_flash()
runs_panel.show(trainer.run_id if trainer is not None else None)
train_view.controls(trainer, cfg)
if trainer is None:
    st.info("Choose a data set and settings in the sidebar, then press **Start**.")
else:
    share_link.copy_button(trainer.cfg)
    train_view.live_view(trainer)
