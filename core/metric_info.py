"""The metric registry: what each logged column means, read by charts, tables, CLI.

Every metric a run logs is declared once, with its label, unit, which direction is
better and the chart it is drawn on (chart=None: tables and CSV only). Columns
nobody declared are still logged and
drawn (each on a chart of its own, titled by name), never dropped. Rules declare
their own metrics next to their code (see core/rules/reinforce.py).
"""
from __future__ import annotations

from .registry import Registry

METRICS = Registry("metric")
_m = METRICS.register

# Logged every step by the engine (the discriminator update and every rule).
# summary: in the mean +- s.e. table of a comparison over seeds (core/multi_seed.py).
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

# Quality metrics (core/evaluate.py), logged every eval_every steps.
_m("q_high_quality", label="high-quality samples", unit="%", better="higher", kind="toy",
   chart="Quality", help="Share of samples within 3 std of their nearest mode")
_m("q_modes", label="modes covered", better="higher", kind="toy", chart="Quality",
   help="Modes with at least one high-quality sample (of 8 on ring8, 25 on grid25)")
_m("q_reverse_kl", label="reverse KL to uniform", unit="nats", better="lower", kind="toy",
   chart="Quality", help="KL(generated mode histogram || uniform); 0 = every mode equally")
_m("q_classes", label="classes covered", better="higher", kind="image", chart="Quality",
   help="Classes (of 10) that get at least 20% of a uniform share of the confident "
        "predictions (classifier confidence >= 0.9)")
_m("q_class_kl", label="class KL to uniform", unit="nats", better="lower", kind="image",
   chart="Quality", help="KL(class histogram of the samples || uniform)")
_m("q_confidence", label="classifier confidence", better="higher", kind="image",
   chart="Quality", help="Mean max-softmax probability of the classifier on the samples")
_m("q_fd", label="classifier FD", better="lower", kind="image", chart="Quality",
   help="Frechet distance in the classifier's features to held-out real images (not FID)")
_m("q_fd_floor", label="classifier FD floor (real)", better="lower", kind="image",
   chart="Quality", drawn_with="q_fd", help="The same distance for real training images: the best reachable")
_m("q_accuracy", label="classifier accuracy", unit="%", kind="image", chart="Quality",
   curve=False,
   help="The classifier's own held-out accuracy (a property of the judge, not of G)")


def quality_names(kind: str) -> tuple[str, ...]:
    """The quality metrics of a kind of data ("toy" or "image")."""
    return METRICS.names(kind=kind)

