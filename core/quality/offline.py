"""Scoring a saved generator: a checkpoint (or one arena arm) -> its quality metrics."""
from __future__ import annotations

from torch import nn

from core.data.datasets import DataSet
from core.engine.models import build_models
from core.io.saved_points import dataset_of
from core.io.schema import CheckpointError, config_of
from core.quality.evaluate import EVAL_SAMPLES, evaluator_for


def generator_from_state(state: dict, ema: bool = False) -> tuple[nn.Module, DataSet]:
    """The generator of a run state (a checkpoint or one arena arm), on the CPU; with
    `ema`, its EMA weights (a checkpoint saved before EMA existed has none: an error)."""
    cfg = config_of(state)
    data = dataset_of(state)   # a points run's own saved points
    G, _ = build_models(cfg, data.dim, data.is_image)
    if ema and "generator_ema" not in state:
        raise CheckpointError("this checkpoint holds no EMA weights (saved before EMA "
                              "existed); leave out --ema")
    G.load_state_dict(state["generator_ema" if ema else "generator"])
    return G.eval(), data


def evaluate_state(state: dict, n: int = EVAL_SAMPLES, log=None, ema: bool = False) -> dict:
    """Scores of a run state's generator, with its step and data set; metrics that do
    not exist for the data set are named under "unavailable"."""
    G, data = generator_from_state(state, ema)
    ev = evaluator_for(data)
    out: dict = {"step": int(state["step"]), "data": data.name, "n": n}
    if ev.unavailable:
        out["unavailable"] = ev.unavailable
        return out
    ev.prepare(log)
    out.update(ev(G, n))
    return out
