"""Quality metrics: the maths, and each metric registered with its compute function.

GAN losses say little about sample quality, so runs are also scored. Every quality
metric's name starts with "q_"; it is registered here (label, unit, direction, help)
with `compute(samples) -> float`, where `samples` is an EvalSamples: the generated
points with what several metrics share (nearest modes, classifier outputs) computed
once. The Evaluator (core/quality/evaluate.py) computes every metric of the data's
kind; a new metric is one registration here.

2-D (ring8, grid25), as in the PacGAN / VEEGAN benchmarks, on n = 2,500 samples of
the generator's mean output G(z) (never the policy noise of the reinforce rule):
    q_high_quality  % of samples within 3 std of their nearest mode
    q_modes         modes with at least one high-quality sample
    q_reverse_kl    KL(q || p) in nats: q = histogram of the high-quality samples over
                    the modes, p = uniform. "Reverse" = generated distribution first, the
                    convention of PacGAN's tables; one-mode collapse scores log M (log 8 =
                    2.079, log 25 = 3.219), empty bins of q contribute 0 (0 log 0 = 0).
                    NaN when no sample is high quality (the histogram is empty).

2-D points without known modes (the user's own, data = "points"), on the same n
samples of G(z), against the drawn points' k-NN balls (core/quality/coverage.py):
    q_precision     % of samples inside some drawn point's 5-NN ball (fidelity)
    q_coverage      % of drawn points whose 5-NN ball holds a sample (diversity)

Images with labels (mnist5k, mnist, fashion-mnist): a small CNN classifier, trained
once per data set on a seeded split and cached under checkpoints/classifiers/, used
frozen on n generated images:
    q_classes       classes covered: classes that get at least COVER_SHARE (20%) of a
                    uniform share (n / K) of the confident predictions (max softmax >=
                    CONFIDENT, 0.9); stray misclassifications do not count as coverage
    q_class_kl      KL(q || uniform) of the argmax class histogram of all samples (same
                    convention as q_reverse_kl; one class scores log 10 = 2.303)
    q_confidence    mean max-softmax probability
    q_fd            classifier FD: Frechet distance between the classifier's penultimate
                    features of the generated and of the held-out real images. Not FID
                    (that needs Inception weights); only comparable within a data set.
    q_fd_floor      the same distance between n real training images and the held-out
                    images: what a perfect generator would score at this n
    q_accuracy      the classifier's held-out accuracy (%), so a reader can judge it

Folder data has no labels, so no classifier: its evaluator reports the metrics as
unavailable (with the reason) instead of zeros.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from core.engine.metric_info import METRICS
from core.quality.coverage import precision_coverage, reference_of

HQ_STDS = 3.0              # "high quality": within 3 std of the nearest mode
CONFIDENT = 0.9            # max-softmax above which a prediction counts for coverage
COVER_SHARE = 0.2          # a class is covered with >= 20% of a uniform share


# -- 2-D mode coverage (pure functions on point tensors) ---------------------------------
def kl_to_uniform(counts) -> float:
    """KL(q || uniform) in nats of a histogram; NaN for an empty histogram."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    q = counts / total
    nz = q > 0                       # 0 log 0 = 0: empty bins need no epsilon
    return float(np.sum(q[nz] * np.log(q[nz] * len(q))))


def nearest_mode(points: torch.Tensor, modes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of each point's nearest mode and the distance to it."""
    dist = torch.cdist(points.double(), modes.double())
    d, idx = dist.min(dim=1)
    return idx, d


def toy_quality(points: torch.Tensor, modes: torch.Tensor, std: float) -> dict[str, float]:
    """PacGAN / VEEGAN scores of 2-D points against a Gaussian mixture's modes."""
    idx, dist = nearest_mode(points, modes)
    high = dist <= HQ_STDS * std
    counts = torch.bincount(idx[high], minlength=len(modes)).numpy()
    return {
        "q_high_quality": 100.0 * float(high.double().mean()) if len(points) else float("nan"),
        "q_modes": float((counts > 0).sum()),
        "q_reverse_kl": kl_to_uniform(counts),
    }



def frechet_distance(a, b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows = samples).

    tr sqrt(S1 S2) is computed as the sum of sqrt(eigenvalues) of the symmetric PSD
    matrix sqrt(S1) S2 sqrt(S1), in float64: no non-symmetric sqrtm, no complex parts.
    Torch, not numpy: numpy's BLAS threads ignore one_thread() and took 0.5 s instead
    of 10 ms for 128 features on the busy 2-core CPU.
    """
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    s1, s2 = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))
    w, v = torch.linalg.eigh(s1)
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T
    middle = root1 @ s2 @ root1
    tr_cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = ((a.mean(0) - b.mean(0)) ** 2).sum() + s1.trace() + s2.trace() - 2 * tr_cross
    return max(float(fd), 0.0)  # rounding can give -1e-6 for identical sets


def class_scores(probs: torch.Tensor) -> dict[str, float]:
    """Coverage, class-histogram KL and confidence of classifier outputs."""
    n, k = probs.shape
    conf, pred = probs.max(dim=1)
    confident = torch.bincount(pred[conf >= CONFIDENT], minlength=k).numpy()
    return {
        "q_classes": float((confident >= COVER_SHARE * n / k).sum()),
        "q_class_kl": kl_to_uniform(torch.bincount(pred, minlength=k).numpy()),
        "q_confidence": float(conf.double().mean()),
    }



class EvalSamples:
    """Generated samples of one evaluation, and what several metrics share, each
    computed once on first use: the modes' histogram (2-D), the classifier's
    probabilities and features (images)."""

    def __init__(self, points: torch.Tensor, data, classifier=None) -> None:
        self.points, self.data, self.classifier = points, data, classifier

    @cached_property
    def toy(self) -> dict[str, float]:
        return toy_quality(self.points, self.data.modes, self.data.mode_std)

    @cached_property
    def coverage(self) -> dict[str, float]:
        return precision_coverage(self.points, reference_of(self.data))

    @cached_property
    def classified(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier.outputs(self.points)

    @cached_property
    def classes(self) -> dict[str, float]:
        return class_scores(self.classified[0])


def _toy(name: str):
    return lambda s: s.toy[name]


def _class(name: str):
    return lambda s: s.classes[name]


_m = METRICS.register
# kind: which data a metric needs ("toy": a Gaussian mixture's modes; "points": 2-D
# points without modes; "image": labelled images and their classifier);
# compute(EvalSamples) -> float.
_m("q_high_quality", label="high-quality samples", unit="%", better="higher", kind="toy",
   chart="Quality", compute=_toy("q_high_quality"),
   help="Share of samples within 3 std of their nearest mode")
_m("q_modes", label="modes covered", better="higher", kind="toy", chart="Quality",
   compute=_toy("q_modes"),
   help="Modes with at least one high-quality sample (of 8 on ring8, 25 on grid25)")
_m("q_reverse_kl", label="reverse KL to uniform", unit="nats", better="lower", kind="toy",
   chart="Quality", compute=_toy("q_reverse_kl"),
   help="KL(generated mode histogram || uniform); 0 = every mode equally")
_m("q_precision", label="precision (k-NN)", unit="%", better="higher", kind="points",
   chart="Quality", compute=lambda s: s.coverage["q_precision"],
   help="Share of samples inside the disc around some drawn point that reaches its 5th "
        "nearest drawn neighbour: samples where the drawing is (Kynkaanniemi et al. 2019)")
_m("q_coverage", label="coverage (k-NN)", unit="%", better="higher", kind="points",
   chart="Quality", compute=lambda s: s.coverage["q_coverage"],
   help="Share of drawn points whose disc (out to their 5th nearest drawn neighbour) "
        "holds at least one sample: how much of the drawing G reaches (Naeem et al. 2020)")
_m("q_classes", label="classes covered (of 10)", better="higher", kind="image",
   chart="Quality", compute=_class("q_classes"),
   # the words follow class_scores exactly: the share is of all n samples, not of the
   # confident ones (tests/test_new_user_edges.py checks the numbers)
   help=f"How many of the 10 classes the samples cover. A class counts when at least "
        f"{COVER_SHARE:.0%} of an even share of the evaluated samples (n/10; 50 of the "
        f"2,500 drawn) are classified as it with confidence >= {CONFIDENT:g}; unsure "
        f"or stray predictions do not count")
_m("q_class_kl", label="class KL to uniform", unit="nats", better="lower", kind="image",
   chart="Quality", compute=_class("q_class_kl"),
   help="KL(class histogram of the samples || uniform)")
_m("q_confidence", label="classifier confidence", better="higher", kind="image",
   chart="Quality", compute=_class("q_confidence"),
   help="Mean max-softmax probability of the classifier on the samples")
_m("q_fd", label="classifier FD", better="lower", kind="image", chart="Quality",
   compute=lambda s: s.classifier.fd_of_features(s.classified[1]),
   help="Frechet distance in the classifier's features to held-out real images (not FID)")
_m("q_fd_floor", label="classifier FD floor (real)", better="lower", kind="image",
   chart="Quality", drawn_with="q_fd", compute=lambda s: s.classifier.fd_floor(len(s.points)),
   help="The same distance for real training images: the best reachable")
_m("q_accuracy", label="classifier accuracy", unit="%", kind="image", chart="Quality",
   curve=False, compute=lambda s: s.classifier.accuracy,
   help="The classifier's own held-out accuracy (a property of the judge, not of G)")

TOY_METRICS = METRICS.names(kind="toy")
IMAGE_METRICS = METRICS.names(kind="image")
POINT_METRICS = METRICS.names(kind="points")
QUALITY_METRICS = TOY_METRICS + IMAGE_METRICS + POINT_METRICS


def compute_all(names, samples: EvalSamples) -> dict[str, float]:
    """Each named metric's registered compute function on the same samples."""
    return {name: float(METRICS.entry(name).extra["compute"](samples)) for name in names}
