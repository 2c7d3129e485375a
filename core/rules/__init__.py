"""The update-rule registry. A new rule: one module here, one line below, one test."""
from __future__ import annotations

from ..registry import Registry
from .bce import BceRule
from .reinforce import ReinforceRule

RULES = Registry("rule")
RULES.register("bce", BceRule(), label="bce",
               help="Backprop through D: the non-saturating GAN loss -log D(G(z))")
RULES.register("reinforce", ReinforceRule(), label="reinforce",
               help="Policy gradient with D as the reward: Gaussian policy around G(z), "
                    "K samples per z, leave-one-out baseline")
