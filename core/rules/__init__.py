"""The update-rule registry. A new rule: one module here, one line below, one test."""
from __future__ import annotations

from ..registry import Registry
from .bce import BceRule
from .reinforce import ReinforceRule
from .rlhf import RlhfRule

RULES = Registry("rule")
RULES.register("bce", BceRule(), label="bce",
               help="Backprop through D: the non-saturating GAN loss -log D(G(z))")
RULES.register("reinforce", ReinforceRule(), label="reinforce",
               help="Policy gradient with D as the reward: Gaussian policy around G(z), "
                    "K samples per z, leave-one-out baseline")
RULES.register("rlhf", RlhfRule(), label="rlhf (preferences)",
               help="Fine-tune on a preference reward model with a KL anchor to the "
                    "generator the fine-tune started from")
