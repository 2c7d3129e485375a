"""Versioned checkpoints: atomic save, weights_only load, validation with clear errors.

A checkpoint is a dict of tensors, state dicts and plain Python values only, so
`torch.load(path, weights_only=True)` reads it and a file that smuggles a pickled
callable is refused. Layout (schema 1):

    schema_version, kind ("run" or "arena"), torch_version, saved_at,
    config (TrainConfig.to_dict()), run_id, step, rule,
    generator, discriminator, g_optimizer, d_optimizer (state dicts),
    rng {data, noise} (generator states), fixed_z, metrics {columns, events}, snapshots,
    arms (arena checkpoints only: name -> the per-arm fields above)
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .config import ConfigError, TrainConfig

SCHEMA_VERSION = 1
RUN_KEYS = ("config", "step", "generator", "discriminator", "g_optimizer", "d_optimizer",
            "rng", "fixed_z", "metrics")


class CheckpointError(ValueError):
    """The file is not a usable checkpoint; the message says what is wrong."""


def _plain(obj):
    """numpy arrays -> tensors, tuples -> lists: what weights_only loading accepts."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def to_bytes(state: dict, kind: str = "run") -> bytes:
    payload = _plain({**state, "schema_version": SCHEMA_VERSION, "kind": kind,
                      "torch_version": str(torch.__version__), "saved_at": time.time()})
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def save_checkpoint(state: dict, path: str | Path, kind: str = "run") -> Path:
    """Write a checkpoint atomically (see write_atomic)."""
    return write_atomic(to_bytes(state, kind), path)


def write_atomic(data: bytes, path: str | Path) -> Path:
    """Temp file in the same folder, fsync, os.replace: a half-written file never
    replaces a good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(source: str | Path | bytes | BinaryIO) -> dict:
    """Load and validate; raises CheckpointError naming the problem."""
    name = str(source) if isinstance(source, (str, Path)) else "the uploaded file"
    try:
        raw = _read_all(source)
    except FileNotFoundError:
        raise CheckpointError(f"{name}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    if not raw.startswith((b"PK\x03\x04", b"\x80")):  # torch.save zip, or a bare pickle
        raise CheckpointError(f"{name} is not a PyTorch checkpoint file; upload a .pt file "
                              "saved by GAN RL Lab")
    try:
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
                              f"({type(exc).__name__}); upload a .pt file saved by "
                              "GAN RL Lab") from None
    validate(state, name)
    return state


def _read_all(source) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    return source.read()


def validate(state, name: str = "checkpoint") -> None:
    if not isinstance(state, dict) or "schema_version" not in state:
        raise CheckpointError(f"{name} is a PyTorch file but not a GAN RL Lab checkpoint "
                              "(no schema_version)")
    version = state["schema_version"]
    if version != SCHEMA_VERSION:
        raise CheckpointError(f"{name} has schema version {version!r}; this version of "
                              f"GAN RL Lab reads version {SCHEMA_VERSION}")
    if state.get("kind") == "arena":
        arms = state.get("arms")
        if not isinstance(arms, dict) or not arms:
            raise CheckpointError(f"{name}: arena checkpoint without arms")
        for arm_name, arm in arms.items():
            _validate_run(arm, f"{name} (arm {arm_name!r})")
    else:
        _validate_run(state, name)


def config_of(state: dict) -> TrainConfig:
    try:
        return TrainConfig.from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint config is invalid: {exc}") from None


def _validate_run(state: dict, name: str) -> None:
    missing = [k for k in RUN_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{name} is missing {', '.join(missing)}")
    cfg = config_of(state)
    from .data import load_dataset  # data shape decides the first / last layer sizes
    try:
        dim = load_dataset(cfg).dim
    except Exception as exc:
        raise CheckpointError(f"{name}: its data set {cfg.data!r} cannot be loaded here: "
                              f"{exc}") from None
    _check_shapes(name, "generator", state["generator"], [cfg.latent_dim, *cfg.g_hidden, dim])
    _check_shapes(name, "discriminator", state["discriminator"], [dim, *cfg.d_hidden, 1])


def _check_shapes(name: str, which: str, weights, sizes: list[int]) -> None:
    if not isinstance(weights, dict):
        raise CheckpointError(f"{name}: {which} weights are not a state dict")
    expected = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        expected[f"layers.{i}.weight"] = (b, a)
        expected[f"layers.{i}.bias"] = (b,)
    if set(weights) != set(expected):
        raise CheckpointError(f"{name}: {which} has layers {sorted(weights)}, but its config "
                              f"needs {sorted(expected)}")
    for key, shape in expected.items():
        got = tuple(weights[key].shape)
        if got != shape:
            raise CheckpointError(f"{name}: {which} {key} has shape {got}, but the config "
                                  f"(layer sizes {sizes}) needs {shape}")


def checkpoint_summary(state: dict) -> dict:
    """What `python -m core info` prints and the checkpoint table shows."""
    cfg = state.get("config", {})
    out = {"kind": state.get("kind", "run"), "schema_version": state.get("schema_version"),
           "run_id": state.get("run_id"), "step": state.get("step"),
           "rule": state.get("rule"), "data": cfg.get("data"),
           "torch_version": state.get("torch_version"), "saved_at": state.get("saved_at"),
           "config": cfg}
    if out["kind"] == "arena":
        out["arms"] = {k: {"rule": a.get("rule"), "step": a.get("step")}
                       for k, a in state["arms"].items()}
    return out
