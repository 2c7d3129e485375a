"""The update-rule registry. A new rule: one module here, one line below, one test.

Registering checks the rule's contract (core/engine/rules/base.py: check_rule): a Rule
instance with a loss() and an options class whose every field is an option() with
bounds; a message names the rule and what it lacks."""
from __future__ import annotations

from dataclasses import fields

from core.base.registry import Registry
from core.engine.rules.base import check_rule
from core.engine.rules.bce import BceRule
from core.engine.rules.latent import LatentRule
from core.engine.rules.reinforce import ReinforceRule
from core.engine.rules.rlhf import RlhfRule

RULES = Registry("rule", required={"help": str}, check=check_rule)
RULES.register("bce", BceRule(), label="bce",
               help="Backprop through D: the non-saturating GAN loss -log D(G(z))")
RULES.register("reinforce", ReinforceRule(), label="reinforce",
               help="Policy gradient with D as the reward: Gaussian policy around G(z), "
                    "K samples per z, leave-one-out baseline")
RULES.register("rlhf", RlhfRule(), label="rlhf (preferences)",
               help="Fine-tune on a preference reward model with a KL anchor to the "
                    "generator the fine-tune started from")
RULES.register("latent", LatentRule(), label="latent (steer z)",
               help="Steer a frozen generator with preferences: learn an affine map of its "
                    "noise, z -> A z + b, with an exact KL to the prior; outputs stay on "
                    "G's own manifold")


def takes_reward_model(rule: str) -> bool:
    """Whether a rule has a reward_model option (a fine-tune sets it, each feedback round
    replaces it)."""
    return "reward_model" in {f.name for f in fields(RULES[rule].Options)}
