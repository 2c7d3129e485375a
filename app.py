"""GAN RL Lab: `streamlit run app.py`. Router only; the pages are in views/.

Not pages/: Streamlit treats a folder of that name as its own page list, and a first
request straight to /compare then ran that page without this router.
"""
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="GAN RL Lab", page_icon=":material/science:", layout="wide")
# The header shows Streamlit's own "Stop" (stop this script run) on every 1 s refresh
# of the live view, next to the run's Stop, which ends the training: hide that button
# only (the running icon stays). ui.hideTopBar would also drop the main menu and with
# it the theme setting. A style-only st.html takes no space on the page.
st.html("<style>[data-testid='stStatusWidget'] button {display: none}</style>")

PAGES = Path(__file__).parent / "views"
pages = [
    st.Page(PAGES / "train.py", title="Train", icon=":material/model_training:", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare:"),
    st.Page(PAGES / "feedback.py", title="Feedback", icon=":material/thumbs_up_down:"),
    st.Page(PAGES / "checkpoints.py", title="Checkpoints", icon=":material/save:"),
]

st.navigation(pages).run()
