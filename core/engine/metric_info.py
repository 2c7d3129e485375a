"""The metric registry: what each logged column means, read by charts, tables, CLI.

Every metric a run logs is declared once, with its label, unit, which direction is
better and the chart it is drawn on (chart=None: tables and CSV only). Columns
nobody declared are still logged and
drawn (each on a chart of its own, titled by name), never dropped. Rules declare
their own metrics next to their code (see core/engine/rules/reinforce.py).
"""
from __future__ import annotations

from core.base.registry import Registry


def _check_metric(name: str, value, meta: dict) -> list[str]:
    """A quality metric (kind= "toy" or "image") is computed by the evaluator: it needs
    its compute function, and its name starts with q_ like every quality column."""
    if meta.get("kind") is None:
        return []
    problems = [] if callable(meta.get("compute")) else [
        "a quality metric (kind=) needs compute=fn(samples) -> float"]
    return problems + ([] if name.startswith("q_") else ["a quality metric's name starts with q_"])


METRICS = Registry("metric", check=_check_metric)


def has_panel(columns, panel: str) -> bool:
    """Whether a logged column opens a panel (panel= in its registration: "overopt", the
    over-optimisation panel of a KL-anchored fine-tune)."""
    return any((e := METRICS.get(c)) is not None and e.extra.get("panel") == panel
               for c in columns)
_m = METRICS.register

# Logged every step by the engine (the discriminator update and every rule).
# summary: in the mean +- s.e. table of a comparison over seeds (core/jobs/multi_seed.py).
# drawn_with: a second line on that metric's chart (the FD and its floor); curve=False:
# a number shown beside the charts, not a curve (the classifier's own accuracy).
_m("d_loss", label="D loss", chart="Losses", summary=True,
   help="BCE of D on real (label 1) plus BCE on fake (label 0): the loss D descends")
_m("g_loss", label="G loss", chart="Losses", summary=True,
   help="Non-saturating BCE of D on what G emitted, -mean log D(x)")
_m("d_real", label="D(x) on real", chart="D(x) and D(G(z))", y_range=(0.0, 1.0))
_m("d_fake", label="D(G(z)) on fake", chart="D(x) and D(G(z))", y_range=(0.0, 1.0))
_m("reward_mean", label="reward mean", chart="Reward mean ± std", band="reward_std",
   summary=True,
   help="Mean reward of G's samples (bce: log D(G(z)))")
_m("reward_std", label="reward std", chart="Reward mean ± std", band_of="reward_mean")
_m("g_grad_norm", label="G gradient norm", chart="Gradient norms",
   help="Norm of G's gradient before clipping")
_m("d_grad_norm", label="D gradient norm", chart="Gradient norms")
_m("steps_per_s", label="steps/s", unit="steps/s", better="higher", chart=None,
   summary=True)

# Quality metrics (q_*) are registered with their compute functions in
# core/quality/metrics.py.
