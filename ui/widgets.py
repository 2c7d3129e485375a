"""The run configuration form -> core.config.TrainConfig.

Validation is core's: the form builds the config with `preset(...)` and shows a
ConfigError message right under the form, naming the field. Widgets use loose
bounds on purpose so that core, not the widget, is the single source of the rules.
"""
from __future__ import annotations

import dataclasses

import streamlit as st

from core.config import D_SEES, DEVICE_NAMES, PRESETS, ConfigError, TrainConfig, preset
from core.data import DATASETS
from core.registry import Registry
from core.rules import RULES
from core.rules.base import option_fields
from ui.text import plain


DEFAULT_PRESET = "recommended"
KEY = "cfg_"   # session-state prefix of every form widget


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
        for name, value in _preset_values(DEFAULT_PRESET, next(iter(DATASETS))).items():
            st.session_state[KEY + name] = value


def _option_input(f: dataclasses.Field, key: str):
    """One input for a rule option, drawn from its dataclass field and metadata."""
    meta = f.metadata
    label, help_text, choices = meta.get("label", f.name), meta.get("help") or None, meta.get("choices")
    if choices is not None:
        names = list(choices)
        fmt = (lambda n: choices.entry(n).title) if isinstance(choices, Registry) else str
        return st.selectbox(label, names, index=names.index(f.default), key=key,
                            format_func=fmt, help=help_text)
    if f.type in ("str", str):
        return st.text_input(label, value=f.default, key=key, help=help_text)
    if f.type in ("bool", bool):
        return st.checkbox(label, value=f.default, key=key, help=help_text)
    if f.type in ("int", int):
        return int(st.number_input(label, value=f.default, step=1, key=key, help=help_text))
    return float(st.number_input(label, value=float(f.default), format="%.4g", key=key,
                                 help=help_text))


def rule_options(key: str, rules, title: str = "{} options") -> dict:
    """An expander of inputs per rule in `rules` that has options, drawn from the rule's
    options dataclass (a new rule needs no form code). Widget keys are
    key + '<rule>_<option>'; returns preset() changes '<rule>.<option>' for the values
    that differ from the defaults."""
    changes = {}
    for rule in dict.fromkeys(rules):
        fields = option_fields(RULES[rule].Options)
        if not fields:
            continue
        with st.expander(title.format(RULES.entry(rule).title), expanded=False):
            for f in fields:
                value = _option_input(f, f"{key}{rule}_{f.name}")
                if value != f.default:
                    changes[f"{rule}.{f.name}"] = value
    return changes


def fairness_options(key: str) -> dict:
    """Settings that apply to every rule alike: gradient clip, what D sees, EMA."""
    with st.expander("Shared by every rule", expanded=False):
        clip = st.number_input("G gradient clip (0 = off)", value=0.0, step=0.5, format="%.3g",
                               key=key + "grad_clip",
                               help="Norm clip of G's gradient, applied to every rule alike")
        sees = st.selectbox("D trains on", D_SEES, key=key + "d_sees",
                            format_func={"sample": "what G emitted (policy samples)",
                                         "mean": "G's mean output"}.get,
                            help="reinforce emits noisy samples; 'mean' shows D the same "
                                 "clean G(z) as bce, removing that difference")
        ema = st.number_input("EMA decay of G's weights (0 = off)", value=TrainConfig.g_ema,
                              step=0.001, format="%.4g", key=key + "g_ema")
        ema_samples = st.checkbox("Samples and quality from the EMA weights", value=False,
                                  key=key + "ema_samples")
    return {"grad_clip": float(clip), "d_sees": sees, "g_ema": float(ema),
            "ema_samples": bool(ema_samples)}


def config_form() -> tuple[TrainConfig | None, str | None]:
    """Draw the form; return (config, None) or (None, error message)."""
    _init_defaults()
    k = KEY
    data = st.selectbox("Data set", list(DATASETS), key=k + "data", on_change=_apply_preset,
                        help="\n\n".join(f"**{e.name}**: {e.help}" for e in DATASETS.entries()))
    root = ""
    if DATASETS.entry(data).extra.get("needs_root"):
        root = st.text_input("Data root" if data != "folder" else "Image folder or .zip",
                             key=k + "root",
                             placeholder="data/" + data if data != "folder" else "path/to/images")
    name = st.selectbox("Preset", list(PRESETS), key=k + "preset",
                        index=list(PRESETS).index(DEFAULT_PRESET), on_change=_apply_preset,
                        help="source: the source document's settings; recommended: lr 1e-3, "
                             "beta1 0.5 (digits in ~3,000 steps)")
    rule = st.selectbox("Update rule", list(RULES), key=k + "rule",
                        help="\n\n".join(f"**{e.name}**: {e.help}" for e in RULES.entries())
                        + "\n\nCan be switched while a run is live.")
    options = rule_options(k, RULES)
    shared = fairness_options(k)
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
            "eval_every": int(eval_every), **options, **shared})
    except ConfigError as exc:
        st.error(f"Invalid setting: {exc}", icon=":material/error:")
        return None, str(exc)
    return cfg, None


def rule_switch(trainer) -> None:
    """Switch the update rule of a live run; the trainer marks the switch on the charts."""
    key = f"live_rule_{trainer.run_id}"
    st.session_state.setdefault(key, trainer.cfg.rule)
    st.selectbox("Update rule", list(RULES), key=key, disabled=not trainer.status.live,
                 on_change=lambda: trainer.set_rule(st.session_state[key]),
                 help="Switching on a live run leaves a dotted marker on every chart.")


def config_summary(cfg: TrainConfig) -> None:
    """The attached run's settings, read-only (a reload shows the run's, not the form's)."""
    st.markdown(
        f"**data** {cfg.data} · **batch** {cfg.batch_size} · **D steps** {cfg.d_steps}  \n"
        f"**G lr** {cfg.g_opt.lr:.1e} (β1 {cfg.g_opt.beta1}) · "
        f"**D lr** {cfg.d_opt.lr:.1e} (β1 {cfg.d_opt.beta1})  \n"
        f"**seed** {cfg.seed} · **device** {cfg.device} · "
        f"**budget** {cfg.steps or 'none'}")
    changed = {f.name: getattr(cfg.options(), f.name) for f in option_fields(type(cfg.options()))
               if getattr(cfg.options(), f.name) != f.default}
    if option_fields(type(cfg.options())):
        shown = ", ".join(f"{k} = {v}" for k, v in changed.items())
        st.caption(f"{cfg.rule} options: " + (plain(shown) or "defaults"))
