"""Run configuration: frozen dataclasses, validated on construction.

Every validation error names the field, the bad value and what is allowed, so the
CLI and the dashboard can show it as is. Each update rule's options live in the
rule's own dataclass (core/engine/rules/); in a config they are addressed as
"<rule>.<option>" (e.g. "reinforce.sigma_start"), in replace(), in the JSON form and
in arena arm specs alike.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from core.base.validate import ConfigError, check_choice, check_range
from core.data.datasets import DATASETS, sample_shape
from core.engine.rules import RULES
from core.engine.schedule import LR_SCHEDULES

DEVICE_NAMES = ("auto", "cpu", "cuda")
D_SEES = ("sample", "mean")     # what D trains on as "fake" (see TrainConfig.d_sees)

__all__ = ["ConfigError", "OptimConfig", "TrainConfig", "PRESETS", "preset",
           "preset_problems"]


MAX_LAYERS = 16            # hidden layers of one network
MAX_PARAMS = 32 * 2**20    # one network: with its gradients, Adam moments and EMA ~0.7 GB
MAX_PAC = 8                # PacGAN packs (the paper used 2 to 4)


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...)"


def _check_layers(name: str, value: Any) -> None:
    if not isinstance(value, tuple) or not value or len(value) > MAX_LAYERS or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value):
        raise ConfigError(f"{name} = {_short_repr(value)} must be a non-empty list of at most "
                          f"{MAX_LAYERS} layer widths, each an integer in [1, 4096]")


def _check_network_size(name: str, widths: tuple) -> None:
    """A network too big to train here is refused before any memory is allocated."""
    params = sum(a * b + b for a, b in zip(widths, widths[1:]))
    if params > MAX_PARAMS:
        raise ConfigError(f"{name} = {_short_repr(widths[1:-1])} gives a network of "
                          f"{params:,} parameters; at most {MAX_PARAMS:,}: use fewer or "
                          "narrower layers")


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings for one network."""
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999

    def validate(self, prefix: str) -> None:
        check_range(f"{prefix}.lr", self.lr, 0.0, 1.0, low_open=True)
        check_range(f"{prefix}.beta1", self.beta1, 0.0, 0.9999)
        check_range(f"{prefix}.beta2", self.beta2, 0.0, 0.99999)


def _default_rule_options() -> tuple:
    return tuple((name, RULES[name].Options()) for name in RULES)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Same config + same seed -> same run (CPU)."""
    data: str = "mnist5k"
    data_root: str = ""            # torchvision root, image folder/zip, or points CSV
    image_size: int = 28           # folder data: images are resized to this square size
    latent_dim: int = 100
    g_hidden: tuple = (128, 128)
    d_hidden: tuple = (128, 128)
    rule: str = "bce"
    rule_options: tuple = field(default_factory=_default_rule_options)  # ((rule, options), ...)
    g_opt: OptimConfig = field(default_factory=OptimConfig)
    d_opt: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 64
    d_steps: int = 1               # discriminator updates per generator update
    grad_clip: float = 0.0         # G gradient-norm clip for every rule alike; 0 = off
    d_sees: str = "sample"         # D's fake batch: what G emitted, or G's mean output
    lr_schedule: str = "constant"  # both lrs over the step budget: constant, linear, cosine
    r1: float = 0.0                # R1 penalty weight: gamma/2 E||grad_x D(real)||^2; 0 = off
    pac: int = 1                   # PacGAN: D scores packs of pac samples (Lin et al.); 1 = off
    g_ema: float = 0.995           # decay of the EMA of G's weights; 0 = no EMA
    ema_samples: bool = False      # snapshots and quality metrics from the EMA weights
    seed: int = 0
    device: str = "auto"
    steps: int = 0                 # step budget; 0 = run until stopped
    sample_every: int = 100        # fixed-noise snapshot interval (steps)
    max_snapshots: int = 60        # snapshots kept; older ones are thinned evenly
    checkpoint_every: int = 0      # 0 = only on demand / at the end
    keep_checkpoints: int = 0      # checkpoint_every keeps the newest N files; 0 = all
    eval_every: int = 1000         # quality metrics interval; 0 = off (bench/eval_cost.py)

    def __post_init__(self) -> None:
        # Lists arrive from JSON; store tuples so the config stays hashable and frozen.
        for name in ("g_hidden", "d_hidden"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        given = dict(self.rule_options) if isinstance(self.rule_options, (tuple, list)) else None
        if given is None or not all(isinstance(k, str) for k in given):
            raise ConfigError("rule_options must be a list of (rule, options) pairs")
        unknown = sorted(set(given) - set(RULES))
        if unknown:
            raise ConfigError(f"options for unknown rule(s) {', '.join(unknown)}; rules: "
                              f"{', '.join(RULES)}")
        object.__setattr__(self, "rule_options", tuple(
            (name, given.get(name, RULES[name].Options())) for name in RULES))
        self.validate()

    def __getattr__(self, name: str):
        # cfg.<rule> is that rule's options (cfg.reinforce.sigma_start)
        if name in RULES and name != "rule_options":
            return self.options(name)
        raise AttributeError(name)

    def options(self, rule: str | None = None):
        """The options of a rule (default: this config's rule)."""
        return dict(self.rule_options)[rule or self.rule]

    def validate(self) -> None:
        check_choice("data", self.data, tuple(DATASETS))
        if not isinstance(self.data_root, str):
            raise ConfigError(f"data_root = {self.data_root!r} must be a path string")
        if DATASETS.entry(self.data).extra.get("needs_root") == "required" and not self.data_root:
            hint = DATASETS.entry(self.data).extra.get(
                "root_hint", "the path of an image folder or a .zip of images")
            raise ConfigError(f"data = {self.data!r} needs data_root: {hint}")
        check_range("image_size", self.image_size, 8, 128, integer=True)
        check_range("latent_dim", self.latent_dim, 1, 1024, integer=True)
        _check_layers("g_hidden", self.g_hidden)
        _check_layers("d_hidden", self.d_hidden)
        out = math.prod(sample_shape(self.data, self.image_size))
        _check_network_size("g_hidden", (self.latent_dim, *self.g_hidden, out))
        check_range("pac", self.pac, 1, MAX_PAC, integer=True)
        _check_network_size("d_hidden", (out * self.pac, *self.d_hidden, 1))
        check_choice("rule", self.rule, tuple(RULES))
        for name, opts in self.rule_options:
            if not isinstance(opts, RULES[name].Options):
                raise ConfigError(f"{name} options must be a {RULES[name].Options.__name__}")
            opts.validate(f"{name}.", self)
        for name in ("g_opt", "d_opt"):
            opt = getattr(self, name)
            if not isinstance(opt, OptimConfig):
                raise ConfigError(f"{name} must be an OptimConfig")
            opt.validate(name)
        check_range("batch_size", self.batch_size, 2, 4096, integer=True)
        check_range("d_steps", self.d_steps, 1, 20, integer=True)
        check_range("grad_clip", self.grad_clip, 0.0, 1e6)
        check_choice("d_sees", self.d_sees, D_SEES)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_range("r1", self.r1, 0.0, 1e4)
        if self.batch_size % self.pac:   # D's batch splits into whole packs
            near = sorted({max(self.pac, self.batch_size // self.pac * self.pac),
                           (self.batch_size // self.pac + 1) * self.pac})
            raise ConfigError(f"pac = {self.pac} does not divide batch_size = "
                              f"{self.batch_size}: D scores packs of {self.pac} samples; use a "
                              f"batch_size that is a multiple of {self.pac} (e.g. "
                              f"{' or '.join(map(str, near))}) or a pac that divides "
                              f"{self.batch_size}")
        check_range("g_ema", self.g_ema, 0.0, 0.99999)
        if not isinstance(self.ema_samples, bool):
            raise ConfigError(f"ema_samples = {self.ema_samples!r} must be true or false")
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        check_choice("device", self.device, DEVICE_NAMES)
        check_range("steps", self.steps, 0, 10**9, integer=True)
        check_range("sample_every", self.sample_every, 1, 10**9, integer=True)
        check_range("max_snapshots", self.max_snapshots, 2, 1000, integer=True)
        check_range("checkpoint_every", self.checkpoint_every, 0, 10**9, integer=True)
        check_range("keep_checkpoints", self.keep_checkpoints, 0, 10**6, integer=True)
        check_range("eval_every", self.eval_every, 0, 10**9, integer=True)

    # -- conversion ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON form: every field, with each rule's options under the rule's name."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "rule_options"}
        for name in ("g_opt", "d_opt"):
            out[name] = dataclasses.asdict(out[name])
        out["g_hidden"], out["d_hidden"] = list(self.g_hidden), list(self.d_hidden)
        for name, opts in self.rule_options:
            if dataclasses.fields(opts):
                out[name] = dataclasses.asdict(opts)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(raw).__name__}")
        raw = _migrate(dict(raw))
        for name in ("g_opt", "d_opt"):
            if name in raw and not isinstance(raw[name], OptimConfig):
                raw[name] = _build(OptimConfig, raw[name], prefix=f"{name}.")
        options = {}
        for name in RULES:
            if name in raw:
                options[name] = _build(RULES[name].Options, raw.pop(name), prefix=f"{name}.")
        if options:
            raw["rule_options"] = tuple(options.items())
        return _build(cls, raw)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed; nested fields as 'g_opt.lr' or
        '<rule>.<option>' keys."""
        nested: dict[str, dict] = {}
        flat = {}
        for key, value in changes.items():
            if "." in key:
                outer, inner = key.split(".", 1)
                nested.setdefault(outer, {})[inner] = value
            else:
                flat[key] = value
        options = dict(self.rule_options)
        for outer, inner in nested.items():
            if outer in ("g_opt", "d_opt"):
                current = getattr(self, outer)
                _reject_unknown(type(current), inner, prefix=f"{outer}.")
                flat[outer] = dataclasses.replace(current, **inner)
            elif outer in RULES:
                _reject_unknown(type(options[outer]), inner, prefix=f"{outer}.")
                options[outer] = dataclasses.replace(options[outer], **inner)
                flat["rule_options"] = tuple(options.items())
            else:
                raise ConfigError(f"unknown config field {outer!r}")
        _reject_unknown(TrainConfig, flat)
        return dataclasses.replace(self, **flat)

    def fresh_options(self, *rules: str) -> "TrainConfig":
        """A copy with today's default options for `rules` other than its own rule: a
        checkpoint's config holds, for the rules its run never used, the defaults of the
        version that saved it, which nobody chose (a fine-tune with another rule starts
        from these)."""
        options = dict(self.rule_options)
        options.update({rule: RULES[rule].Options() for rule in rules if rule != self.rule})
        return dataclasses.replace(self, rule_options=tuple(options.items()))

    @property
    def is_2d(self) -> bool:
        return DATASETS.entry(self.data).extra["is_2d"]


def _migrate(raw: dict) -> dict:
    """Configs saved by earlier versions. rlhf.kl is now rlhf.kl_weight (the logged
    divergence keeps the name kl). reinforce.grad_clip applied to the reinforce rule
    only before the gradient clip became shared, so it carries over only where that ran."""
    rl = raw.get("rlhf")
    if isinstance(rl, dict) and "kl" in rl and "kl_weight" not in rl:
        rl = dict(rl)
        rl["kl_weight"] = rl.pop("kl")
        raw["rlhf"] = rl
    rf = raw.get("reinforce")
    if isinstance(rf, dict) and "grad_clip" in rf:
        rf = dict(rf)
        clip = rf.pop("grad_clip")
        raw["reinforce"] = rf
        if "grad_clip" not in raw:
            raw["grad_clip"] = clip if raw.get("rule") == "reinforce" else 0.0
    return raw


def _reject_unknown(kind: type, raw: dict, prefix: str = "") -> None:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(prefix + u for u in unknown)}; "
                          f"known: {', '.join(sorted(known))}")


def _build(kind: type, raw: Any, prefix: str = ""):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be an object, got {raw!r}")
    _reject_unknown(kind, raw, prefix)
    try:
        return kind(**raw)
    except TypeError as exc:  # e.g. a wrong type that dataclass itself trips on
        raise ConfigError(f"{prefix}{exc}") from None


# -- presets ----------------------------------------------------------------------
# "source": exactly the source document's settings. Others trade fidelity for training
# quality; the reasons are in each comment and in README.md.
PRESETS: dict[str, dict] = {
    "source": {},
    # Higher learning rate and beta1 = 0.5 (the DCGAN setting) make the source's small MLP
    # produce recognisable digits in ~3,000 steps instead of tens of thousands.
    "recommended": {"g_opt": {"lr": 1e-3, "beta1": 0.5}, "d_opt": {"lr": 1e-3, "beta1": 0.5}},
}


def preset(name: str, **changes: Any) -> TrainConfig:
    """A preset's config with overrides applied (same keys as TrainConfig.replace).

    "recommended" with a `data` uses that data set's registered preset (core/data/).
    The preset's own values are set first, without validation against a partial
    config, so overrides that a preset needs (folder data and its root) go together.
    """
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is not one of: {', '.join(PRESETS)}")
    raw = dict(PRESETS[name])
    if name == "recommended":
        data = DATASETS.get(changes.get("data")) if isinstance(changes.get("data"), str) else None
        for key, value in (data.extra.get("preset", {}) if data else {}).items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    for key in ("data", "data_root"):   # set together: folder data needs its root
        if key in changes:
            raw[key] = changes.pop(key)
    base = TrainConfig.from_dict(raw)
    return base.replace(**changes) if changes else base


def preset_problems(name: str, **changes: Any) -> dict[str, str]:
    """Every problem of preset(name, **changes) at once, as {field: message}; empty when
    preset() succeeds. preset() stops at the first problem; a form wants them all, each
    under its own input. Each change is checked alone against the preset (so one bad
    field does not hide another), then the good ones together for problems between
    fields. The field is the one the message names ('' when it names none)."""
    if name not in PRESETS:
        return {"preset": f"preset {name!r} is not one of: {', '.join(PRESETS)}"}

    def problem(**some: Any) -> str | None:
        try:
            preset(name, **some)
        except ConfigError as exc:
            return str(exc)
        return None

    whole = problem(**changes)
    if whole is None:
        return {}
    found: dict[str, str] = {}
    base = {k: changes[k] for k in ("data", "data_root") if k in changes}
    message = problem(**base)
    if message:   # folder data without its path: check the rest against the defaults
        found["data_root" if "data_root" in message else _field_named(message, "data")] = message
        base = {}
    for key, value in changes.items():
        if key not in ("data", "data_root"):
            message = problem(**base, **{key: value})
            # a message naming another field is a clash with that field's preset value;
            # the check of the rest together below words it with the user's values
            if message and _field_named(message, key) == key:
                found.setdefault(key, message)
    rest = {k: v for k, v in changes.items() if k not in found and k not in base
            and k not in ("data", "data_root")}
    message = problem(**base, **rest)
    if message:   # a problem between fields, each fine alone
        found.setdefault(_field_named(message, ""), message)
    return found


def _field_named(message: str, default: str) -> str:
    """The field a ConfigError message starts with ('g_opt.lr = 0.0 is ...')."""
    match = re.match(r"([A-Za-z_][\w.]*) = ", message)
    return match.group(1) if match else default
