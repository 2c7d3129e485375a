"""GAN RL Lab: `streamlit run app.py`. Router only; the pages are in pages/."""
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="GAN RL Lab", page_icon=":material/science:", layout="wide")

PAGES = Path(__file__).parent / "pages"
pages = [
    st.Page(PAGES / "train.py", title="Train", icon=":material/model_training:", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare:"),
    st.Page(PAGES / "feedback.py", title="Feedback", icon=":material/thumbs_up_down:"),
    st.Page(PAGES / "checkpoints.py", title="Checkpoints", icon=":material/save:"),
]

st.navigation(pages).run()
