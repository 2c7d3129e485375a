"""The run configuration form -> core.engine.config.TrainConfig.

Validation is core's: the form builds the config with `preset(...)`, and when that
fails, core.engine.config.preset_problems() lists every problem, each shown under its own
input (ui/form_problems.py). Widgets use loose bounds on purpose so that core, not the
widget, is the single source of the rules.
"""
from __future__ import annotations

import dataclasses

import streamlit as st

from core.base.options import option_fields
from core.base.registry import Registry
from core.data.datasets import DATASETS
from core.engine.config import (
    D_SEES,
    DEVICE_NAMES,
    PRESETS,
    ConfigError,
    TrainConfig,
    preset,
    preset_problems,
)
from core.engine.rules import RULES
from core.engine.schedule import LR_SCHEDULES
from ui import points_input
from ui.form_problems import Slots
from ui.text import plain

DEFAULT_PRESET = "recommended"
KEY = "cfg_"   # session-state prefix of every form widget
APPLIED = KEY + "_preset_applied"   # the values the preset last put into the form


def _preset_values(name: str, data: str) -> dict:
    """The widget values a preset sets ("recommended" has per-data-set values)."""
    # a placeholder root where one is required: a data set's preset never depends on it
    root = "-" if DATASETS.entry(data).extra.get("needs_root") == "required" else ""
    try:
        cfg = preset(name, data=data, data_root=root)
    except ConfigError:   # the preset's general values
        cfg = preset(name)
    return {"g_lr": cfg.g_opt.lr, "d_lr": cfg.d_opt.lr, "g_beta1": cfg.g_opt.beta1,
            "d_beta1": cfg.d_opt.beta1, "batch": cfg.batch_size, **shared_values(cfg)}


def shared_values(cfg: TrainConfig) -> dict:
    """The shared-section inputs a preset sets (fairness_options' widget names)."""
    return {"r1": cfg.r1, "pac": cfg.pac, "ema_samples": cfg.ema_samples}


def follow_preset(prefix: str, values: dict) -> None:
    """Load a preset's values into the form's inputs (`prefix` + name) the user has
    not changed: a value the user typed is kept."""
    state = st.session_state
    applied = state.get(prefix + "_preset_applied", {})
    for name, value in values.items():
        if name not in applied or state.get(prefix + name) == applied[name]:
            state[prefix + name] = value
    state[prefix + "_preset_applied"] = values


def _apply_preset() -> None:
    """on_change of the preset and data boxes: the preset's values into the inputs the
    user has not changed; the form shows the preset's value under a typed one (with a
    button to take them all)."""
    state = st.session_state
    follow_preset(KEY, _preset_values(state[KEY + "preset"], state[KEY + "data"]))


def _use_preset_values() -> None:
    """on_click of "Use the preset's values": overwrite the typed values too."""
    for name, value in st.session_state.get(APPLIED, {}).items():
        st.session_state[KEY + name] = value


def _init_defaults() -> None:
    if KEY + "g_lr" not in st.session_state:
        values = _preset_values(DEFAULT_PRESET, next(iter(DATASETS)))
        for name, value in values.items():
            st.session_state[KEY + name] = value
        st.session_state[APPLIED] = values


def _preset_hint(name: str, where, fmt: str) -> None:
    """Under an input the user changed: what the chosen preset would set."""
    applied = st.session_state.get(APPLIED, {})
    if name in applied and st.session_state.get(KEY + name) != applied[name]:
        where.caption(f"Preset value: {format(applied[name], fmt)} (yours is kept)")


def _auto_hint(f: dataclasses.Field, value, is_2d: bool | None, where=st) -> None:
    """An "auto" option left at its auto value (0, or the option's `auto_when`): say
    what it resolves to for the chosen data."""
    auto = f.metadata.get("auto")
    if auto is not None and is_2d is not None and value == f.metadata.get("auto_when", 0):
        where.caption(f"auto = {auto[0 if is_2d else 1]:g} on "
                      f"{'2-D data' if is_2d else 'images'}")


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


def rule_options(key: str, rules, title: str = "{} options", *, slots: Slots | None = None,
                 is_2d: bool | None = None) -> dict:
    """An expander of inputs per rule in `rules` that has options, drawn from the rule's
    options dataclass (a new rule needs no form code). Widget keys are
    key + '<rule>_<option>'; returns preset() changes '<rule>.<option>' for the values
    that differ from the defaults. With `slots`, each input gets a slot for its error;
    with `is_2d`, a "0 = auto" option shows what it resolves to."""
    changes = {}
    for rule in dict.fromkeys(rules):
        fields = option_fields(RULES[rule].Options)
        if not fields:
            continue
        section = title.format(RULES.entry(rule).title)
        with st.expander(section, expanded=False, key=f"{key}{rule}_open"):   # see SHARED's
            for f in fields:
                value = _option_input(f, f"{key}{rule}_{f.name}")
                _auto_hint(f, value, is_2d)
                if slots is not None:
                    slots.add(f"{rule}.{f.name}", f.metadata.get("label", f.name),
                              section=section)
                if value != f.default:
                    changes[f"{rule}.{f.name}"] = value
    return changes


SHARED = "Shared by every rule"


def _unless_set(key: str, value) -> dict:
    """A widget's starting value, unless a preset has put one into its state (giving
    both makes Streamlit warn on the page)."""
    return {} if key in st.session_state else {"value": value}


def fairness_options(key: str, *, slots: Slots | None = None) -> dict:
    """Settings that apply to every rule alike: gradient clip, what D sees, EMA, the
    learning-rate schedule, the R1 penalty and PacGAN packing."""
    def slot(field: str, label: str) -> None:
        if slots is not None:
            slots.add(field, label, section=SHARED)

    # keyed: an unkeyed expander closes when an element above it comes or goes (the
    # "Use the preset's values" button, after a change here), hiding this field's message
    with st.expander(SHARED, expanded=False, key=key + "shared_open"):
        clip = st.number_input("G gradient clip (0 = off)", value=0.0, step=0.5, format="%.3g",
                               key=key + "grad_clip",
                               help="Norm clip of G's gradient, applied to every rule alike")
        slot("grad_clip", "G gradient clip")
        sees = st.selectbox("D trains on", D_SEES, key=key + "d_sees",
                            format_func={"sample": "what G emitted (policy samples)",
                                         "mean": "G's mean output"}.get,
                            help="reinforce emits noisy samples; 'mean' shows D the same "
                                 "clean G(z) as bce, removing that difference")
        slot("d_sees", "D trains on")
        ema = st.number_input("EMA decay of G's weights (0 = off)", value=TrainConfig.g_ema,
                              step=0.001, format="%.4g", key=key + "g_ema",
                              help="A slowly moving average of G's weights, kept by every "
                                   "run and saved in checkpoints; from 0 (off) to 0.99999, "
                                   "closer to 1 = smoother and slower")
        slot("g_ema", "EMA decay of G's weights")
        ema_samples = st.checkbox("Samples and quality from the EMA weights",
                                  key=key + "ema_samples",
                                  **_unless_set(key + "ema_samples", False),
                                  help="The sample grid and the quality metrics use the "
                                       "averaged weights instead of G's current ones")
        schedule = st.selectbox("Learning-rate schedule", LR_SCHEDULES, key=key + "lr_schedule",
                                help="Both learning rates over the step budget: constant, "
                                     "or decayed to 0 at the last step (linear, cosine). "
                                     "Needs a step budget; in a comparison it spans the "
                                     "compared steps")
        slot("lr_schedule", "Learning-rate schedule")
        r1 = st.number_input("R1 penalty on real data (0 = off)", step=0.1,
                             format="%.3g", key=key + "r1", **_unless_set(key + "r1", 0.0),
                             help="gamma/2 times D's squared input gradient on real samples "
                                  "(Mescheder et al. 2018): keeps D smooth near the data")
        slot("r1", "R1 penalty")
        pac = st.number_input("D packs samples (PacGAN, 1 = off)", step=1, key=key + "pac",
                              **_unless_set(key + "pac", 1),
                              help="D scores packs of this many samples at once (Lin et al. "
                                   "2018): a collapsed G shows in a pack's lack of variety. "
                                   "1 to 8; must divide the batch size")
        slot("pac", "PacGAN packing")
    return {"grad_clip": float(clip), "d_sees": sees, "g_ema": float(ema),
            "ema_samples": bool(ema_samples), "lr_schedule": schedule, "r1": float(r1),
            "pac": int(pac)}


def _auto_device() -> str:
    from core.engine.trainer import resolve_device
    return resolve_device("auto").type


def config_form() -> tuple[TrainConfig | None, str | None]:
    """Draw the form; return (config, None) or (None, the problems, one per line)."""
    _init_defaults()
    k = KEY
    slots = Slots()
    data = st.selectbox("Data set", list(DATASETS), key=k + "data", on_change=_apply_preset,
                        help="\n\n".join(f"**{e.name}**: {e.help}" for e in DATASETS.entries()))
    slots.add("data", "Data set")
    is_2d = bool(DATASETS.entry(data).extra.get("is_2d"))
    root, root_problem = "", None
    if data == "points":   # the user's own: draw, upload or a path (ui/points_input.py)
        root, root_problem = points_input.picker(k)
        slots.add("data_root", "Points")
    elif DATASETS.entry(data).extra.get("needs_root"):
        label = "Data root" if data != "folder" else "Image folder or .zip"
        root = st.text_input(label, key=k + "root",
                             placeholder="data/" + data if data != "folder" else "path/to/images",
                             help="A folder on the server's disk" + (
                                 ": the images (png, jpg) in it and its subfolders, or a "
                                 ".zip of them" if data == "folder" else
                                 f" where {data} is (downloaded there when missing, given "
                                 "a network)"))
        slots.add("data_root", label)
    name = st.selectbox("Preset", list(PRESETS), key=k + "preset",
                        index=list(PRESETS).index(DEFAULT_PRESET), on_change=_apply_preset,
                        help="source: the source document's settings; recommended: lr 1e-3, "
                             "beta1 0.5 (digits in ~3,000 steps), with per-data-set values "
                             "for the 2-D sets. Switching keeps the values you typed.")
    if any(st.session_state.get(k + n) != v
           for n, v in st.session_state.get(APPLIED, {}).items()):
        st.button("Use the preset's values", key=k + "use_preset", on_click=_use_preset_values,
                  help="Replace the learning rates, betas and batch size you typed "
                       "with this preset's")
    rule = st.selectbox("Update rule", list(RULES), key=k + "rule",
                        help="\n\n".join(f"**{e.name}**: {e.help}" for e in RULES.entries())
                        + "\n\nCan be switched while a run is live.")
    options = rule_options(k, RULES, slots=slots, is_2d=is_2d)
    shared = fairness_options(k, slots=slots)
    c1, c2 = st.columns(2)

    def number(col, name: str, label: str, field: str, help_text: str, **kw):
        value = col.number_input(label, key=k + name, help=help_text, **kw)
        _preset_hint(name, col, kw.get("format", "").lstrip("%") or "g")
        slots.add(field, label, where=col)
        return value

    lr_help = ("Adam step size of {}; above 0, at most 1. Too high: losses swing and "
               "samples collapse; too low: little changes for thousands of steps")
    beta_help = ("Adam's momentum for {} (from 0 to 0.9999). 0.5 is the usual GAN choice, "
                 "0.9 the Adam default")
    g_lr = number(c1, "g_lr", "G learning rate", "g_opt.lr", lr_help.format("the generator"),
                  step=1e-4, format="%.1e")
    d_lr = number(c2, "d_lr", "D learning rate", "d_opt.lr",
                  lr_help.format("the discriminator"), step=1e-4, format="%.1e")
    g_beta1 = number(c1, "g_beta1", "G Adam beta1", "g_opt.beta1",
                     beta_help.format("the generator"), step=0.05, format="%.2f")
    d_beta1 = number(c2, "d_beta1", "D Adam beta1", "d_opt.beta1",
                     beta_help.format("the discriminator"), step=0.05, format="%.2f")
    batch = number(c1, "batch", "Batch size", "batch_size",
                   "Real and generated samples per step (2 to 4096)", step=16)
    d_steps = number(c2, "d_steps", "D steps per G step", "d_steps",
                     "Discriminator updates before each generator update (1 to 20)",
                     value=1, step=1)
    seed = number(c1, "seed", "Seed", "seed", "Same seed and settings = the same run on CPU "
                  "(0 to 2147483647)", value=0, step=1)
    device = c2.selectbox("Device", DEVICE_NAMES, key=k + "device",
                          help="auto: the GPU when there is one, else the CPU")
    if device == "auto":
        c2.caption(f"auto = {_auto_device()} here")
    slots.add("device", "Device", where=c2)
    steps = number(c1, "steps", "Step budget (0 = until stopped)", "steps",
                   "The run finishes after this many steps; 0 runs until you press Stop",
                   value=0, step=1000)
    sample_every = number(c2, "sample_every", "Sample every (steps)", "sample_every",
                          "How often the fixed-noise samples are drawn (at least 1)",
                          value=100, step=50)
    eval_every = number(
        st, "eval_every", "Quality metrics every (steps, 0 = off)", "eval_every",
        "2-D mixtures: modes covered, % high quality, reverse KL; your own points: "
        "k-NN precision and coverage of the drawing. Images: classifier-based "
        "scores (the classifier is trained once per data set on first use: slow).",
        value=TrainConfig.eval_every, step=500)
    changes = {
        "data": data, "data_root": root, "rule": rule,
        "g_opt.lr": float(g_lr), "d_opt.lr": float(d_lr),
        "g_opt.beta1": float(g_beta1), "d_opt.beta1": float(d_beta1),
        "batch_size": int(batch), "d_steps": int(d_steps), "seed": int(seed),
        "device": device, "steps": int(steps), "sample_every": int(sample_every),
        "eval_every": int(eval_every), **options, **shared}
    try:
        if root_problem:   # the points picker's own words, not "needs data_root"
            raise ConfigError(root_problem)
        return preset(name, **changes), None
    except ConfigError as exc:
        problems = preset_problems(name, **changes) or {"": str(exc)}
        if root_problem:
            problems["data_root"] = root_problem
    slots.fill(problems)
    return None, "\n".join(problems.values())


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
