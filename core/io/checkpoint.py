"""Versioned checkpoints: atomic save, pickle-free load, validation with clear errors.

A checkpoint is a dict of tensors, state dicts and plain Python values only. Files are
safetensors (schema 2, core/io/format.py: tensors as raw named arrays, the rest as JSON
metadata, a SHA-256 checksum), so a file can carry neither code nor a crafted tensor
layout. Files of the old format (`torch.save`, `.pt`, schema 1) still load, through
`torch.load(weights_only=True)` (a pickled callable is refused) and the same validation;
load_with_format says which format a file had, so the user can be told to re-save it.
Layout (the same nested dict in both formats):

    schema_version, kind ("run" or "arena"), torch_version, saved_at,
    config (TrainConfig.to_dict()), run_id, step, rule, rule_start (optional),
    notes (optional: {"name": display name, "text": the user's note}, both text),
    generator, generator_ema and generator_ref (optional; the rlhf rule's KL anchor),
    rule_state (optional; a rule's own vectors: the latent rule's map and its Adam),
    discriminator, g_optimizer, d_optimizer
    (state dicts), rng {data, noise} (generator states), fixed_z,
    metrics {columns, events}, snapshots,
    arms (arena checkpoints only: name -> the per-arm fields above)

Validation (core/io/schema.py) checks every loaded state before it is returned: the
types, shapes and ranges of all fields, with a one-line CheckpointError naming the first
problem found.

Loading an optimiser state: torch's Optimizer.load_state_dict takes every
hyperparameter from the saved param_groups. The config is the source of truth for lr
and betas: load `optimizer_state_for(state["g_optimizer"], cfg.g_opt)` (a copy with
the config's lr and betas), not the raw dict.
"""
from __future__ import annotations

import copy
import io
import math
import os
import pickle
import time
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from core.base.files import read_bounded, write_atomic
from core.engine.config import OptimConfig
from core.engine.models import make_adam
from core.io import format as ckpt_format
from core.io.schema import (
    DAMAGED,
    LEGACY_SCHEMA_VERSION,
    SCHEMA_VERSION,
    CheckpointError,
    _clip,
    _describe,
    _one_line,
    validate,
)
from core.io.schema import config_of as config_of  # re-exported: core/cli imports it from here

SUFFIX = ckpt_format.SUFFIX
LEGACY_SUFFIX = ".pt"
CHECKPOINT_SUFFIXES = (SUFFIX, LEGACY_SUFFIX)   # what file pickers and folder scans accept
CONVERTED_NOTE = "converted from the old .pt format; save again to write .safetensors"


def _plain(obj):
    """numpy arrays -> tensors, tuples -> lists: what weights_only loading accepts."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _payload(state: dict, kind: str, version: int) -> dict:
    return _plain({**state, "schema_version": version, "kind": kind,
                   "torch_version": str(torch.__version__), "saved_at": time.time()})


def to_bytes(state: dict, kind: str = "run") -> bytes:
    """A checkpoint file's bytes (safetensors, schema 2)."""
    return ckpt_format.encode(_payload(state, kind, SCHEMA_VERSION))


def to_pt_bytes(state: dict, kind: str = "run") -> bytes:
    """The old format (torch.save, schema 1), which GAN RL Lab no longer writes: for
    tests and bench/fuzz_checkpoints.py, which check that such files still load safely."""
    buf = io.BytesIO()
    torch.save(_payload(state, kind, LEGACY_SCHEMA_VERSION), buf)
    return buf.getvalue()


def old_format_note(name: str) -> str:
    """What to tell the user once after loading an old .pt file."""
    return f"{name}: {CONVERTED_NOTE}"


def save_checkpoint(state: dict, path: str | Path, kind: str = "run") -> Path:
    """Write a checkpoint atomically (see write_atomic)."""
    return write_atomic(to_bytes(state, kind), path)


STALE_TEMP_S = 600   # a temp file this old is no save in progress: a killed one


def remove_stale_temp(folder: str | Path, older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Delete the temp files that saves killed mid-write left in a folder (write_atomic
    names them .<file>.<random>.tmp); fresh ones may belong to a save in progress."""
    now, removed = time.time(), []
    temps = [t for suffix in CHECKPOINT_SUFFIXES for t in Path(folder).glob(f".*{suffix}.*.tmp")]
    for tmp in temps:
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass   # gone already, or not ours to remove: leave it
    return removed


def load_checkpoint(source: str | Path | bytes | BinaryIO) -> dict:
    """Load and validate; raises CheckpointError naming the problem."""
    return load_with_format(source)[0]


def load_with_format(source: str | Path | bytes | BinaryIO) -> tuple[dict, bool]:
    """(validated state, whether the file had the old .pt format); the format is told by
    the content, not the file name."""
    name = str(source) if isinstance(source, (str, Path)) else "the uploaded file"
    if isinstance(source, (str, Path)) and _special_file(source):  # reading could block
        raise CheckpointError(f"{name} is not a regular file (a FIFO or device); give a "
                              "checkpoint file")
    try:
        raw = _read_all(source)
    except FileNotFoundError:
        raise CheckpointError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{name} is a folder, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    except Exception as exc:
        raise CheckpointError(f"{name}: cannot read it ({type(exc).__name__})") from None
    if not isinstance(raw, (bytes, bytearray)):
        raise CheckpointError(f"{name} {ckpt_format.NOT_CHECKPOINT}")
    if not ckpt_format.looks_like_pickle(raw):
        try:
            state = ckpt_format.decode(raw)
        except ckpt_format.FormatError as exc:
            raise CheckpointError(_one_line(f"{name} {exc}")) from None
        except Exception as exc:   # a bug, or bytes no check foresaw: still one line
            raise CheckpointError(_one_line(
                f"{name} could not be read ({type(exc).__name__}: {_clip(str(exc))}); "
                f"{DAMAGED}")) from None
        validate(state, name)
        return state, False
    try:
        with warnings.catch_warnings():   # torch's notes on pickle protocols and sparse
            warnings.simplefilter("ignore")   # checks: noise around a one-line error
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long; the useful part follows "WeightsUnpickler error:"
        text = str(exc).split("WeightsUnpickler error:")[-1]
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        raise CheckpointError(
            f"{name} holds Python objects that a checkpoint never contains, so it was "
            f"refused without running them (weights_only load). Only load checkpoints "
            f"saved by GAN RL Lab. Detail: {first[:200]}") from None
    except Exception as exc:
        raise CheckpointError(f"{name} is not a PyTorch checkpoint file "
                              f"({type(exc).__name__}); load a .safetensors or .pt file "
                              "saved by GAN RL Lab") from None
    validate(state, name, version=LEGACY_SCHEMA_VERSION)
    return state, True


def _special_file(path: str | Path) -> bool:
    """A FIFO, device or socket: reading one could block or never end (/dev/zero)."""
    return os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path)


MAX_FILE_BYTES = 512 * 2**20   # the page's upload limit; real checkpoints are a few tens of MB


def _read_all(source) -> bytes:
    """At most MAX_FILE_BYTES, checked before reading: a 1 GB file cost 1.6 GB of
    memory only to be refused."""
    if isinstance(source, (bytes, bytearray)):
        raw = bytes(source)
    elif isinstance(source, (str, Path)):
        return read_bounded(source, MAX_FILE_BYTES, "checkpoint")
    else:
        raw = source.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise OSError(f"it is more than {MAX_FILE_BYTES:,} bytes, more than a checkpoint "
                      "can be")
    return raw


# -- helpers for loaders and summaries --------------------------------------------------------
def optimizer_state_for(state_dict: dict, opt_cfg: OptimConfig) -> dict:
    """A copy of a validated Adam state dict whose hyperparameters are all the config's.

    torch's load_state_dict takes every hyperparameter from the saved param_groups; here
    only the moments and the step come from the file. lr and betas are the config's (a
    fine-tune may change them), and eps, weight_decay, fused, foreach... are what the
    lab's own Adam uses: a file's `fused: false` crashed the first resumed step, and its
    eps or weight_decay changed training without a word. Load it as
    `opt.load_state_dict(optimizer_state_for(state["g_optimizer"], cfg.g_opt))`; the
    copy also keeps torch from updating the checkpoint dict's moment tensors in place."""
    if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), list):
        raise CheckpointError("optimiser state is not an Adam state dict; validate the "
                              "checkpoint (load_checkpoint) first")
    if not all(isinstance(g, dict) for g in state_dict["param_groups"]):
        raise CheckpointError("optimiser state param_groups holds a non-dict; validate "
                              "the checkpoint (load_checkpoint) first")
    ours = make_adam(torch.nn.Parameter(torch.zeros(1)), opt_cfg).param_groups[0]
    group = {**{k: v for k, v in ours.items() if k not in ("params", "param_names")},
             "params": [0]}
    return {"state": copy.deepcopy(state_dict.get("state", {})),
            "param_groups": [copy.deepcopy(group) for _ in state_dict["param_groups"]]}


def _json_safe(value: Any, depth: int = 0):
    """Plain JSON values only: what json.dumps prints without raising."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 8:
        return "..."
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    return _describe(value)


def checkpoint_summary(state: dict) -> dict:
    """What `python -m core info` prints and the checkpoint table shows: JSON-safe
    values only, and never an exception, whatever the dict holds."""
    if not isinstance(state, dict):
        state = {}
    cfg = state.get("config")
    cfg = cfg if isinstance(cfg, dict) else {}
    safe = {k: _json_safe(state.get(k)) for k in
            ("kind", "schema_version", "run_id", "step", "rule", "torch_version", "saved_at")}
    out = {"kind": safe["kind"] if state.get("kind") is not None else "run",
           "schema_version": safe["schema_version"], "run_id": safe["run_id"],
           "step": safe["step"], "rule": safe["rule"], "data": _json_safe(cfg.get("data")),
           "torch_version": safe["torch_version"], "saved_at": safe["saved_at"],
           "config": _json_safe(cfg)}
    if state.get("notes") is not None:   # the user's run name and note
        out["notes"] = _json_safe(state["notes"])
    if out["kind"] == "arena":
        arms = state.get("arms")
        arms = arms if isinstance(arms, dict) else {}
        out["arms"] = {str(k): {"rule": _json_safe(a.get("rule")),
                                "step": _json_safe(a.get("step"))}
                       if isinstance(a, dict) else {"rule": None, "step": None}
                       for k, a in arms.items()}
    return out
