"""Reward functions: `reward(x, ctx, **params) -> tensor of one reward per row`.

`x` is what the policy emitted, shaped (rows, dim); `ctx` is the step's StepContext
(`ctx.d_logits(x)` gives D's logits, computed once per x). A reward's own parameters
are keyword arguments with defaults: `score(name, x, ctx, options)` passes the rule's
option of the same name where the rule has one (reinforce's logit_clip), else the
reward's default. A new reward is one function and one `REWARDS.register` line
(with label= and help=, which the forms and `--help` show).
"""
from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

from core.base.registry import Registry
from core.feedback.reward_model import cached_reward_model


def _check_reward(name: str, fn, meta: dict) -> list[str]:
    if not callable(fn):
        return [f"register a function reward(x, ctx, **params), not {fn!r}"]
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 2 or any(p.default is inspect.Parameter.empty for p in params[2:]):
        return ["its function must be reward(x, ctx, **params) with a default for every "
                "parameter after ctx"]
    return []


REWARDS = Registry("reward", required={"label": str, "help": str}, check=_check_reward)


@functools.cache
def params_of(name: str) -> dict:
    """A reward's own parameters and their defaults (read once: score() runs every step)."""
    params = list(inspect.signature(REWARDS[name]).parameters.values())[2:]
    return {p.name: p.default for p in params}


def score(name: str, x: torch.Tensor, ctx, options=None) -> torch.Tensor:
    """Reward `name` of x, with its parameters taken from `options` where it has them."""
    given = {k: getattr(options, k) for k in params_of(name) if hasattr(options, k)}
    return REWARDS[name](x, ctx, **given)


def log_d(x: torch.Tensor, ctx) -> torch.Tensor:
    return -F.softplus(-ctx.d_logits(x))


def d_prob(x: torch.Tensor, ctx) -> torch.Tensor:
    return torch.sigmoid(ctx.d_logits(x))


def clipped_logit(x: torch.Tensor, ctx, logit_clip: float = 5.0) -> torch.Tensor:
    return ctx.d_logits(x).clamp(-logit_clip, logit_clip)


def preference(x: torch.Tensor, ctx, reward_model: str = "") -> torch.Tensor:
    """The preference reward model's standardised score (core/feedback/reward_model.py)."""
    return cached_reward_model(reward_model).score(x)


REWARDS.register("log_d", log_d, label="log D(x)",
                 help="log D(x): with it the REINFORCE direction matches bce as sigma -> 0")
REWARDS.register("d", d_prob, label="D(x)",
                 help="D(x), the source's R_G; flat (no signal) where D is near 0")
REWARDS.register("logit", clipped_logit, label="clipped logit",
                 help="D's logit clipped to +-logit_clip (mode-seeking)")
REWARDS.register("preference", preference, label="preference model",
                 help="a reward model fit to people's (or an oracle's) preferences; set the "
                      "reward_model file")
