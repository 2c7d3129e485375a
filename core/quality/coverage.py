"""k-NN precision and coverage: quality of 2-D samples where the data has no known modes.

The toy mixtures have modes to count; a drawing or a CSV of points has none, so the
samples are scored against the drawn points themselves, with the k-nearest-neighbour
balls of the generative-model literature (k = 5):

    ball of a drawn point   the disc around it out to its 5th nearest other drawn point
                            (at least MIN_RADIUS: repeated rows are not zero-size discs)
    q_precision   % of generated samples inside at least one drawn point's ball: samples
                  where the drawing is (improved precision, Kynkaanniemi et al. 2019)
    q_coverage    % of drawn points whose ball holds at least one generated sample: how
                  much of the drawing is reached (coverage, Naeem et al. 2020; unlike
                  k-NN recall, a few stray samples cannot inflate it)

A sampler of the drawn density itself scores about 90-100% on both; one that collapses
onto part of the drawing keeps its precision and loses coverage; samples off the drawing
lose precision. The balls are those of at most REFERENCE_POINTS drawn points (a fixed
random subset of a bigger set), built once per data set.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

K = 5
MIN_RADIUS = 0.01           # in the data's scaled units (std 1): see the docstring
REFERENCE_POINTS = 5_000    # drawn points scored against: 2,500 x 5,000 distances a call
CHUNK = 512                 # rows of a distance matrix at once (bounded memory)


@dataclass(frozen=True, eq=False)
class Reference:
    points: torch.Tensor    # (n, 2) float64 drawn points
    radii: torch.Tensor     # (n,) each point's k-NN radius


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # exact distances (no matmul shortcut): a sample on a ball's edge counts the same
    # in every run
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def make_reference(points: torch.Tensor, k: int = K, limit: int = REFERENCE_POINTS,
                   min_radius: float = MIN_RADIUS) -> Reference:
    """The k-NN balls of (a fixed random subset of at most `limit` of) the points."""
    pts = points.detach().double().cpu()
    if len(pts) > limit:
        pts = pts[torch.randperm(len(pts), generator=torch.Generator().manual_seed(0))[:limit]]
    if len(pts) < 2:
        raise ValueError(f"k-NN balls need at least 2 points, got {len(pts)}")
    k = min(k, len(pts) - 1)
    # the k+1-th smallest distance: the first is the point itself
    radii = torch.cat([_dist(block, pts).kthvalue(k + 1, dim=1).values
                       for block in pts.split(CHUNK)])
    return Reference(pts, radii.clamp(min=min_radius))


def precision_coverage(samples: torch.Tensor, ref: Reference) -> dict[str, float]:
    """q_precision and q_coverage (%) of samples against a Reference's balls."""
    covered = torch.zeros(len(ref.points), dtype=torch.bool)
    inside = 0
    for block in samples.detach().double().cpu().split(CHUNK):
        hit = _dist(block, ref.points) <= ref.radii   # NaN samples hit nothing
        inside += int(hit.any(dim=1).sum())
        covered |= hit.any(dim=0)
    n = len(samples)
    return {"q_precision": 100.0 * inside / n if n else float("nan"),
            "q_coverage": 100.0 * float(covered.double().mean())}


_REFERENCES: dict[int, tuple[object, Reference]] = {}
_LOCK = threading.Lock()
MAX_CACHED = 8


def reference_of(data) -> Reference:
    """The Reference of a loaded DataSet (its x), built on first use and kept while the
    data set is among the last MAX_CACHED asked for."""
    with _LOCK:
        entry = _REFERENCES.get(id(data))
        if entry is not None and entry[0] is data:
            return entry[1]
    ref = make_reference(data.x)
    with _LOCK:
        while len(_REFERENCES) >= MAX_CACHED:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[id(data)] = (data, ref)
    return ref
