"""Run configuration: frozen dataclasses, validated on construction.

Every validation error names the field, the bad value and what is allowed, so the
CLI and the dashboard can show it as is.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

DATA_NAMES = ("mnist5k", "mnist", "fashion-mnist", "folder", "ring8", "grid25")
RULE_NAMES = ("bce", "reinforce")
REWARD_NAMES = ("log_d", "d", "logit")
DEVICE_NAMES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it."""


def _check_range(name: str, value: Any, low: float, high: float, *, integer: bool = False,
                 low_open: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)):
        raise ConfigError(f"{name} = {value!r} is not {kind}; use {kind} in "
                          f"{'(' if low_open else '['}{low:g}, {high:g}]")
    bad_low = value <= low if low_open else value < low
    if not math.isfinite(value) or bad_low or value > high:
        raise ConfigError(f"{name} = {value!r} is out of range; allowed: "
                          f"{'(' if low_open else '['}{low:g}, {high:g}]")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} = {value!r} is not one of: {', '.join(choices)}")


def _check_layers(name: str, value: Any) -> None:
    if not isinstance(value, tuple) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value):
        raise ConfigError(f"{name} = {value!r} must be a non-empty list of layer widths, "
                          "each an integer in [1, 4096]")


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings for one network."""
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999

    def validate(self, prefix: str) -> None:
        _check_range(f"{prefix}.lr", self.lr, 0.0, 1.0, low_open=True)
        _check_range(f"{prefix}.beta1", self.beta1, 0.0, 0.9999)
        _check_range(f"{prefix}.beta2", self.beta2, 0.0, 0.99999)


@dataclass(frozen=True)
class ReinforceConfig:
    """Options of the policy-gradient generator update (DESIGN.md section 1)."""
    reward: str = "log_d"          # log D(x) (default), D(x), or the clipped logit
    samples_per_z: int = 0         # K; 0 = auto (4 for 2-D data, 8 for images)
    sigma_start: float = 0.0       # 0 = auto (0.1 for 2-D data, 0.3 for images)
    sigma_end: float = 0.0         # floor; 0 = auto (0.02 for 2-D data, 0.1 for images)
    sigma_anneal_steps: int = 2000
    adv_clip: float = 5.0
    grad_clip: float = 1.0
    logit_clip: float = 5.0
    cosine_every: int = 50         # every N steps, cosine(REINFORCE grad, BCE grad); 0 = off

    def validate(self) -> None:
        _check_choice("reinforce.reward", self.reward, REWARD_NAMES)
        _check_range("reinforce.samples_per_z", self.samples_per_z, 0, 64, integer=True)
        if self.samples_per_z == 1:
            raise ConfigError("reinforce.samples_per_z = 1 leaves no leave-one-out baseline; "
                              "use 0 (auto) or an integer in [2, 64]")
        _check_range("reinforce.sigma_start", self.sigma_start, 0.0, 10.0)
        _check_range("reinforce.sigma_end", self.sigma_end, 0.0, 10.0)
        if self.sigma_start and self.sigma_end and self.sigma_end > self.sigma_start:
            raise ConfigError(f"reinforce.sigma_end = {self.sigma_end} is above "
                              f"reinforce.sigma_start = {self.sigma_start}; the floor must "
                              "not exceed the start value")
        _check_range("reinforce.sigma_anneal_steps", self.sigma_anneal_steps, 0, 10**9,
                     integer=True)
        _check_range("reinforce.adv_clip", self.adv_clip, 0.0, 100.0, low_open=True)
        _check_range("reinforce.grad_clip", self.grad_clip, 0.0, 1e6)
        _check_range("reinforce.logit_clip", self.logit_clip, 0.0, 100.0, low_open=True)
        _check_range("reinforce.cosine_every", self.cosine_every, 0, 10**9, integer=True)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Same config + same seed -> same run (CPU)."""
    data: str = "mnist5k"
    data_root: str = ""            # torchvision root (mnist, fashion-mnist) or image folder/zip
    image_size: int = 28           # folder data: images are resized to this square size
    latent_dim: int = 100
    g_hidden: tuple = (128, 128)
    d_hidden: tuple = (128, 128)
    rule: str = "bce"
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    g_opt: OptimConfig = field(default_factory=OptimConfig)
    d_opt: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 64
    d_steps: int = 1               # discriminator updates per generator update
    seed: int = 0
    device: str = "auto"
    steps: int = 0                 # step budget; 0 = run until stopped
    sample_every: int = 100        # fixed-noise snapshot interval (steps)
    max_snapshots: int = 60        # snapshots kept; older ones are thinned evenly
    checkpoint_every: int = 0      # 0 = only on demand / at the end
    eval_every: int = 1000         # quality metrics interval; 0 = off (bench/eval_cost.py)

    def __post_init__(self) -> None:
        # Lists arrive from JSON; store tuples so the config stays hashable and frozen.
        for name in ("g_hidden", "d_hidden"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        _check_choice("data", self.data, DATA_NAMES)
        if not isinstance(self.data_root, str):
            raise ConfigError(f"data_root = {self.data_root!r} must be a path string")
        if self.data == "folder" and not self.data_root:
            raise ConfigError("data = 'folder' needs data_root: the path of an image folder "
                              "or a .zip of images")
        _check_range("image_size", self.image_size, 8, 128, integer=True)
        _check_range("latent_dim", self.latent_dim, 1, 1024, integer=True)
        _check_layers("g_hidden", self.g_hidden)
        _check_layers("d_hidden", self.d_hidden)
        _check_choice("rule", self.rule, RULE_NAMES)
        if not isinstance(self.reinforce, ReinforceConfig):
            raise ConfigError("reinforce must be a ReinforceConfig")
        self.reinforce.validate()
        for name in ("g_opt", "d_opt"):
            opt = getattr(self, name)
            if not isinstance(opt, OptimConfig):
                raise ConfigError(f"{name} must be an OptimConfig")
            opt.validate(name)
        _check_range("batch_size", self.batch_size, 2, 4096, integer=True)
        _check_range("d_steps", self.d_steps, 1, 20, integer=True)
        _check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        _check_choice("device", self.device, DEVICE_NAMES)
        _check_range("steps", self.steps, 0, 10**9, integer=True)
        _check_range("sample_every", self.sample_every, 1, 10**9, integer=True)
        _check_range("max_snapshots", self.max_snapshots, 2, 1000, integer=True)
        _check_range("checkpoint_every", self.checkpoint_every, 0, 10**9, integer=True)
        _check_range("eval_every", self.eval_every, 0, 10**9, integer=True)

    # -- conversion ---------------------------------------------------------------
    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["g_hidden"] = list(self.g_hidden)
        out["d_hidden"] = list(self.d_hidden)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(raw).__name__}")
        raw = dict(raw)
        nested = {"reinforce": ReinforceConfig, "g_opt": OptimConfig, "d_opt": OptimConfig}
        for name, kind in nested.items():
            if name in raw and not isinstance(raw[name], kind):
                raw[name] = _build(kind, raw[name], prefix=f"{name}.")
        return _build(cls, raw)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed; nested fields as 'g_opt.lr' style keys."""
        nested: dict[str, dict] = {}
        flat = {}
        for key, value in changes.items():
            if "." in key:
                outer, inner = key.split(".", 1)
                nested.setdefault(outer, {})[inner] = value
            else:
                flat[key] = value
        for outer, inner in nested.items():
            if outer not in ("reinforce", "g_opt", "d_opt"):
                raise ConfigError(f"unknown config field {outer!r}")
            current = getattr(self, outer)
            _reject_unknown(type(current), inner, prefix=f"{outer}.")
            flat[outer] = dataclasses.replace(current, **inner)
        _reject_unknown(TrainConfig, flat)
        return dataclasses.replace(self, **flat)

    @property
    def is_2d(self) -> bool:
        return self.data in ("ring8", "grid25")

    def samples_per_z(self) -> int:
        return self.reinforce.samples_per_z or (4 if self.is_2d else 8)

    def sigma_at(self, step: int) -> float:
        """Policy std at a step: linear anneal from start to the floor."""
        start = self.reinforce.sigma_start or (0.1 if self.is_2d else 0.3)
        end = self.reinforce.sigma_end or (0.02 if self.is_2d else 0.1)
        end = min(end, start)
        span = self.reinforce.sigma_anneal_steps
        if span <= 0:
            return end
        frac = min(step / span, 1.0)
        return start + (end - start) * frac


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


# "recommended" per data set, found by short trials (bce and reinforce arms in lockstep,
# 2-4 seeds; the issue-4 note lists what was tried). One set per data set, shared by
# every rule, since an arena's arms share all settings but the rule. On the 2-D toys a
# 2-D latent and batch 256 were what kept all modes (latent 100 collapsed to 1-2).
DATA_PRESETS: dict[str, dict] = {
    "ring8": {"latent_dim": 2, "batch_size": 256,
              "g_opt": {"lr": 3e-4, "beta1": 0.5}, "d_opt": {"lr": 3e-4, "beta1": 0.5}},
    "grid25": {"latent_dim": 2, "batch_size": 256,
               "g_opt": {"lr": 1e-3, "beta1": 0.5}, "d_opt": {"lr": 1e-3, "beta1": 0.5}},
    "mnist5k": {},   # the "recommended" settings as they are
}


def preset(name: str, **changes: Any) -> TrainConfig:
    """A preset's config with overrides applied (same keys as TrainConfig.replace).

    "recommended" with a `data` that has DATA_PRESETS uses that data set's settings.
    """
    if name not in PRESETS:
        raise ConfigError(f"preset {name!r} is not one of: {', '.join(PRESETS)}")
    raw = dict(PRESETS[name])
    if name == "recommended":
        for key, value in DATA_PRESETS.get(changes.get("data"), {}).items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    base = TrainConfig.from_dict(raw)
    return base.replace(**changes) if changes else base
