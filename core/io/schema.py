"""Checkpoint schema: validate() checks a loaded checkpoint dict before anything uses it.

core/io/checkpoint.py reads the bytes (safetensors, or the old torch.save format) and
hands the decoded dict here; this module only inspects that dict and never touches a
file, so the rules for what a checkpoint may hold live in one place, apart from the
I/O, and checkpoint.py imports it (never the other way round). The layout checked is
the one checkpoint.py's docstring describes.

Validation is type-checked and memory-safe: every tensor must be a dense, contiguous
CPU tensor of the dtype and the exact shape that the config implies (so a zero-stride
or overlapping view that would expand to gigabytes, or an optimiser state shorter than
the flat parameter buffer that torch's fused Adam would read past, is refused before
anything uses it), weights and optimiser moments must be finite, and every plain value
must have the type and range the loaders expect. The first problem found is named in a
one-line CheckpointError; validation never raises anything else and never allocates more
than the sizes the config implies (a finiteness mask of one tensor at a time).
"""
from __future__ import annotations

import math
import re
import struct
import zlib

import torch

from core.data.datasets import sample_shape
from core.data.points import points_problem
from core.engine.config import ConfigError, TrainConfig
from core.engine.metric_log import MAX_EVENTS
from core.engine.rules import RULES

SCHEMA_VERSION = 2          # 2: safetensors (.safetensors); 1: torch.save (.pt)
LEGACY_SCHEMA_VERSION = 1
RUN_KEYS = ("config", "step", "generator", "discriminator", "g_optimizer", "d_optimizer",
            "rng", "fixed_z", "metrics")
ARENA_KEYS = ("config", "step", "arms")
# Every field a file may hold (saved by Run.state, Arena.state_dict, save_checkpoint):
# anything else is refused, so nothing unchecked rides along into memory or a page.
FILE_FIELDS = ("schema_version", "kind", "torch_version", "saved_at", "run_id", "rule",
               "notes")
RUN_FIELDS = (*RUN_KEYS, *FILE_FIELDS, "rule_start", "generator_ema", "generator_ref",
              "rule_state", "snapshots", "data_points")
ARENA_FIELDS = (*ARENA_KEYS, *FILE_FIELDS, "fork_step", "batch_hash", "init_hashes")
METRICS_FIELDS = ("columns", "events")
RNG_FIELDS = ("data", "noise")
SNAPSHOT_FIELDS = ("step", "seq", "png", "points", "heatmap", "extent")

DAMAGED = "the file is damaged or not from GAN RL Lab"
RESAVE = "re-save it with GAN RL Lab (tensors are saved contiguous)"
DIVERGED = ("the run had diverged when it was saved, or the file is damaged; use an "
            "earlier checkpoint of the run")

MAX_STEP = 10**12                 # no real run gets near; bigger means a damaged file
MAX_FIXED_Z = 65_536              # rows of fixed noise (the engine uses 64 or 1,000)
MAX_SNAPSHOT_POINTS = 65_536      # generated points in one 2-D snapshot
MAX_HEATMAP_RES = 1_024           # side of a snapshot's D heatmap (the engine uses 48)
MAX_PNG_BYTES = 64 * 2**20        # one snapshot grid, PNG encoded
MAX_METRIC_COLUMNS = 1_000
MAX_TEXT = 10_000                 # characters of one event, run id, rule, ...
MAX_NAME = 200
MAX_NOTE_NAME, MAX_NOTE_TEXT = MAX_NAME, MAX_TEXT   # notes: the user's run name and note
MAX_ARMS = 100
MAX_SNAPSHOTS = 1_000             # the largest max_snapshots a config allows (a resumed
                                  # run may hold more than its own until it next thins)
CUDA_RNG_STATE_LEN = 16           # torch.Generator("cuda").get_state(): seed + offset
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Snapshot grid PNGs (core.engine.samples.grid_png), checked here at load and again by
# samples.snapshot_image before any is decoded: png_problem() below is the one rule.
# The largest grid the lab writes: 64 fixed-noise samples (core.engine.run.FIXED_IMAGES)
# in 8 columns, each at most 128 px (TrainConfig.image_size's range) plus make_grid's
# 2 px padding: 8 * 130 + 2 = 1,042 px a side. 4,096 leaves room for about 4x that a
# side and still caps one decoded grid at 48 MiB of pixels.
MAX_GRID_SIDE = 4_096
MAX_GRID_BYTES = 3 * MAX_GRID_SIDE ** 2    # decoded: a 4,096-square RGB grid at 8 bits
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
# Chunks in one grid PNG: Pillow writes 64 KiB IDAT chunks (a lab grid has a few dozen),
# libpng 8 KiB ones; 8,192 holds a MAX_GRID_BYTES grid stored uncompressed in 8 KiB
# chunks, and bounds the check's loop (64 MiB of empty 12-byte chunks would be 5.6
# million turns, seconds per snapshot).
MAX_PNG_CHUNKS = 8_192
MT_STATE_N = 624                  # mt19937 words; see the CPU generator state check

# Adam flags a GAN RL Lab optimiser never sets: a saved state that turns one on would
# change the update (maximize), need state the file does not hold (amsgrad) or a
# different kernel contract (capturable, differentiable).
ADAM_FALSE_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable")
ADAM_OPTIONAL_BOOL = ("foreach", "fused")          # None or a bool
ADAM_STATE_KEYS = ("exp_avg", "exp_avg_sq", "step")
ARENA_SHAPE_FIELDS = ("data", "data_root", "image_size", "latent_dim", "g_hidden",
                      "d_hidden", "pac")


class CheckpointError(ValueError):
    """The file is not a usable checkpoint; the message says what is wrong."""


# -- validation -------------------------------------------------------------------------
def validate(state, name: str = "checkpoint", version: int = SCHEMA_VERSION) -> None:
    """Check a loaded checkpoint dict; raises CheckpointError naming the first problem.
    `version` is the schema the file's format implies (1 for an old .pt file).

    Anything unexpected while checking (a bug here, or content no check foresaw) also
    becomes a CheckpointError, so callers only ever handle that one exception."""
    try:
        _validate(state, name, version)
    except CheckpointError as exc:
        raise CheckpointError(_one_line(str(exc))) from None
    except Exception as exc:
        raise CheckpointError(_one_line(
            f"{name} could not be checked ({type(exc).__name__}: {_clip(str(exc))}); "
            f"{DAMAGED}")) from None


def config_of(state: dict) -> TrainConfig:
    try:
        return TrainConfig.from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from None
    except Exception as exc:   # e.g. keys that are not strings
        raise CheckpointError(f"checkpoint config is invalid ({type(exc).__name__}: "
                              f"{_clip(str(exc))}); {DAMAGED}") from None


def _validate(state, name: str, expected: int) -> None:
    if not isinstance(state, dict) or "schema_version" not in state:
        raise CheckpointError(f"{name} is a PyTorch file but not a GAN RL Lab checkpoint "
                              "(no schema_version)")
    version = state["schema_version"]
    if type(version) is not int or version != expected:
        shown = version if type(version) is int else _describe(version)
        fmt = "an old .pt file" if expected == LEGACY_SCHEMA_VERSION else "a .safetensors file"
        raise CheckpointError(f"{name} has schema version {shown!s}; this version of "
                              f"GAN RL Lab reads version {expected} in {fmt}")
    kind = state.get("kind", "run")
    if not isinstance(kind, str) or kind not in ("run", "arena"):
        _fail(name, f"kind is {_describe(kind)}, but must be 'run' or 'arena'")
    _check_meta(name, state)
    if kind == "arena":
        _validate_arena(state, name)
    else:
        _validate_run(state, name)


def _validate_arena(state: dict, name: str) -> None:
    arms = state.get("arms")
    if not isinstance(arms, dict) or not arms:
        raise CheckpointError(f"{name}: arena checkpoint without arms")
    missing = [k for k in ARENA_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{name} is missing {', '.join(missing)}")
    _check_fields(name, "an arena checkpoint", state, ARENA_FIELDS)
    cfg = _config(name, state)
    step = _check_int(name, "step", state["step"], 0, MAX_STEP)
    if "fork_step" in state:
        _check_int(name, "fork_step", state["fork_step"], 0, step)
    if "batch_hash" in state:
        _check_text(name, "batch_hash", state["batch_hash"], MAX_TEXT)
    if len(arms) > MAX_ARMS:
        _fail(name, f"arms has {len(arms):,} entries; an arena has at most {MAX_ARMS}")
    for arm_name in arms:
        if not isinstance(arm_name, str) or not arm_name or len(arm_name) > MAX_NAME:
            _fail(name, f"an arm name is {_describe(arm_name)}; arm names are non-empty text")
    if "init_hashes" in state:
        hashes = state["init_hashes"]
        if not isinstance(hashes, dict):
            _fail(name, f"init_hashes is {_describe(hashes)}, not a dict of arm -> hash")
        for key, value in hashes.items():
            if key not in arms:
                _fail(name, f"init_hashes names {_describe(key)}, which is not an arm")
            _check_text(name, f"init_hashes[{key!r}]", value, MAX_TEXT)
    rules: list[str] = []
    for arm_name, arm in arms.items():
        where = f"{name} (arm {arm_name!r})"
        if not isinstance(arm, dict):
            _fail(where, f"the arm is {_describe(arm)}, not a run state (a dict)")
        _check_meta(where, arm)
        if "step" in arm and _check_int(where, "step", arm["step"], 0, MAX_STEP) != step:
            _fail(where, f"step {arm['step']:,} differs from the arena's step {step:,}")
        arm_cfg = _validate_run(arm, where)
        _check_arm_name(where, arm_name, arm, arm_cfg.rule)
        rules.append(arm_cfg.rule)
        for field in ARENA_SHAPE_FIELDS:
            if getattr(arm_cfg, field) != getattr(cfg, field):
                _fail(where, f"config {field} = {getattr(arm_cfg, field)!r} differs from the "
                      f"arena's {getattr(cfg, field)!r}; every arm shares the arena's data "
                      "and network sizes")
    # `info` shows this field: it must say what the arms are (arm names may differ
    # from their rules: a live rule switch keeps an arm's name)
    if state.get("rule") is not None and state["rule"] != ",".join(rules):
        _fail(name, f"its rule {_clip(str(state['rule']), 60)!r} is not its arms' rules "
                    f"{','.join(rules)!r}")


def _check_arm_name(where: str, arm_name: str, arm: dict, rule: str) -> None:
    """An arm named after a rule ('bce', 'reinforce-2', 'rlhf:kl_weight=0.5') holds that
    rule's run, or its log shows the live switch from it (a switch keeps the name): so
    `extract --arm bce` never hands over another rule's arm in silence."""
    named = re.sub(r"-\d+$", "", arm_name.split(":")[0].strip())
    if named not in RULES or named == rule:
        return
    switches = [text for _, text in arm["metrics"].get("events", [])
                if isinstance(text, str) and text.startswith("rule: ")]
    if not (switches and switches[0].startswith(f"rule: {named} -> ")
            and switches[-1].endswith(f"-> {rule}")):
        _fail(where, f"the arm named {_clip(arm_name, 60)!r} holds a {rule} run, and its log "
                     f"shows no switch from {named}; an arm is named after its rule")


def _validate_run(state, name: str) -> TrainConfig:
    if not isinstance(state, dict):
        _fail(name, f"the run state is {_describe(state)}, not a dict")
    missing = [k for k in RUN_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{name} is missing {', '.join(missing)}")
    _check_fields(name, "a run state", state, RUN_FIELDS)
    cfg = _config(name, state)
    if state.get("rule") is not None and state["rule"] != cfg.rule:   # info would show it
        _fail(name, f"its rule {_clip(str(state['rule']), 40)!r} is not its config's rule "
                    f"{cfg.rule!r}")
    # The data set's shape decides the first / last layer sizes; it comes from the
    # registry, so validating never reads (or creates) the data root a file names.
    shape = sample_shape(cfg.data, cfg.image_size)
    dim, is_image = math.prod(shape), len(shape) == 3
    step = _check_int(name, "step", state["step"], 0, MAX_STEP)
    if "rule_start" in state:
        _check_int(name, "rule_start", state["rule_start"], 0, step,
                   fix=f"it must be a step of the run, at most its step {step:,}; {DAMAGED}")

    g_sizes = [cfg.latent_dim, *cfg.g_hidden, dim]
    d_sizes = [dim * cfg.pac, *cfg.d_hidden, 1]   # a packed D sees pac samples at once
    _check_weights(name, "generator", state["generator"], g_sizes)
    for key in ("generator_ema", "generator_ref"):
        if key in state:
            _check_weights(name, key, state[key], g_sizes, like="generator")
    _check_weights(name, "discriminator", state["discriminator"], d_sizes)
    _check_optimizer(name, "g_optimizer", state["g_optimizer"], "generator",
                     _n_params(g_sizes))
    _check_optimizer(name, "d_optimizer", state["d_optimizer"], "discriminator",
                     _n_params(d_sizes))
    if "rule_state" in state:
        _check_rule_state(name, state["rule_state"], cfg.latent_dim)
    _check_rng(name, state["rng"])
    _check_fixed_z(name, state["fixed_z"], cfg.latent_dim)
    _check_metrics(name, state["metrics"], step)
    if "snapshots" in state:
        _check_snapshots(name, state["snapshots"], step, dim, is_image)
    if "data_points" in state:
        _check_data_points(name, state["data_points"], cfg)
    return cfg


def _check_data_points(name: str, t, cfg: TrainConfig) -> None:
    """The user's own points a run trained on (core/io/saved_points.py): float64 (N, 2),
    finite, as many as a points CSV may hold, and only in a run on data = points."""
    if cfg.data != "points":
        _fail(name, f"holds data_points, but its data is {cfg.data!r}; only runs on "
                    "data = 'points' save their points")
    _check_tensor(name, "data_points", t, (torch.float64,), ndim=2)
    _check_layout(name, "data_points", t)
    problem = points_problem(t.numpy())
    if problem:
        _fail(name, f"data_points {problem}")


MAX_RULE_STATE = 8   # tensors a rule keeps of its own (the latent rule: its map and Adam)


def _check_rule_state(name: str, items, latent_dim: int) -> None:
    """A rule's own state: a few named, finite float32 vectors no longer than a map of
    the latent space (latent_dim^2 + latent_dim)."""
    if not isinstance(items, dict) or len(items) > MAX_RULE_STATE:
        _fail(name, f"rule_state is {_describe(items)}, not a dict of at most "
                    f"{MAX_RULE_STATE} tensors")
    for key, t in items.items():
        _check_text(name, "rule_state key", key, MAX_NAME)
        field = f"rule_state/{_clip(key)}"
        _check_tensor(name, field, t, (torch.float32,), ndim=1)
        if t.numel() > latent_dim * (latent_dim + 1):
            _fail(name, f"{field} has {t.numel():,} values, more than a map of the "
                        f"{latent_dim}-dimensional latent space")
        _check_layout(name, field, t)
        _check_finite(name, field, t)


def _config(name: str, state: dict) -> TrainConfig:
    try:
        return config_of(state)
    except CheckpointError as exc:
        msg = str(exc)
        if name != "checkpoint":   # say which file / arm
            msg = msg.replace("checkpoint config", f"{name}: config", 1)
        raise CheckpointError(msg) from None


# -- plain values -------------------------------------------------------------------------
def _check_meta(name: str, state: dict) -> None:
    """Descriptive fields: shown by `python -m core info` and the Checkpoints page, and
    run_id may name a folder, so it must be a plain name."""
    run_id = state.get("run_id")
    if run_id is not None:
        _check_text(name, "run_id", run_id, MAX_NAME)
        if run_id in (".", "..") or any(c in run_id for c in "/\\\0") or not run_id.strip():
            _fail(name, f"run_id {run_id!r} is not a plain name (no path separators)")
    for field, limit in (("rule", MAX_TEXT), ("torch_version", MAX_NAME)):
        if state.get(field) is not None:
            _check_text(name, field, state[field], limit)
    saved_at = state.get("saved_at")
    if saved_at is not None:
        _check_number(name, "saved_at", saved_at, 0.0, 1e11)
    if "notes" in state:
        _check_notes(name, state["notes"])


def _check_fields(name: str, what: str, found: dict, allowed: tuple) -> None:
    unknown = [k for k in found if k not in allowed]
    if unknown:
        _fail(name, f"holds an unknown field {_clip(repr(unknown[0]), 60)} ({len(unknown):,} such); "
              f"{what} has only: {', '.join(allowed)}")


def _check_notes(name: str, notes) -> None:
    """The user's display name and note: shown as plain text, never markdown."""
    if not isinstance(notes, dict) or set(notes) != {"name", "text"}:
        _fail(name, f"notes is {_describe(notes)}, not a dict of name and text")
    _check_text(name, "notes name", notes["name"], MAX_NOTE_NAME)
    _check_text(name, "notes text", notes["text"], MAX_NOTE_TEXT)


def _check_int(name: str, field: str, value, low: int, high: int, fix: str = DAMAGED) -> int:
    if type(value) is not int:
        _fail(name, f"{field} is {_describe(value)}, not an integer", fix)
    if not low <= value <= high:
        _fail(name, f"{field} = {value:,} is out of range [{low:,}, {high:,}]", fix)
    return value


def _check_number(name: str, field: str, value, low: float, high: float, *,
                  low_open: bool = False, high_open: bool = False,
                  fix: str = DAMAGED) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(name, f"{field} is {_describe(value)}, not a number", fix)
    span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if not math.isfinite(value):
        _fail(name, f"{field} = {value!r} is not finite; allowed: {span}", fix)
    if (value <= low if low_open else value < low) or (value >= high if high_open
                                                       else value > high):
        _fail(name, f"{field} = {value!r} is out of range {span}", fix)
    return float(value)


def _check_text(name: str, field: str, value, limit: int) -> str:
    if not isinstance(value, str):
        _fail(name, f"{field} is {_describe(value)}, not text")
    if len(value) > limit:
        _fail(name, f"{field} is {len(value):,} characters long; at most {limit:,} allowed")
    return value


# -- tensors -------------------------------------------------------------------------------
def _check_tensor(name: str, field: str, t, dtypes: tuple, *, ndim: int | None = None) -> None:
    """A dense CPU tensor of one of `dtypes` (and `ndim` dimensions); shapes are checked by
    the caller before the layout (_check_layout), so the message names the size."""
    if not isinstance(t, torch.Tensor):
        _fail(name, f"{field} is {_describe(t)}, not a tensor")
    if (t.layout != torch.strided or t.is_quantized or t.is_nested
            or t.device.type != "cpu"):
        _fail(name, f"{field} is a {t.layout} / {t.device.type}"
              f"{' quantized' if t.is_quantized else ''} tensor; checkpoints hold dense "
              "CPU tensors only")
    if t.dtype not in dtypes:
        _fail(name, f"{field} has dtype {_dtype(t.dtype)}, but must be "
              f"{' or '.join(_dtype(d) for d in dtypes)}")
    if ndim is not None and t.dim() != ndim:
        _fail(name, f"{field} has shape {tuple(t.shape)}, but must have {ndim} "
              f"dimension{'s' if ndim != 1 else ''}")


def _check_layout(name: str, field: str, t: torch.Tensor) -> None:
    """Contiguous, no zero strides: a view that would expand (e.g. zeros(1).expand(4,
    4096)) or overlap passes shape checks but breaks in-place kernels and allocates
    its full size on the first copy."""
    if not t.is_contiguous() or any(st == 0 for sz, st in zip(t.shape, t.stride()) if sz > 1):
        _fail(name, f"{field} is not a contiguous tensor (shape {tuple(t.shape)}, strides "
              f"{tuple(t.stride())}: an expanded or overlapping view)", RESAVE)


def _check_finite(name: str, field: str, t: torch.Tensor, fix: str = DIVERGED) -> None:
    if t.numel() and not bool(torch.isfinite(t).all()):
        _fail(name, f"{field} holds NaN or infinite values", fix)


def _n_params(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _check_weights(name: str, which: str, weights, sizes: list[int], like: str = "") -> None:
    if not isinstance(weights, dict):
        _fail(name, f"{which} weights are {_describe(weights)}, not a state dict")
    expected = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        expected[f"layers.{i}.weight"] = (b, a)
        expected[f"layers.{i}.bias"] = (b,)
    if set(weights) != set(expected):
        keys = sorted(str(k) for k in weights)
        need = f"the same layers as {like}" if like else "its config needs"
        raise CheckpointError(_clip(f"{name}: {which} has layers {keys}, but {need} "
                                    f"{sorted(expected)}", 600))
    for key, shape in expected.items():
        t = weights[key]
        field = f"{which} {key}"
        _check_tensor(name, field, t, (torch.float32,))
        got = tuple(t.shape)
        if got != shape:
            raise CheckpointError(f"{name}: {field} has shape {got}, but the config "
                                  f"(layer sizes {sizes}) needs {shape}")
        _check_layout(name, field, t)
        _check_finite(name, field, t)


def _check_optimizer(name: str, field: str, opt, which: str, n_params: int) -> None:
    """torch.optim.Adam state dict of an optimiser over one flat parameter of n_params."""
    if not isinstance(opt, dict):
        _fail(name, f"{field} is {_describe(opt)}, not an optimiser state dict")
    for key in ("state", "param_groups"):
        if key not in opt:
            _fail(name, f"{field} has no {key!r}; it is not an Adam state dict")
    _check_fields(name, field, opt, ("state", "param_groups"))
    groups = opt["param_groups"]
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
        _fail(name, f"{field} param_groups is {_describe(groups)}, but must be a list of one "
              f"parameter group (the {which}'s flat parameter buffer)")
    _check_param_group(name, f"{field} param_groups[0]", groups[0])

    state = opt["state"]
    if not isinstance(state, dict):
        _fail(name, f"{field} state is {_describe(state)}, not a dict")
    extra = [k for k in state if not (type(k) is int and k == 0)]
    if extra:
        _fail(name, f"{field} state has entries for parameters {_clip(repr(extra), 80)}, but "
              f"the optimiser has one parameter (id 0)")
    if not state:
        return   # before the first step
    entry = state[0]
    if not isinstance(entry, dict):
        _fail(name, f"{field} state[0] is {_describe(entry)}, not a dict")
    missing = [k for k in ADAM_STATE_KEYS if k not in entry]
    unknown = sorted(str(k) for k in entry if k not in ADAM_STATE_KEYS)
    if missing or unknown:
        _fail(name, f"{field} state[0] has keys {sorted(str(k) for k in entry)}, but Adam's "
              f"state is {list(ADAM_STATE_KEYS)}")
    for key in ("exp_avg", "exp_avg_sq"):
        t = entry[key]
        where = f"{field} {key}"
        _check_tensor(name, where, t, (torch.float32,))
        if t.numel() != n_params:
            _fail(name, f"{where} has {t.numel():,} elements, but the {which} has "
                  f"{n_params:,} parameters")
        if tuple(t.shape) != (n_params,):
            _fail(name, f"{where} has shape {tuple(t.shape)}, but must be a flat vector of "
                  f"the {which}'s {n_params:,} parameters")
        _check_layout(name, where, t)
        _check_finite(name, where, t)
    if bool((entry["exp_avg_sq"] < 0).any()):
        _fail(name, f"{field} exp_avg_sq has negative values (it is a mean of squares)")
    _check_moments(name, field, entry, groups[0]["betas"])
    step = entry["step"]
    _check_tensor(name, f"{field} step", step, (torch.float32, torch.float64))
    if step.dim() != 0:
        _fail(name, f"{field} step has shape {tuple(step.shape)}, but must be a scalar "
              "(0-d) tensor")
    value = float(step)
    if not math.isfinite(value) or not 0 <= value <= MAX_STEP or value != int(value):
        _fail(name, f"{field} step = {value!r} is not a whole number of steps in "
              f"[0, {MAX_STEP:,}]")


def _check_moments(name: str, field: str, entry: dict, betas) -> None:
    """Adam's moments must fit together: m = (1-b1) sum b1^k g_k and v = (1-b2) sum
    b2^k g_k^2 give |m| <= c sqrt(v) with c = (1-b1) / sqrt((1-b2)(1 - b1^2/b2)) by
    Cauchy-Schwarz. A crafted m far above it (1e30 with v = 0) steps the weights by
    lr x m / eps and blows them up without a word; twice c leaves room for betas that
    changed on a resume."""
    b1, b2 = float(betas[0]), float(betas[1])
    if b1 * b1 >= b2:   # the bound does not converge: nothing to check
        return
    c = (1 - b1) / math.sqrt((1 - b2) * (1 - b1 * b1 / b2))
    excess = entry["exp_avg"].abs() - 2 * c * entry["exp_avg_sq"].sqrt()
    if bool((excess > 1e-6).any()):
        _fail(name, f"{field} exp_avg is larger than its exp_avg_sq allows (Adam's moments "
              f"satisfy |exp_avg| <= {c:.3g} sqrt(exp_avg_sq)); the optimiser state was "
              "crafted or damaged")


def _check_param_group(name: str, field: str, group: dict) -> None:
    for key in ("params", "lr", "betas", "eps", "weight_decay"):
        if key not in group:
            _fail(name, f"{field} has no {key!r}; it is not an Adam parameter group")
    params = group["params"]
    if not (isinstance(params, list) and len(params) == 1 and type(params[0]) is int
            and params[0] == 0):
        _fail(name, f"{field} params is {_describe(params)}, but must be [0] (one flat "
              "parameter)")
    fix = DAMAGED   # the loader uses the config's lr / betas (optimizer_state_for)
    _check_number(name, f"{field} lr", group["lr"], 0.0, 1.0, low_open=True, fix=fix)
    betas = group["betas"]
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        _fail(name, f"{field} betas is {_describe(betas)}, but must be a pair of numbers", fix)
    for i, beta in enumerate(betas):
        _check_number(name, f"{field} betas[{i}]", beta, 0.0, 1.0, high_open=True, fix=fix)
    _check_number(name, f"{field} eps", group["eps"], 0.0, 1.0, low_open=True)
    _check_number(name, f"{field} weight_decay", group["weight_decay"], 0.0, 1.0)
    for key in ADAM_FALSE_FLAGS:
        if key in group and group[key] is not False:
            _fail(name, f"{field} {key} is {_describe(group[key])}; GAN RL Lab's Adam has "
                  f"{key} = False")
    for key in ADAM_OPTIONAL_BOOL:
        if key in group and group[key] is not None and not isinstance(group[key], bool):
            _fail(name, f"{field} {key} is {_describe(group[key])}, but must be true, false "
                  "or None")
    known = {"params", "lr", "betas", "eps", "weight_decay", *ADAM_FALSE_FLAGS,
             *ADAM_OPTIONAL_BOOL}
    for key, value in group.items():   # options newer torch versions add: plain scalars
        if key in known:
            continue
        if not isinstance(key, str):
            _fail(name, f"{field} has a key {_describe(key)}; option names are text")
        if key == "param_names":
            if not (isinstance(value, list) and len(value) == 1
                    and isinstance(value[0], str) and len(value[0]) <= MAX_NAME):
                _fail(name, f"{field} param_names is {_describe(value)}, but must name one "
                      "parameter")
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            _fail(name, f"{field} {key} is {_describe(value)}; Adam options are plain values")
        elif isinstance(value, str) and len(value) > MAX_NAME:
            _fail(name, f"{field} {key} is {len(value):,} characters long")


def _cpu_rng_state_len() -> int:
    if not hasattr(_cpu_rng_state_len, "n"):
        _cpu_rng_state_len.n = int(torch.Generator().get_state().numel())
    return _cpu_rng_state_len.n


def _check_rng(name: str, rng) -> None:
    if not isinstance(rng, dict):
        _fail(name, f"rng is {_describe(rng)}, but must be a dict with the 'data' and "
              "'noise' generator states")
    _check_fields(name, "rng", rng, RNG_FIELDS)
    cpu_len = _cpu_rng_state_len()
    for key in ("data", "noise"):
        field = f"rng {key}"
        if key not in rng:
            _fail(name, f"rng has no {key!r} generator state")
        t = rng[key]
        _check_tensor(name, field, t, (torch.uint8,), ndim=1)
        if t.numel() not in (cpu_len, CUDA_RNG_STATE_LEN):
            _fail(name, f"{field} has {t.numel():,} bytes, but a torch generator state has "
                  f"{cpu_len:,} (CPU) or {CUDA_RNG_STATE_LEN} (CUDA); it is cut short or not "
                  "a generator state")
        _check_layout(name, field, t)
        raw = t.numpy().tobytes()
        if len(raw) == CUDA_RNG_STATE_LEN:
            (offset,) = struct.unpack_from("<q", raw, 8)
            if offset < 0 or offset % 4:
                _fail(name, f"{field} has an invalid Philox offset ({offset})")
        elif len(raw) == 5056:
            # CPUGeneratorImplState: u64 seed, i32 left, i32 seeded, u64 next, then the
            # 624 mt19937 words. Each draw reads word `next` and decrements `left`; a new
            # block resets left = 624, next = 0 (seeding: left = 1, next = 0), so a
            # state that never reads past the 624 words has 1 <= left, next <= 624 and
            # left + next <= 625. torch checks only the first two.
            left, seeded, nxt = struct.unpack_from("<iiQ", raw, 8)
            if (seeded != 1 or not 1 <= left <= MT_STATE_N or nxt > MT_STATE_N
                    or left + nxt > MT_STATE_N + 1):
                _fail(name, f"{field} is not a valid mt19937 state (left={left}, "
                      f"next={nxt}, seeded={seeded})")
            # the 624 words follow as 8-byte slots; all zero is mt19937's fixed point:
            # every draw is 0 (every batch sample 0, every z 0) and validation let it by
            if not any(raw[24:24 + 8 * MT_STATE_N]):
                _fail(name, f"{field} is an all-zero mt19937 state, which draws only "
                      "zeros")


def _check_fixed_z(name: str, z, latent_dim: int) -> None:
    field = "fixed_z"
    _check_tensor(name, field, z, (torch.float32,))
    shape = tuple(z.shape)
    if len(shape) != 2 or shape[1] != latent_dim or not 1 <= shape[0] <= MAX_FIXED_Z:
        _fail(name, f"fixed_z has shape {shape}, but must be (n, {latent_dim}) (latent_dim "
              f"{latent_dim}, 1 <= n <= {MAX_FIXED_Z:,})")
    _check_layout(name, field, z)
    _check_finite(name, field, z, fix=DAMAGED)


def _check_metrics(name: str, metrics, step: int) -> None:
    """MetricLog.state(): {"columns": {"step": int64 (n,), name: float (n,)},
    "events": [(step, text), ...]}; one row per step at most."""
    if not isinstance(metrics, dict):
        _fail(name, f"metrics is {_describe(metrics)}, but must be a dict with 'columns' "
              "and 'events' (MetricLog.state())")
    _check_fields(name, "metrics", metrics, METRICS_FIELDS)
    columns = metrics.get("columns", {})
    if not isinstance(columns, dict):
        _fail(name, f"metrics columns is {_describe(columns)}, not a dict of name -> column")
    if len(columns) > MAX_METRIC_COLUMNS:
        _fail(name, f"metrics has {len(columns):,} columns; at most {MAX_METRIC_COLUMNS:,}")
    for key in columns:
        if not isinstance(key, str) or not key or len(key) > MAX_NAME:
            _fail(name, f"a metrics column is named {_describe(key)}; column names are text")
    if columns and "step" not in columns:
        _fail(name, "metrics columns have no 'step' column")
    n = 0
    if "step" in columns:
        steps = columns["step"]
        field = "metrics column 'step'"
        _check_tensor(name, field, steps, (torch.int64, torch.int32), ndim=1)
        n = steps.numel()
        if n > step + 1:
            _fail(name, f"{field} has {n:,} rows, but the run has only {step:,} steps")
        _check_layout(name, field, steps)
        if n and (int(steps.min()) < 0 or int(steps.max()) > step):
            _fail(name, f"{field} holds steps outside [0, {step:,}]")
    for key, col in columns.items():
        if key == "step":
            continue
        field = f"metrics column {key!r}"
        _check_tensor(name, field, col, (torch.float64, torch.float32), ndim=1)
        if col.numel() != n:
            _fail(name, f"{field} has {col.numel():,} values, but the step column has "
                  f"{n:,}: the columns are ragged")
        _check_layout(name, field, col)
    events = metrics.get("events", [])
    if not isinstance(events, (list, tuple)):
        _fail(name, f"metrics events is {_describe(events)}, not a list of (step, text)")
    if len(events) > MAX_EVENTS:
        _fail(name, f"metrics has {len(events):,} events; at most {MAX_EVENTS:,}")
    for i, event in enumerate(events):
        if not isinstance(event, (list, tuple)) or len(event) != 2:
            _fail(name, f"metrics event {i} is {_describe(event)}, not a (step, text) pair")
        _check_int(name, f"metrics event {i} step", event[0], 0, step)
        _check_text(name, f"metrics event {i} text", event[1], MAX_TEXT)


def _check_snapshots(name: str, items, step: int, dim: int, is_image: bool) -> None:
    """SnapshotStore.state(): a list of {"step", "seq", and "png" (image data) or
    "points", "heatmap", "extent" (2-D data)}."""
    if not isinstance(items, list):
        _fail(name, f"snapshots is {_describe(items)}, but must be a list of snapshots")
    if len(items) > MAX_SNAPSHOTS:
        _fail(name, f"snapshots has {len(items):,} entries, but a run keeps at most "
              f"{MAX_SNAPSHOTS:,} (the largest max_snapshots)")
    for i, item in enumerate(items):
        where = f"snapshot {i}"
        if not isinstance(item, dict):
            _fail(name, f"{where} is {_describe(item)}, not a dict")
        if "step" not in item:
            _fail(name, f"{where} has no step")
        _check_fields(name, where, item, SNAPSHOT_FIELDS)
        snap_step = _check_int(name, f"{where} step", item["step"], 0, step)
        if "seq" in item:
            _check_int(name, f"{where} seq", item["seq"], 0, MAX_STEP)
        needed = ("png",) if is_image else ("points", "heatmap", "extent")
        for key in needed:
            if key not in item:
                _fail(name, f"{where} has no {key!r}; snapshots of "
                      f"{'image' if is_image else '2-D'} data hold {', '.join(needed)}")
        if "png" in item:
            _check_png(name, f"{where} png", item["png"], snap_step)
        if "points" in item:
            pts = item["points"]
            field = f"{where} points"
            _check_tensor(name, field, pts, (torch.float32,), ndim=2)
            if pts.shape[1] != dim or not 1 <= pts.shape[0] <= MAX_SNAPSHOT_POINTS:
                _fail(name, f"{field} has shape {tuple(pts.shape)}, but must be (n, {dim}) "
                      f"with 1 <= n <= {MAX_SNAPSHOT_POINTS:,}")
            _check_layout(name, field, pts)
        if "heatmap" in item:
            hm = item["heatmap"]
            field = f"{where} heatmap"
            _check_tensor(name, field, hm, (torch.float32,), ndim=2)
            r = hm.shape[0]
            if hm.shape[1] != r or not 1 <= r <= MAX_HEATMAP_RES:
                _fail(name, f"{field} has shape {tuple(hm.shape)}, but must be square, at "
                      f"most {MAX_HEATMAP_RES} per side")
            _check_layout(name, field, hm)
        if "extent" in item:
            ext = item["extent"]
            field = f"{where} extent"
            if not isinstance(ext, (list, tuple)) or len(ext) != 4:
                _fail(name, f"{field} is {_describe(ext)}, but must be 4 numbers "
                      "(xmin, xmax, ymin, ymax)")
            for j, v in enumerate(ext):
                _check_number(name, f"{field}[{j}]", v, -1e9, 1e9)
            if not (ext[0] < ext[1] and ext[2] < ext[3]):
                _fail(name, f"{field} {list(ext)} is empty (needs xmin < xmax, ymin < ymax)")


def _check_png(name: str, field: str, t, step: int) -> None:
    _check_tensor(name, field, t, (torch.uint8,), ndim=1)
    n = t.numel()
    if not 33 <= n <= MAX_PNG_BYTES:   # signature + IHDR chunk alone are 33 bytes
        _fail(name, f"{field} has {n:,} bytes; a PNG grid has 33 to {MAX_PNG_BYTES:,}")
    _check_layout(name, field, t)
    problem = png_problem(t.numpy())   # a view of the tensor's bytes: nothing is copied
    if problem is not None:
        _fail(name, f"{field} {problem} (the sample grid of step {step:,})")


def png_problem(png) -> str | None:
    """What is wrong with a snapshot grid PNG's structure (bytes, or any 1-D byte
    buffer), found without decompressing anything: the signature, an IHDR that is
    invalid or over the caps (MAX_GRID_SIDE a side, MAX_GRID_BYTES decoded), a changed
    byte (every chunk's CRC; Pillow checks none for the pixel data), a cut (no IEND) and
    more than MAX_PNG_CHUNKS chunks (so the check itself is bounded). None when it is
    sound; otherwise the text completes "its sample grid PNG ..."."""
    png = memoryview(png).cast("B")
    if bytes(png[:8]) != PNG_SIGNATURE:
        return "is not PNG data"
    pos, first, chunks = 8, True, 0
    while pos + 12 <= len(png):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            return f"has more than {MAX_PNG_CHUNKS:,} chunks; a snapshot grid has far fewer"
        length, kind = struct.unpack_from(">I4s", png, pos)
        end = pos + 12 + length
        if end > len(png):
            break
        # the header first: a bomb is named by its size even where its CRC is wrong too
        if first and (problem := _ihdr_problem(kind, bytes(png[pos + 8:end - 4]))):
            return problem
        if zlib.crc32(png[pos + 4:end - 4]) != struct.unpack_from(">I", png, end - 4)[0]:
            return f"fails the CRC check of its {kind.decode('latin-1')!r} chunk (a changed byte)"
        if kind == b"IEND":
            return None
        pos, first = end, False
    return "is cut short (it ends before its IEND chunk)"


def _ihdr_problem(kind: bytes, data: bytes) -> str | None:
    if kind != b"IHDR" or len(data) != 13:
        return "does not start with a valid IHDR chunk"
    width, height, depth, colour = struct.unpack(">IIBB", data[:10])
    if not (1 <= width <= MAX_GRID_SIDE and 1 <= height <= MAX_GRID_SIDE):
        return (f"claims {width:,} x {height:,} pixels; a snapshot grid has at most "
                f"{MAX_GRID_SIDE:,} a side")
    if colour not in PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        return f"has an invalid colour type {colour} or bit depth {depth}"
    if width * height * PNG_CHANNELS[colour] * depth // 8 > MAX_GRID_BYTES:
        return (f"would decode to more than {MAX_GRID_BYTES // 2**20} MiB "
                f"({width:,} x {height:,}, colour type {colour}, {depth}-bit)")
    return None


# -- messages --------------------------------------------------------------------------------
def _fail(name: str, problem: str, fix: str = DAMAGED):
    raise CheckpointError(_one_line(f"{name}: {problem}; {fix}"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int = 200) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _describe(value) -> str:
    """What a value is, in a few words (never a tensor's contents)."""
    if isinstance(value, torch.Tensor):
        return f"a {_dtype(value.dtype)} tensor of shape {tuple(value.shape)}"
    if value is None:
        return "None"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        text = f"{value:,}" if isinstance(value, int) and abs(value) < 10**30 else repr(value)
        return f"the number {_clip(text, 40)}"
    if isinstance(value, str):
        return f"the text {_clip(repr(value), 60)}"
    if isinstance(value, dict):
        return f"a dict of {len(value):,} entries"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value):,} items"
    return f"a {type(value).__name__}"
