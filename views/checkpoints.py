"""Checkpoints: save and download runs, upload a file, resume / fine-tune / sample."""
import streamlit as st

from ui import checkpoints as ck
from ui import compare_view, run_view, runs
from ui.text import code, plain

st.title("Checkpoints")
registry = runs.registry()
any_live = any(t.status.live for t in registry.runs()) or bool(compare_view.live_arenas())


@st.fragment(run_every=run_view.POLL_S if any_live else None)
def runs_in_memory() -> None:
    trainers, arenas = registry.runs(), compare_view.registry().runs()   # finished too
    if not trainers and not arenas:
        st.caption("No runs in this server yet: start one on the Train or Compare page.")
    for t in trainers:
        ck.run_card(t, f"rule {plain(t.cfg.rule)} · data {plain(t.cfg.data)}")
    for a in arenas:
        ck.run_card(a, f"comparison {plain(' vs '.join(a.arms))} · data {plain(a.cfg.data)} "
                       "(one file with every arm)", warming_up=a.warming_up)
    if any_live and not any(t.status.live for t in [*trainers, *arenas]):
        st.rerun()   # the last one ended: stop polling


st.subheader("Runs in this server")
runs_in_memory()

st.subheader("Saved checkpoints")
files = ck.checkpoint_files()
if not files:
    st.caption(f"No checkpoints in {code(ck.checkpoint_dir())} yet: use Save now above.")
else:
    root = ck.checkpoint_dir()
    with st.container(key="checkpoint_table"):
        st.dataframe(ck.table(files), hide_index=True)
        st.caption(f"{len(files)} checkpoint file(s) in {code(root)}")
    path = st.selectbox("Checkpoint", files, key="checkpoint_file",
                        format_func=lambda p: str(p.relative_to(root)))
    state, error, note = ck.load_file_noted(str(path), path.stat().st_mtime_ns)
    if error:
        st.error(plain(error), icon=":material/error:")
    else:
        if note:   # an old .pt file: same note as for an upload
            st.info(plain(note), icon=":material/info:")
        name = ck.download_name(state.get("run_id") or path.parent.name, int(state["step"]),
                                path.suffix)
        # in the actions' row: one row of actions for the file, not two
        ck.actions(state, key="file", download=lambda row: row.download_button(
            "Download this checkpoint", data=path.read_bytes, key="dl_file",
            file_name=name, on_click="ignore"))

st.subheader("Upload a checkpoint")
upload = st.file_uploader("A .safetensors (or old .pt) file saved by GAN RL Lab",
                          type=[s.lstrip(".") for s in ck.CHECKPOINT_SUFFIXES], key="upload")
if upload is not None:
    state, error = ck.load_upload(upload)
    if error:
        st.error(f"Not loaded: {plain(error)}", icon=":material/error:")
    else:
        st.success(f"{plain(upload.name)} is a valid checkpoint.", icon=":material/check:")
        if note := ck.upload_note(upload):
            st.info(plain(note), icon=":material/info:")
        ck.actions(state, key="upload")
