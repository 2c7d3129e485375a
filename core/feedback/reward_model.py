"""A reward model learnt from preferences: Bradley-Terry heads on frozen features.

Features, frozen: for images "multi" (the default: the quality classifier's
penultimate layer, its class log-probabilities, its conv layers' mean activations and
the mean ink, under a linear head; chosen by bench/feedback.py over its penultimate
layer alone, "classifier", or the raw pixels, "pixels"); for 2-D points the
coordinates ("raw", under a small MLP). Each of
`members` small MLP heads (an ensemble, so disagreement is available) learns
r(x) with the Bradley-Terry loss -[p log s(r_a - r_b) + (1-p) log s(r_b - r_a)]
(p = 1, 0, or 0.5 for a tie), on a bootstrap of 80% of the pairs, stopping early on
the held-out 20%. Scores are standardised over the training samples, so a reward of
1 means one standard deviation better than a typical judged sample.
"""
from __future__ import annotations

import copy
import functools
import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core.base.files import read_bounded, write_atomic
from core.base.validate import ConfigError
from core.data.datasets import DataSet, load_by_name
from core.feedback.agreement import accuracy_ceiling
from core.quality.classifier import load_or_train_classifier
from core.quality.judges import get_judge

SCHEMA_VERSION = 1
MAX_FILE_BYTES = 64 * 2**20   # a real one is well under a megabyte (small heads, stats)
FEATURES = {"image": ("multi", "robust", "classifier+pixels", "classifier", "pixels"),
            "2d": ("raw",)}
HIDDEN = {"multi": (), "robust": (), "classifier+pixels": (), "classifier": (64,),
          "pixels": (64,), "raw": (64, 64)}


class RewardModelError(ValueError):
    """The file is not a usable reward model; the message says why."""


def feature_fn(kind: str, data):
    """x (n, dim) in model space -> features (n, f), frozen (differentiable in x).
    `data` is a DataSet or a function giving one (loaded only for classifier features)."""
    if kind in ("pixels", "raw"):
        return lambda x: x.float()
    data = data() if callable(data) else data
    if kind == "classifier":
        model = load_or_train_classifier(data).model
        model.requires_grad_(False)
        return model.features
    if kind == "robust":
        # the adversarially trained judge: perceptually aligned gradients, so raising
        # the reward draws the preferred thing instead of a stroke that fools a CNN
        model = get_judge("robust", data).model

        def robust(x):
            feats = model.features(x.float())
            return torch.cat([feats, F.log_softmax(model.fc2(feats), 1)], 1)
        return robust
    if kind == "classifier+pixels":
        clf = feature_fn("classifier", data)
        return lambda x: torch.cat([clf(x), x.float()], 1)
    if kind == "multi":
        model = load_or_train_classifier(data).model
        model.requires_grad_(False)

        def multi(x):   # one pass through the convolutions (features() would redo them)
            img = x.float().reshape(-1, *model.image_shape)
            pooled, mean1, mean2 = model.convolve(img)
            feats = F.relu(model.fc1(pooled.flatten(1)))
            return torch.cat([feats, F.log_softmax(model.fc2(feats), 1), mean1, mean2,
                              img.mean((1, 2, 3)).unsqueeze(1)], 1)
        return multi
    raise ConfigError(f"features {kind!r} is not one of: "
                      f"{', '.join(k for kinds in FEATURES.values() for k in kinds)}")


def _head(n_in: int, hidden: tuple, gen: torch.Generator) -> nn.Sequential:
    layers, sizes = [], [n_in, *hidden, 1]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    head = nn.Sequential(*layers[:-1])
    with torch.no_grad():   # seeded init from a private generator (thread-safe)
        for lin in head:
            if isinstance(lin, nn.Linear):
                bound = 1 / math.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.zero_()
    return head


def bt_loss(r_a: torch.Tensor, r_b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss with soft labels p = P(a preferred over b)."""
    return F.binary_cross_entropy_with_logits(r_a - r_b, p)


def wilson_interval(share: float, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a share measured on n trials ([nan, nan] for none)."""
    if n <= 0 or math.isnan(share):
        return [math.nan, math.nan]
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def agreement(diff: torch.Tensor, p: torch.Tensor) -> float:
    """Share of non-tie pairs whose preferred side gets the higher score."""
    decided = p != 0.5
    if not decided.any():
        return float("nan")
    return float(((diff[decided] > 0) == (p[decided] > 0.5)).float().mean())


@dataclass
class RewardModel:
    data: str
    features: str
    heads: nn.ModuleList
    feat_mean: torch.Tensor
    feat_std: torch.Tensor
    score_mean: float = 0.0
    score_std: float = 1.0
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)   # per epoch: member, train/held-out loss, acc
    _features: object = None

    def _feats(self, x: torch.Tensor) -> torch.Tensor:
        if self._features is None:
            self._features = feature_fn(self.features, lambda: load_by_name(self.data))
        return (self._features(x) - self.feat_mean) / self.feat_std

    def head_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """(members, n) raw scores of each head on standardised features."""
        return torch.stack([h(feats).squeeze(1) for h in self.heads])

    def members(self, x: torch.Tensor) -> torch.Tensor:
        """(members, n) raw scores of each head."""
        return self.head_scores(self._feats(x))

    def score_and_spread(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ensemble's mean score, standardised (differentiable in x), and the std of
        its members' scores in the same units, from one pass through the features (a
        fine-tune needs both every step, and the features are most of the cost)."""
        members = self.members(x)
        return ((members.mean(0) - self.score_mean) / self.score_std,
                members.std(0) / self.score_std)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The standardised mean score alone (a one-member model has no spread)."""
        return (self.members(x).mean(0) - self.score_mean) / self.score_std

    def uncertainty(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_and_spread(x)[1]

    def disagreement(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """How much the members disagree about which of a pair is better (for active
        selection of the pairs a person should judge next)."""
        return (self.members(a) - self.members(b)).std(0)

    # -- saving ----------------------------------------------------------------------
    def state(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "kind": "reward_model", "data": self.data,
                "features": self.features, "hidden": list(HIDDEN[self.features]),
                "heads": [h.state_dict() for h in self.heads],
                "feat_mean": self.feat_mean, "feat_std": self.feat_std,
                "score_mean": self.score_mean, "score_std": self.score_std,
                "metrics": dict(self.metrics), "history": list(self.history)}

    def save(self, path: str | Path) -> Path:
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        return write_atomic(buf.getvalue(), path)


def _from_state(state, name: str) -> RewardModel:
    if not isinstance(state, dict) or state.get("kind") != "reward_model":
        raise RewardModelError(f"{name} is not a GAN RL Lab reward model (make one with "
                               "python -m core reward train)")
    if state.get("schema_version") != SCHEMA_VERSION:
        raise RewardModelError(f"{name} has schema version {state.get('schema_version')!r}; "
                               f"this version reads {SCHEMA_VERSION}")
    try:
        features = state["features"]
        hidden = tuple(HIDDEN[features])
        mean, std = state["feat_mean"], state["feat_std"]
        if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
                and mean.shape == std.shape and mean.ndim == 1 and bool(torch.isfinite(mean).all())
                and bool((std > 0).all())):
            raise RewardModelError(f"{name}: its feature statistics are damaged")
        heads = nn.ModuleList()
        for s in state["heads"]:
            head = _head(mean.shape[0], hidden, torch.Generator())
            head.load_state_dict(s)
            if not all(bool(torch.isfinite(p).all()) for p in head.parameters()):
                raise RewardModelError(f"{name}: a head has non-finite weights")
            heads.append(head)
        if not heads:
            raise RewardModelError(f"{name} has no heads")
        score_std = float(state["score_std"])
        if not math.isfinite(score_std) or score_std <= 0:
            raise RewardModelError(f"{name}: score_std must be a positive number")
        return RewardModel(str(state["data"]), features, heads, mean.float(), std.float(),
                           float(state["score_mean"]), score_std, dict(state["metrics"]),
                           list(state.get("history", [])))
    except RewardModelError:
        raise
    except Exception as exc:   # a missing key, a wrong shape: one clear line
        raise RewardModelError(f"{name} is not a usable reward model "
                               f"({type(exc).__name__}: {str(exc)[:120]})") from None


def load_reward_model(path: str | Path) -> RewardModel:
    try:
        raw = read_bounded(path, MAX_FILE_BYTES, "reward model")
    except OSError as exc:
        raise RewardModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RewardModelError(f"{path} is not a reward model file "
                               f"({type(exc).__name__})") from None
    model = _from_state(state, str(path))
    for head in model.heads:
        head.requires_grad_(False)
    return model


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int) -> RewardModel:
    return load_reward_model(path)


def cached_reward_model(path: str) -> RewardModel:
    """A reward model by path, loaded once per file version (the 'preference' reward)."""
    try:
        return _cached(os.path.abspath(path), os.stat(path).st_mtime_ns)
    except FileNotFoundError:
        raise RewardModelError(f"reward model {path!r}: no such file") from None


def check_file_for(prefix: str, path: str, data: str, rule: str) -> None:
    """A rule's reward_model option: an existing reward model of this run's data set
    (a model of other data scores samples it has never seen)."""
    if not Path(path).is_file():
        raise ConfigError(f"{prefix}reward_model = {path!r} is not a file: the {rule} rule "
                          "needs a reward model (train one on the Feedback page or with "
                          "python -m core reward train)")
    try:
        model = cached_reward_model(path)
    except RewardModelError as exc:
        raise ConfigError(f"{prefix}reward_model: {exc}") from None
    if model.data != data:
        raise ConfigError(f"{prefix}reward_model {path!r} was trained on {model.data} "
                          f"samples, but this run is on {data}: train one on {data} "
                          "judgements")


MIN_REPEATS = 10  # repeated pairs before their agreement says much
MIN_PAIRS = 100   # fewer judgements than this rarely make a reward model worth steering by


def default_file(folder: str | Path, data: str) -> Path:
    """A new file name per data set and time, so no save replaces a model a run uses."""
    return Path(folder) / f"{data}-{time.strftime('%Y%m%d-%H%M%S')}.pt"


def new_file(path: str | Path) -> Path:
    """`path`, refused when a file is already there: a fine-tune reads its reward model
    while it runs, so replacing one would change the reward under a running run."""
    path = Path(path)
    if path.exists():
        raise RewardModelError(f"{path} already exists and a run may be using it; save the "
                               "new reward model under another name")
    return path


def verdict(metrics: dict) -> tuple[bool, str]:
    """(good enough to steer by, a one-line summary with the held-out interval)."""
    acc, n = metrics["held_out_acc"], metrics["pairs"]
    lo, hi = metrics.get("held_out_acc_ci", [math.nan, math.nan])
    text = (f"held-out accuracy {acc:.3f} (95% interval {lo:.2f}-{hi:.2f}) on "
            f"{metrics['held_out_pairs']} of {n} pairs it never trained on")
    if metrics.get("repeats", 0) >= MIN_REPEATS:   # noisy labels cap what it can score
        same = metrics["self_agreement"]
        text += (f"; repeated pairs were judged the same way {same:.0%} of the time, so "
                 f"labels this consistent allow about {accuracy_ceiling(same):.2f} at most")
    if n < MIN_PAIRS or not lo > 0.5:
        more = max(MIN_PAIRS - n, n // 2, 50)
        why = "too few pairs" if n < MIN_PAIRS else "not clearly better than chance"
        return False, f"{text}: {why}; judge about {more} more pairs before steering by it"
    return True, text


# -- training --------------------------------------------------------------------------
def train_reward_model(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor, data: DataSet, *,
                       features: str | None = None, members: int = 3, seed: int = 0,
                       max_epochs: int = 300, patience: int = 20, lr: float = 3e-3,
                       weight_decay: float = 1e-3, held_out: float = 0.2,
                       progress=None, should_stop=None) -> RewardModel:
    """Fit an ensemble on pairs (a[i] preferred over b[i] with probability p[i]).

    `progress(history_row)` is called after each epoch (for live charts);
    `should_stop()` ends training early (the page's Stop)."""
    kind = "image" if data.is_image else "2d"
    features = features or FEATURES[kind][0]
    if features not in FEATURES[kind]:
        raise ConfigError(f"features {features!r} do not fit {data.name}; use one of: "
                          f"{', '.join(FEATURES[kind])}")
    n = len(p)
    if n < 10:
        raise ConfigError(f"{n} usable pairs: a reward model needs at least 10 (judge more, "
                          "or simulate with an oracle)")
    fn = feature_fn(features, data)
    with torch.no_grad():
        fa = torch.cat([fn(c) for c in a.float().split(512)])
        fb = torch.cat([fn(c) for c in b.float().split(512)])
    both = torch.cat([fa, fb])
    mean, std = both.mean(0), both.std(0).clamp_min(1e-4)
    fa, fb = (fa - mean) / std, (fb - mean) / std
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    n_test = max(2, int(round(n * held_out)))
    test, train = order[:n_test], order[n_test:]
    p = p.float()
    heads, history, per_member = nn.ModuleList(), [], []
    for m in range(members):
        # each member stops early on the pairs its bootstrap left out, so the held-out
        # pairs stay unseen and the accuracy reported on them is not optimistic
        drawn = torch.randint(len(train), (len(train),), generator=gen)
        boot = train[drawn]
        out_of_bag = torch.ones(len(train), dtype=torch.bool)
        out_of_bag[drawn] = False
        stop = train[out_of_bag] if out_of_bag.sum() >= 2 else test
        head = _head(fa.shape[1], HIDDEN[features], gen)
        opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
        best, best_state, waited = float("inf"), copy.deepcopy(head.state_dict()), 0
        for epoch in range(max_epochs):
            loss = bt_loss(head(fa[boot]).squeeze(1), head(fb[boot]).squeeze(1), p[boot])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                d_stop = head(fa[stop]).squeeze(1) - head(fb[stop]).squeeze(1)
                test_loss = float(F.binary_cross_entropy_with_logits(d_stop, p[stop]))
            row = {"member": m, "epoch": epoch, "train_loss": float(loss.detach()),
                   "held_out_loss": test_loss, "held_out_acc": agreement(d_stop, p[stop])}
            history.append(row)
            if progress:
                progress(row)
            if test_loss < best - 1e-4:
                best, best_state, waited = test_loss, copy.deepcopy(head.state_dict()), 0
            else:
                waited += 1
            if waited >= patience or (should_stop and should_stop()):
                break
        head.load_state_dict(best_state)
        head.requires_grad_(False)
        heads.append(head)
        per_member.append(best)
    model = RewardModel(data.name, features, heads, mean, std, history=history)
    with torch.no_grad():
        scores = model.head_scores(torch.cat([fa, fb])).mean(0)
        model.score_mean, model.score_std = float(scores.mean()), float(scores.std()) or 1.0
        ens = (model.head_scores(fa[test]) - model.head_scores(fb[test])).mean(0)
    acc = agreement(ens, p[test])
    model.metrics = {"pairs": n, "held_out_pairs": int(n_test), "features": features,
                     "held_out_loss": float(F.binary_cross_entropy_with_logits(ens, p[test])),
                     "held_out_acc": acc,
                     "held_out_acc_ci": wilson_interval(acc, int((p[test] != 0.5).sum())),
                     "member_held_out_loss": per_member}
    return model
