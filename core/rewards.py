"""Reward functions: plain functions `reward(x, ctx) -> tensor of one reward per row`.

`x` is what the policy emitted, shaped (..., dim); `ctx` is the step's StepContext
(`ctx.d_logits(x)` gives D's logits, computed once per x; `ctx.options` holds the
rule's options). A new reward is one function and one `REWARDS.register` line.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import Registry

REWARDS = Registry("reward")


def log_d(x: torch.Tensor, ctx) -> torch.Tensor:
    return -F.softplus(-ctx.d_logits(x))


def d_prob(x: torch.Tensor, ctx) -> torch.Tensor:
    return torch.sigmoid(ctx.d_logits(x))


def clipped_logit(x: torch.Tensor, ctx) -> torch.Tensor:
    c = getattr(ctx.options, "logit_clip", 5.0)
    return ctx.d_logits(x).clamp(-c, c)


def preference(x: torch.Tensor, ctx) -> torch.Tensor:
    """The preference reward model's standardised score (core/reward_model.py)."""
    from .reward_model import cached_reward_model
    return cached_reward_model(ctx.options.reward_model).score(x)


REWARDS.register("log_d", log_d, label="log D(x)",
                 help="log D(x): with it the REINFORCE direction matches bce as sigma -> 0")
REWARDS.register("d", d_prob, label="D(x)",
                 help="D(x), the source's R_G; flat (no signal) where D is near 0")
REWARDS.register("logit", clipped_logit, label="clipped logit",
                 help="D's logit clipped to +-logit_clip (mode-seeking)")
REWARDS.register("preference", preference, label="preference model",
                 help="a reward model fit to people's (or an oracle's) preferences; set the "
                      "reward_model file")
