"""Can these judgements be trusted? Annotation quality, as preference datasets measure it.

- Self-agreement: a small share of pairs is shown again later with the sides swapped;
  a careful judge gives the same verdict (a careless or noisy one agrees near chance).
- Agreement with an oracle, where one stands for the truth (simulations, digit tasks).
- Cohen's kappa between two judges on the pairs both judged: agreement beyond what
  their own tendencies (how often each says left, right or equal) give by chance.
Pairs are matched by their pixels (or points), whatever side each sample was shown on.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from core.feedback.preferences import PAIR_P, Judgement

TIE = "tie"


def _digest(sample: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(sample).tobytes()).hexdigest()[:16]


def pair_key(j: Judgement) -> tuple[str, str]:
    """The pair, whichever side each sample was on."""
    a, b = _digest(j.samples[0]), _digest(j.samples[1])
    return (a, b) if a <= b else (b, a)


def verdict(j: Judgement) -> str:
    """The preferred sample's digest, or 'tie' (independent of the sides shown)."""
    p = PAIR_P[j.choice]
    if p == 0.5:
        return TIE
    return _digest(j.samples[0] if p == 1.0 else j.samples[1])


def _pairs(judgements: list[Judgement]) -> list[Judgement]:
    """The two-sample judgements that say something (no skips, no best-of-4)."""
    return [j for j in judgements if len(j.samples) == 2 and j.choice in PAIR_P]


def accuracy_ceiling(agreement: float) -> float:
    """About the highest held-out accuracy labels this self-consistent allow. If each
    verdict matches the judge's own preference with probability q, two verdicts on one
    pair agree with probability s = q^2 + (1 - q)^2, so q = (1 + sqrt(2 s - 1)) / 2:
    even a model that knows the preference disagrees with 1 - q of the labels (nan for
    s under 0.5, where the labels say nothing)."""
    if not agreement >= 0.5:
        return float("nan")
    return (1 + (2 * min(agreement, 1.0) - 1) ** 0.5) / 2


def self_agreement(judgements: list[Judgement]) -> tuple[float, int]:
    """(share of repeated pairs judged the same way each time, repeats compared): each
    later judgement of a pair is compared with the first one."""
    first: dict[tuple, str] = {}
    same = compared = 0
    for j in _pairs(judgements):
        key, said = pair_key(j), verdict(j)
        if key in first:
            compared += 1
            same += said == first[key]
        else:
            first[key] = said
    return (same / compared if compared else float("nan")), compared


def oracle_agreement(judgements: list[Judgement], prob_left) -> tuple[float, int]:
    """(share of pairs where the judge picked the side the oracle prefers, pairs where
    both decided): prob_left(judgements) gives the exact oracle's P(left) per pair."""
    decided = [j for j in _pairs(judgements) if j.choice != TIE]
    if not decided:
        return float("nan"), 0
    truth = np.asarray(prob_left(decided), dtype=float)
    said = np.array([PAIR_P[j.choice] for j in decided])
    clear = truth != 0.5
    if not clear.any():
        return float("nan"), 0
    return float(((said > 0.5) == (truth > 0.5))[clear].mean()), int(clear.sum())


def cohens_kappa(a: list[Judgement], b: list[Judgement]) -> tuple[float, int]:
    """(kappa, shared pairs) between two judges, on the first verdict each gave a pair.
    Labels: which sample of the pair (by content) won, or a tie."""
    def first_verdicts(judgements):
        out: dict[tuple, str] = {}
        for j in _pairs(judgements):
            out.setdefault(pair_key(j), _label(j))
        return out

    va, vb = first_verdicts(a), first_verdicts(b)
    shared = sorted(set(va) & set(vb))
    if not shared:
        return float("nan"), 0
    labels = ("first", "second", TIE)
    ca = np.array([labels.index(va[k]) for k in shared])
    cb = np.array([labels.index(vb[k]) for k in shared])
    observed = float((ca == cb).mean())
    chance = float(sum((ca == i).mean() * (cb == i).mean() for i in range(3)))
    if chance == 1.0:
        return (1.0 if observed == 1.0 else float("nan")), len(shared)
    return (observed - chance) / (1 - chance), len(shared)


def _label(j: Judgement) -> str:
    """'first' / 'second': the pair key's first or second sample won; or 'tie'."""
    said = verdict(j)
    return TIE if said == TIE else ("first" if said == pair_key(j)[0] else "second")


@dataclass
class JudgeStats:
    judge: str
    judgements: int          # rows, skips included
    pairs: int               # training pairs given
    repeats: int             # repeated pairs compared
    self_agreement: float    # share; nan without repeats
    oracle_pairs: int
    oracle_agreement: float  # share; nan without an oracle


def judge_stats(judgements: list[Judgement], prob_left=None) -> list[JudgeStats]:
    """Per judge, most judgements first."""
    by_judge: dict[str, list[Judgement]] = defaultdict(list)
    for j in judgements:
        by_judge[j.judge].append(j)
    out = []
    for name, rows in sorted(by_judge.items(), key=lambda kv: -len(kv[1])):
        agree, repeats = self_agreement(rows)
        oracle, n_oracle = (oracle_agreement(rows, prob_left) if prob_left
                            else (float("nan"), 0))
        out.append(JudgeStats(name, len(rows), sum(len(j.pairs()) for j in rows), repeats,
                              agree, n_oracle, oracle))
    return out


def kappas(judgements: list[Judgement], min_shared: int = 10) -> list[tuple[str, str, float, int]]:
    """(judge a, judge b, kappa, shared pairs) for every two judges sharing enough pairs."""
    by_judge: dict[str, list[Judgement]] = defaultdict(list)
    for j in judgements:
        by_judge[j.judge].append(j)
    names = sorted(by_judge)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            kappa, shared = cohens_kappa(by_judge[a], by_judge[b])
            if shared >= min_shared:
                out.append((a, b, kappa, shared))
    return out


def unreliable(stats: list[JudgeStats], min_self_agreement: float,
               min_repeats: int = 5) -> list[str]:
    """Judges whose self-agreement, measured on enough repeats, is below the bar."""
    return [s.judge for s in stats
            if s.repeats >= min_repeats and s.self_agreement < min_self_agreement]


def swapped(j: Judgement) -> tuple[np.ndarray, np.ndarray]:
    """A pair to show again with its sides swapped (samples, z): a consistency check."""
    return j.samples[::-1].copy(), j.z[::-1].copy()
