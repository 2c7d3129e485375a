"""Judges of generated images: classifiers of different kinds, so a success one judge
reports can be checked by judges that do not share its blind spots.

Every CNN trained the same way on the same data shares one set of blind spots (a bar
on top of any digit reads as a 7 to all of them; Eisenstein et al. 2023), so an
ensemble of one kind cannot vouch for a fine-tune. The panel mixes inductive biases:
  cnn     the quality metrics' small CNN (the one the preference loop used so far)
  robust  a wider 5x5-conv CNN trained on L2-PGD adversarial examples (Madry et al.):
          its gradients are perceptually aligned (Santurkar et al. 2019), so pushing its
          class score draws the class instead of a stroke
  knn     majority of the 5 nearest training images in pixel space; also reports the
          distance to the nearest real image (a hack detector a person can check)
  hog     histograms of oriented gradients (4x4-pixel cells, 9 bins, 2x2 blocks) + MLP
Each is trained once per data set on its own seeded split and cached beside the
quality classifier; `accuracy` is on the split's held-out real images.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from core.base.registry import Registry
from core.data.datasets import DataSet
from core.engine.metric_info import METRICS
from core.quality.classifier import (
    CLASSIFIER_DIR,
    SPLIT_SEED,
    SmallCNN,
    _init_,
    _save_atomic,
    _shift,
    data_fingerprint,
    load_or_train_classifier,
    one_thread,
    split_indices,
)

JUDGE_SEED, JUDGE_SPLIT = 2, 2      # apart from the quality (0) and oracle (1) classifiers
ARCH_VERSION = 2                   # bump when a judge's model or training changes


@dataclass
class Judge:
    name: str
    log_probs: Callable[[torch.Tensor], torch.Tensor]   # (n, dim) -> (n, K), no grad
    accuracy: float                                     # % on held-out real images
    train_seconds: float = 0.0
    model: nn.Module | None = None     # the network, where there is one (reward features)
    split: int = JUDGE_SPLIT           # the seeded split `accuracy` is held out from

    def calls(self, x: torch.Tensor) -> torch.Tensor:
        """The class each sample is called."""
        return self.log_probs(x).argmax(1)


def _check_judge(name: str, build, meta: dict) -> list[str]:
    return [] if callable(build) else [f"register build(data) -> Judge, not {build!r}"]


JUDGES = Registry("judge", required={"label": str, "help": str}, check=_check_judge)


# -- the models ----------------------------------------------------------------------
def wide_cnn(image_shape: tuple, classes: int) -> SmallCNN:
    """The robust judge's network: 5x5 convs of 32 and 64, fc 256."""
    return SmallCNN(image_shape, classes, width=256, channels=(32, 64), kernel=5)


def pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
           gen: torch.Generator) -> torch.Tensor:
    """L2 projected gradient ascent on the loss from a random start in the eps-ball,
    kept in the image range [-1, 1]."""
    def project(delta):
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        return delta * (eps / norm).clamp(max=1.0)

    delta = project(torch.randn(x.shape, generator=gen) * eps / math.sqrt(x[0].numel()))
    step = 2.5 * eps / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(-1, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        delta = project(delta.detach() + step * grad / g_norm)
    return (x + delta).clamp(-1, 1).detach()


def train_robust(x: torch.Tensor, y: torch.Tensor, image_shape: tuple, classes: int,
                 seed: int, steps: int = 600, batch: int = 64, eps: float = 3.0,
                 pgd_steps: int = 2) -> SmallCNN:
    """Adversarial training (every batch replaced by its L2-PGD attack), +-2 px shifts."""
    gen = torch.Generator().manual_seed(seed)
    model = wide_cnn(image_shape, classes)
    _init_(model, gen)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        images = _shift(x[idx].reshape(-1, *image_shape), gen)
        model.eval()
        attacked = pgd_l2(model, images, y[idx], eps, pgd_steps, gen)
        model.train()
        loss = F.cross_entropy(model(attacked), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model.requires_grad_(False)


def hog(x: torch.Tensor, image_shape: tuple, cell: int = 4, bins: int = 9) -> torch.Tensor:
    """Histograms of oriented gradients (unsigned, `bins` bins, `cell`-pixel cells, 2x2
    blocks, L2-Hys normalised), as in Dalal and Triggs; (n, features)."""
    img = x.float().reshape(-1, *image_shape).mean(1, keepdim=True)
    gx = F.pad(img[..., :, 2:] - img[..., :, :-2], (1, 1, 0, 0))
    gy = F.pad(img[..., 2:, :] - img[..., :-2, :], (0, 0, 1, 1))
    magnitude = torch.hypot(gx, gy)
    angle = torch.atan2(gy, gx) % math.pi
    position = angle / math.pi * bins - 0.5            # soft-binned between two centres
    low = position.floor()
    frac = position - low
    hist = torch.zeros(img.shape[0], bins, *img.shape[2:])
    hist.scatter_add_(1, (low.long() % bins), magnitude * (1 - frac))
    hist.scatter_add_(1, ((low.long() + 1) % bins), magnitude * frac)
    cells = F.avg_pool2d(hist, cell) * cell * cell      # (n, bins, H/cell, W/cell)
    blocks = cells.unfold(2, 2, 1).unfold(3, 2, 1)      # (n, bins, bh, bw, 2, 2)
    blocks = blocks.permute(0, 2, 3, 1, 4, 5).flatten(3)
    for _ in range(2):                                  # L2-Hys: normalise, clip, again
        blocks = blocks / (blocks.norm(dim=3, keepdim=True) + 1e-6)
        blocks = blocks.clamp(max=0.2)
    blocks = blocks / (blocks.norm(dim=3, keepdim=True) + 1e-6)
    return blocks.flatten(1)


def train_mlp(feats: torch.Tensor, y: torch.Tensor, classes: int, seed: int,
              steps: int = 2000, batch: int = 128) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(feats.shape[1], 256), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(256, classes))
    _init_(model, gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(feats), (batch,), generator=gen)
        loss = F.cross_entropy(model(feats[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model.requires_grad_(False)


# -- cached training -------------------------------------------------------------------
def _split(data: DataSet):
    x, y = data.x.detach().cpu(), data.labels.detach().cpu()
    train_idx, test_idx = split_indices(len(x), JUDGE_SPLIT)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], int(y.max()) + 1


def _cached_model(data: DataSet, tag: str, make: Callable[[], nn.Module],
                  train: Callable[[], nn.Module], test: Callable[[nn.Module], float],
                  cache_dir=None, log=None) -> tuple[nn.Module, float, float]:
    """(model, held-out accuracy %, training seconds): from the cache when the data,
    split and architecture match, else trained once and cached (weights_only load)."""
    fingerprint = data_fingerprint(data, JUDGE_SEED, JUDGE_SPLIT)
    path = (cache_dir or CLASSIFIER_DIR) / f"{data.name}-{tag}{ARCH_VERSION}-{fingerprint}.pt"
    model = make()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        model.eval().requires_grad_(False)
        return model, float(state["accuracy"]), float(state["train_seconds"])
    except Exception:  # no cache yet, or an unreadable one: train and overwrite it
        if log:
            log(f"training the {data.name} {tag} judge once (cached in {path.parent}) ...")
    start = time.perf_counter()
    with one_thread():
        model = train()
    seconds = time.perf_counter() - start
    accuracy = test(model)
    _save_atomic({"model": model.state_dict(), "accuracy": accuracy, "train_seconds": seconds,
                  "data": data.name}, path)
    return model, accuracy, seconds


def _accuracy(log_probs: Callable, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((log_probs(x).argmax(1) == y).double().mean())


def _batched(fn: Callable, chunk: int = 512) -> Callable:
    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        with one_thread():
            return torch.cat([fn(part.float()) for part in x.split(chunk)])
    return run


def build_cnn(data: DataSet, cache_dir=None, log=None) -> Judge:
    clf = load_or_train_classifier(data, cache_dir=cache_dir, log=log)
    model = clf.model
    return Judge("cnn", _batched(lambda x: F.log_softmax(model(x), 1)), clf.accuracy,
                 clf.train_seconds, model=model, split=SPLIT_SEED)


def build_robust(data: DataSet, cache_dir=None, log=None) -> Judge:
    tx, ty, vx, vy, classes = _split(data)
    model, acc, secs = _cached_model(
        data, "robust", lambda: wide_cnn(data.image_shape, classes),
        lambda: train_robust(tx, ty, data.image_shape, classes, JUDGE_SEED),
        lambda m: _accuracy(_batched(m), vx, vy), cache_dir, log)
    return Judge("robust", _batched(lambda x: F.log_softmax(model(x), 1)), acc, secs,
                 model=model)


class NearestNeighbours:
    """k nearest training images in pixel space (Euclidean, [-1, 1] units)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: int, k: int = 5) -> None:
        self.x, self.y, self.classes, self.k = x.float(), y, classes, k
        self.sq = (self.x ** 2).sum(1)

    @torch.no_grad()
    def nearest(self, x: torch.Tensor, k: int = 1, chunk: int = 256):
        """(distances, indices) of the k nearest training images, (n, k) each."""
        dists, idxs = [], []
        for part in x.float().split(chunk):
            d2 = (part ** 2).sum(1, keepdim=True) - 2 * part @ self.x.T + self.sq
            d, i = d2.clamp_min(0).topk(k, dim=1, largest=False)
            dists.append(d.sqrt())
            idxs.append(i)
        return torch.cat(dists), torch.cat(idxs)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Smoothed vote shares of the k nearest (the argmax is the majority)."""
        _, idx = self.nearest(x, self.k)
        votes = F.one_hot(self.y[idx], self.classes).sum(1).double()
        return torch.log((votes + 0.1) / (self.k + 0.1 * self.classes)).float()


@functools.cache
def nearest_neighbours(data: DataSet) -> NearestNeighbours:
    tx, ty, _, _, classes = _split(data)
    return NearestNeighbours(tx, ty, classes)


def build_knn(data: DataSet, cache_dir=None, log=None) -> Judge:
    _, _, vx, vy, _ = _split(data)
    nn_ = nearest_neighbours(data)
    with one_thread():
        acc = _accuracy(nn_.log_probs, vx, vy)
    return Judge("knn", nn_.log_probs, acc)


def build_hog(data: DataSet, cache_dir=None, log=None) -> Judge:
    tx, ty, vx, vy, classes = _split(data)
    shape = data.image_shape
    n_feats = hog(tx[:1], shape).shape[1]

    def make():
        return nn.Sequential(nn.Linear(n_feats, 256), nn.ReLU(), nn.Dropout(0.3),
                             nn.Linear(256, classes))
    model, acc, secs = _cached_model(
        data, "hog", make, lambda: train_mlp(hog(tx, shape), ty, classes, JUDGE_SEED),
        lambda m: _accuracy(_batched(lambda x: m(hog(x, shape))), vx, vy), cache_dir, log)
    return Judge("hog", _batched(lambda x: F.log_softmax(model(hog(x, shape)), 1)), acc, secs)


JUDGES.register("cnn", build_cnn, label="small CNN",
                help="the quality metrics' CNN (3x3 convs, shift augmentation)")
JUDGES.register("robust", build_robust, label="robust CNN",
                help="5x5-conv CNN adversarially trained (L2-PGD, eps 3): perceptually "
                     "aligned, strokes that fool the small CNN do not fool it")
JUDGES.register("knn", build_knn, label="5 nearest real images",
                help="majority of the 5 nearest training images in pixel space")
JUDGES.register("hog", build_hog, label="HOG + MLP",
                help="histograms of oriented gradients (4x4-pixel cells) under an MLP")


JUDGE_PREFIX = "q_judge_"


def judge_metric(name: str) -> str:
    """The quality metric of judge `name`: the share of samples it calls the target."""
    return JUDGE_PREFIX + name


METRICS.register("q_nn_dist", label="distance to the nearest real image", better="lower",
                 chart="Quality",
                 help="Median pixel distance of G's samples to their nearest training image "
                      "(images, during a fine-tune): rises when samples leave anything real")


for _name in JUDGES:   # logged by fine-tunes with a digit:k gold oracle (rules/rlhf.py)
    METRICS.register(judge_metric(_name),
                     label=f"{JUDGES.entry(_name).title}: target class (%)", unit="%",
                     better="higher", chart="Quality",
                     help=f"Share of G's samples that the {JUDGES.entry(_name).title} judge "
                          "calls the gold oracle's digit: a judge of another kind than the "
                          "reward model's features")

_BUILT: dict = {}


def get_judge(name: str, data: DataSet, log=None) -> Judge:
    """The data set's judge `name`, built (or loaded from the cache) once per process."""
    key = (name, data.name, len(data))
    if key not in _BUILT:
        if data.labels is None or not data.is_image:
            raise ValueError(f"{data.name}: judges need labelled images")
        _BUILT[key] = JUDGES[name](data, log=log)
    return _BUILT[key]


def panel_calls(x: torch.Tensor, data: DataSet, names=None) -> dict[str, torch.Tensor]:
    """Each judge's call per sample: {judge: (n,) classes}."""
    return {name: get_judge(name, data).calls(x) for name in (names or list(JUDGES))}


def majority_share(calls: dict[str, torch.Tensor], target: int) -> float:
    """Share of samples that more than half of the judges call `target`."""
    votes = torch.stack([(c == target) for c in calls.values()]).sum(0)
    return float((votes * 2 > len(calls)).double().mean())


def agreed_share(calls: dict[str, torch.Tensor]) -> float:
    """Share of samples that more than half of the judges give one and the same class:
    high on real digits, low on strokes that fool one kind of judge only."""
    stacked = torch.stack(list(calls.values()))             # (judges, n)
    classes = int(stacked.max()) + 1
    votes = F.one_hot(stacked.long(), classes).sum(0)       # (n, classes)
    return float((votes.max(1).values * 2 > len(calls)).double().mean())


AGREED = "q_judges_agree"
METRICS.register(AGREED, label="judges agree on a class (%)", unit="%", better="higher",
                 chart="Quality",
                 help="Share of G's samples that most judges of different kinds call the same "
                      "class (images, during a fine-tune; no target needed): falls when "
                      "samples stop looking like any one digit")
