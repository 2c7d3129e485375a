"""Synthetic judges of generated samples, so the preference loop runs without a person.

An oracle has a utility u(x) per sample and answers a pair with Bradley-Terry noise:
P(left preferred) = sigmoid((u(left) - u(right)) / (noise * scale)), where `scale` is
the utility's spread on real data, so one `noise` means the same on every oracle
(0 = always the higher utility). Oracles are named "<kind>" or "<kind>:<param>"
(digit:7, angle:90) and registered in ORACLES with the kinds of data they judge.

The digit oracle's classifier is trained with another seed and split than the
quality metrics' classifier: success measured by those metrics can then not be the
hacking of the one model that labelled the preferences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from core.base.registry import Registry
from core.base.validate import ConfigError
from core.data.datasets import DataSet
from core.quality.classifier import classify, load_or_train_classifier, one_thread
from core.quality.judges import JUDGES, get_judge

ORACLES = Registry("oracle")
ORACLE_SEED, ORACLE_SPLIT = 1, 1       # the digit oracle's classifier (not the judge's)


@dataclass
class Oracle:
    name: str
    utility: Callable[[torch.Tensor], torch.Tensor]   # (n, dim) samples -> (n,) utility
    scale: float                                     # utility std on real data

    def prob_left(self, left: torch.Tensor, right: torch.Tensor, noise: float) -> torch.Tensor:
        """P(left preferred) per pair; noise 0 gives 1, 0 or 0.5 (equal utility)."""
        diff = self.utility(left) - self.utility(right)
        if noise <= 0:
            return (torch.sign(diff) + 1) / 2
        return torch.sigmoid(diff / (noise * self.scale))

    def judge(self, left: torch.Tensor, right: torch.Tensor, noise: float,
              gen: torch.Generator) -> list[str]:
        """'left', 'right' or (only without noise, for equal utilities) 'tie'."""
        p = self.prob_left(left, right, noise)
        draw = torch.rand(p.shape, generator=gen)
        return ["tie" if q == 0.5 and noise <= 0 else ("left" if d < q else "right")
                for q, d in zip(p.tolist(), draw.tolist())]

    def best_of(self, samples: torch.Tensor, noise: float, gen: torch.Generator) -> int:
        """Index of the preferred sample of k (softmax of utilities / temperature)."""
        u = self.utility(samples)
        if noise <= 0:
            return int(u.argmax())
        probs = torch.softmax(u / (noise * self.scale), dim=0)
        return int(torch.multinomial(probs, 1, generator=gen))


def _ink(x: torch.Tensor) -> torch.Tensor:
    return (x.float() + 1) / 2            # images in [-1, 1] -> ink in [0, 1]


def thickness(x: torch.Tensor, data: DataSet) -> torch.Tensor:
    return _ink(x).mean(1)


def centred(x: torch.Tensor, data: DataSet) -> torch.Tensor:
    """Minus the distance of the ink's centre of mass from the image centre (pixels)."""
    c, h, w = data.image_shape
    ink = _ink(x).reshape(len(x), c, h, w).sum(1) + 1e-6
    ys = torch.arange(h, dtype=ink.dtype).view(1, h, 1)
    xs = torch.arange(w, dtype=ink.dtype).view(1, 1, w)
    total = ink.sum((1, 2))
    cy, cx = (ink * ys).sum((1, 2)) / total, (ink * xs).sum((1, 2)) / total
    return -torch.hypot(cy - (h - 1) / 2, cx - (w - 1) / 2)


def upper(x: torch.Tensor, data: DataSet) -> torch.Tensor:
    """Being in the upper half, as a smooth step: higher up inside a half is no better
    (a person asked for the upper half would not reward leaving the data upwards)."""
    return torch.tanh(x[:, 1].float() / 0.2)


def realistic(x: torch.Tensor, data: DataSet) -> torch.Tensor:
    """Nearness to the data's own modes: -log(1 + distance to the nearest mode in mode
    standard deviations), so on-mode samples are all good and far ones ever worse."""
    d = torch.cdist(x.float(), data.modes.float()).min(1).values
    return -torch.log1p(d / data.mode_std)


def angle_near(theta_deg: float):
    if not math.isfinite(theta_deg):   # cos(angle - nan) is nan: every judgement a tie
        raise ValueError(f"angle {theta_deg} is not finite")
    theta = math.radians(theta_deg)

    def utility(x: torch.Tensor, data: DataSet) -> torch.Tensor:
        return torch.cos(torch.atan2(x[:, 1].float(), x[:, 0].float()) - theta)
    return utility


def digit(param: str):
    """log P(class k) of a classifier: the oracle's own CNN ("7"), one judge of
    core/quality/judges.py ("7@robust") or the judges' median ("7@panel"), so the
    simulated person need not be the reward model's twin."""
    k_text, _, judge = param.partition("@")
    k = int(k_text)
    panel = ("panel", *JUDGES)
    if judge and judge not in panel:
        raise ConfigError(f"oracle digit:{param}: {judge!r} is not a judge; use one of: "
                          f"{', '.join(panel)}")

    def build(data: DataSet):
        if judge:
            names = list(JUDGES) if judge == "panel" else [judge]
            judges = [get_judge(name, data) for name in names]
            classes = int(data.labels.max()) + 1
        else:
            clf = load_or_train_classifier(data, seed=ORACLE_SEED, split_seed=ORACLE_SPLIT)
            classes = clf.model.fc2.out_features
        if not 0 <= k < classes:
            raise ConfigError(f"oracle digit:{k}: {data.name} has classes 0 to {classes - 1}")

        def utility(x: torch.Tensor, data: DataSet) -> torch.Tensor:
            if judge:
                return torch.stack([j.log_probs(x)[:, k] for j in judges]).median(0).values
            with one_thread():
                probs, _ = classify(clf.model, x)
            return torch.log(probs[:, k].float() + 1e-6)
        return utility
    return build


ORACLES.register("thick", lambda param: thickness, kinds=("image",),
                 label="prefer thicker strokes", help="more ink (mean pixel brightness)")
ORACLES.register("centred", lambda param: centred, kinds=("image",),
                 label="prefer centred", help="ink's centre of mass near the image centre")
ORACLES.register("digit", digit, kinds=("image",), needs_param=True,
                 builds=True, label="prefer digit k",
                 help="log-probability of class k from an independently trained classifier; "
                      "digit:k@judge asks a judge of another kind (robust, knn, hog) and "
                      "digit:k@panel the judges' median")
ORACLES.register("upper", lambda param: upper, kinds=("2d",), label="prefer the upper half",
                 help="a smooth step at y = 0: tanh(y / 0.2)")
ORACLES.register("real", lambda param: realistic, kinds=("2d",),
                 label="prefer realistic samples",
                 help="near one of the mixture's modes (the quality a leaderboard ranks)")
ORACLES.register("angle", lambda param: angle_near(float(param)), kinds=("2d",),
                 needs_param=True, label="prefer angle near θ (degrees)",
                 help="cosine of the angle to θ")


def target_class(spec: str) -> int | None:
    """The class a digit oracle prefers ('digit:7@panel' -> 7), else None."""
    kind, _, param = spec.partition(":")
    text = param.partition("@")[0]
    return int(text) if kind == "digit" and text.isdigit() else None


def make_oracle(spec: str, data: DataSet) -> Oracle:
    """An oracle from 'kind' or 'kind:param' for a data set (clear errors otherwise)."""
    kind, _, param = spec.partition(":")
    entry = ORACLES.entry(kind)
    data_kind = "image" if data.is_image else "2d"
    if data_kind not in entry.extra["kinds"]:
        usable = [n for n, e in ((n, ORACLES.entry(n)) for n in ORACLES)
                  if data_kind in e.extra["kinds"]]
        raise ConfigError(f"oracle {spec!r} does not judge {data.name} samples; use one "
                          f"of: {', '.join(usable)}")
    if entry.extra.get("needs_param") and not param:
        raise ConfigError(f"oracle {kind!r} needs a parameter, e.g. {kind}:7")
    try:
        made = entry.value(param)
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"oracle {spec!r}: {param!r} is not a finite number") from None
    fn = made(data) if entry.extra.get("builds") else made
    utility = lambda x: fn(x, data)   # noqa: E731
    reference = data.x[torch.randperm(len(data.x), generator=torch.Generator().manual_seed(0))
                       [:2000]]
    scale = float(utility(reference).std()) or 1.0
    return Oracle(spec, utility, scale)
