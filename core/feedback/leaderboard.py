"""A leaderboard of generators from blind pairwise votes (Chatbot Arena's method).

Each vote sets one sample of generator A against one of generator B, sides at random,
the judge not told which is which (stored as a blind test, core/feedback/preferences.py).
Strengths are Bradley-Terry: P(A beats B) = s(theta_A - theta_B), fit by maximum
likelihood with a weak prior (half a win and half a loss against every other
generator, so one lucky vote cannot give an infinite score); ties count half. 95%
intervals come from a bootstrap over votes. The next pair asked is the one the ranking
is least sure of: of the neighbours in the ranking, those whose intervals overlap most,
fewer votes first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.data.datasets import DataSet
from core.feedback.loop import blind_pair, from_display, to_display
from core.feedback.oracles import Oracle
from core.feedback.preferences import BlindJudgement

Vote = tuple[int, int, float]   # (generator i, generator j, score of i: 1, 0 or 0.5)


def votes_of(blind: list[BlindJudgement], ids: list[str]) -> list[Vote]:
    """The decided or tied votes between generators of `ids` (fingerprints)."""
    index = {g: i for i, g in enumerate(ids)}
    out = []
    for j in blind:
        if j.base_generator in index and j.new_generator in index and j.choice != "skip":
            score = {"win": 1.0, "loss": 0.0, "tie": 0.5}[j.outcome]
            out.append((index[j.new_generator], index[j.base_generator], score))
    return out


def bradley_terry(votes: list[Vote] | np.ndarray, n: int, prior: float = 0.5,
                  iters: int = 500) -> np.ndarray:
    """Strengths theta (mean 0), by the MM algorithm (Hunter 2004) on wins[i, j]
    (ties half to each) plus `prior` wins each way between every two generators."""
    v = np.asarray(votes, dtype=float).reshape(-1, 3)
    i, j, score = v[:, 0].astype(int), v[:, 1].astype(int), v[:, 2]
    wins = np.full((n, n), prior)
    np.fill_diagonal(wins, 0.0)
    np.add.at(wins, (i, j), score)
    np.add.at(wins, (j, i), 1 - score)
    games, won = wins + wins.T, wins.sum(1)
    p = np.ones(n)
    for _ in range(iters):
        new = won / (games / (p[:, None] + p[None, :])).sum(1)
        new /= np.exp(np.log(new).mean())
        if np.abs(new - p).max() < 1e-7 * new.max():
            break
        p = new
    theta = np.log(new)
    return theta - theta.mean()


@dataclass
class Standing:
    index: int
    score: float      # Bradley-Terry strength (log scale, mean 0)
    low: float        # bootstrap 95% interval
    high: float
    votes: int


def ranking(votes: list[Vote], n: int, boot: int = 200, seed: int = 0) -> list[Standing]:
    """Best first."""
    v = np.asarray(votes, dtype=float).reshape(-1, 3)
    theta = bradley_terry(v, n)
    rng = np.random.default_rng(seed)
    draws = np.array([bradley_terry(v[rng.integers(len(v), size=len(v))], n)
                      for _ in range(boot)]) if len(v) else np.zeros((1, n))
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    counts = np.zeros(n, int)
    for i, j, _ in votes:
        counts[i] += 1
        counts[j] += 1
    order = np.argsort(-theta)
    return [Standing(int(i), float(theta[i]), float(low[i]), float(high[i]), int(counts[i]))
            for i in order]


def next_pair(votes: list[Vote], n: int, rng: np.random.Generator) -> tuple[int, int]:
    """The neighbours in the ranking whose order is least certain (intervals overlap
    most, per vote between them), in random sides."""
    if n < 2:
        raise ValueError("a leaderboard needs at least two generators")
    standings = ranking(votes, n, boot=40, seed=int(rng.integers(2**31)))
    between = np.zeros((n, n), int)
    for i, j, _ in votes:
        between[i, j] += 1
        between[j, i] += 1
    best, pick = -np.inf, (standings[0].index, standings[1].index)
    for a, b in zip(standings, standings[1:]):
        overlap = min(a.high, b.high) - max(a.low, b.low)
        worth = overlap / (1 + between[a.index, b.index]) + 1e-6 * rng.random()
        if worth > best:
            best, pick = worth, (a.index, b.index)
    return pick if rng.random() < 0.5 else pick[::-1]


@torch.no_grad()
def oracle_votes(generators: list[nn.Module], oracle: Oracle, data: DataSet, n: int, *,
                 noise: float = 0.0, seed: int = 0) -> list[Vote]:
    """n votes by an oracle, each on the pair next_pair() asks for (a simulated person
    at the leaderboard)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    votes: list[Vote] = []
    for _ in range(n):
        i, j = next_pair(votes, len(generators), rng)
        x, new_side = blind_pair(generators[j], generators[i], gen)   # i is "new"
        shown = from_display(to_display(x, data), data)
        choice = oracle.judge(shown[:1], shown[1:], noise, gen)[0]
        score = 0.5 if choice == "tie" else float(choice == new_side)
        votes.append((i, j, score))
    return votes
