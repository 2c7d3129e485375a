"""Compare: update rules side by side, in lockstep, from an identical start."""
import streamlit as st

from ui import compare, live

st.title("Compare update rules")
arena = compare.current()
wanted = st.query_params.get(compare.QUERY_KEY)
if wanted and arena is None:
    st.warning(f"Comparison `{wanted}` is not running in this server (it may have been "
               "restarted). Start a new one.")
    compare.detach()

with st.sidebar:
    if arena is None:
        st.subheader("New comparison")
        cfg, arms, warmup = compare.form()
    else:
        st.subheader("Arms")
        compare.rule_switches(arena)

live.show_flash()
if arena is None:
    compare.start_buttons(cfg, arms, warmup)
    st.info("Every arm starts from the same weights and sees the same batches and z at "
            "every step; only the generator update rule differs. Choose the arms in the "
            "sidebar, then **Start comparison**.")
else:
    compare.controls(arena)
    compare.live_view(arena)
