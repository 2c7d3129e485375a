"""What an update rule is: a class with an options class and an autograd loss.

A rule says what G puts in front of D this step (`emit`) and returns the generator's
loss under autograd with its metrics (`loss`). Metrics are logged under the names
they are returned with; every rule returns REQUIRED_METRICS, so every chart and
comparison has them for every rule:
    g_loss       -mean log D(x) of what G emitted (x as D sees it), whatever the rule
                 descends: the non-saturating GAN loss, comparable across rules
    reward_mean  the mean of what the rule maximises per sample (bce: log D(G(z)))
A rule may also offer `fast_grad`, a hand-written gradient for the MLPs that writes
d loss / d params into `ctx.nets.g_flat.grad`; the engine uses it when present, and
tests/test_rules.py proves it equal to `loss`. The optional hooks below have defaults
that suit a plain GAN rule. `check_rule` is the registry's contract check.
"""
from __future__ import annotations

from typing import Any

import torch

from core.base.options import Options, contract_problems

REQUIRED_METRICS = ("g_loss", "reward_mean")


class Rule:
    Options: type = Options
    fast_grad = None          # optional: fast_grad(mu, g_acts, extra, ctx) -> metrics
    # optional: own_update(mu, extra, ctx) -> metrics, for a rule that changes G itself
    # (the latent policy writes its map into G's first layer); the engine then neither
    # takes G's gradient nor steps G's optimiser. ctx.state keeps what it learns.
    own_update = None
    uses_reference = False    # keeps G as it was when the rule started (run.G_ref)
    cli_flags: dict = {}      # extra `python -m core train` flags: {"--flag": (option, help)}

    def emit(self, mu: torch.Tensor, ctx) -> tuple[torch.Tensor, Any]:
        """(the sample G emits this step, whatever loss() needs besides mu)."""
        return mu, None

    def loss(self, mu: torch.Tensor, extra: Any, ctx) -> tuple[torch.Tensor, dict]:
        """(G's loss as a differentiable function of mu = G(z), metrics by name)."""
        raise NotImplementedError

    def ready(self, cfg) -> None:
        """Raise ConfigError if this rule cannot train under cfg for a reason outside the
        config (a file it needs): checked when training starts, not when a config or a
        checkpoint is read, so a saved run stays readable after such a file moves."""

    def trains_d(self, options) -> bool:
        """Whether D keeps learning while this rule updates G."""
        return True

    def reads_d_at_data(self, options, is_2d: bool) -> bool:
        """Whether the reward holds samples on the data through log D (a realism term):
        D must then stay sharp there, so a fine-tune under this rule runs without R1
        (core/engine/fine_tune.py)."""
        return False

    def quality(self, run, z: torch.Tensor, G) -> dict[str, float]:
        """The rule's own q_* metrics of generator G on the evaluation z ({}: none)."""
        return {}

    @property
    def has_quality(self) -> bool:
        return type(self).quality is not Rule.quality

    # A rule whose quality hook reports a score to Run.keep_if_best: the file stem of
    # the checkpoint at its best step, saved beside the run's last one.
    best_checkpoint_name = "best"


def check_rule(name: str, rule: Any, meta: dict) -> list[str]:
    """What a rule lacks (the RULES registry's contract)."""
    if not isinstance(rule, Rule):
        return [f"register an instance of a core.engine.rules.base.Rule subclass, "
                f"not {rule!r}"]
    problems = contract_problems(rule.Options)
    if type(rule).loss is Rule.loss:
        problems.append("it has no loss(mu, extra, ctx) -> (loss, metrics)")
    return problems


def missing_outputs(name: str, metrics: dict) -> str | None:
    """The message for a rule whose step returned fewer metrics than every rule must."""
    missing = [m for m in REQUIRED_METRICS if m not in metrics]
    if not missing:
        return None
    return (f"rule {name!r} returned no {', '.join(missing)}: every rule's loss() (and "
            "fast_grad) returns g_loss (-mean log D of what G emitted) and reward_mean "
            "(see core/engine/rules/base.py)")
