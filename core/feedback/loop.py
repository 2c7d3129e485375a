"""The human-feedback loop's engine side: draw samples to judge, let an oracle judge
them, and fit a reward model on what a store holds. Shared by the CLI and the
Feedback page.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.data.datasets import DataSet
from core.feedback.agreement import self_agreement
from core.feedback.oracles import Oracle
from core.feedback.preferences import BlindJudgement, Judgement, PreferenceStore
from core.feedback.reward_model import RewardModel, train_reward_model

CANDIDATES = 32   # active selection: pairs drawn, the most disputed one is shown


def generator_fingerprint(G: nn.Module) -> str:
    """Short hash of G's weights: which generator a judgement's samples came from."""
    h = hashlib.sha256()
    for key, value in G.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def latent_dim(G: nn.Module) -> int:
    return G.layers[0].in_features


def to_display(x: torch.Tensor, data: DataSet) -> np.ndarray:
    """Samples as a person sees them: uint8 images (k, H, W) / (k, C, H, W), or
    float32 points (k, 2)."""
    x = x.detach().float().cpu()
    if not data.is_image:
        return x.numpy().astype(np.float32)
    c, h, w = data.image_shape
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return pixels.reshape(len(x), h, w) if c == 1 else pixels.reshape(len(x), c, h, w)


def from_display(shown: np.ndarray, data: DataSet) -> torch.Tensor:
    """Samples as shown back to model space (k, dim): what a reward model scores."""
    x = torch.as_tensor(shown)
    return x.reshape(len(x), -1).float() / 127.5 - 1 if data.is_image else x.float()


@torch.no_grad()
def draw(G: nn.Module, k: int, gen: torch.Generator, model: RewardModel | None = None,
         candidates: int = CANDIDATES) -> tuple[torch.Tensor, torch.Tensor]:
    """k samples of G's output and their z. With a reward model of several members,
    a pair is the one of `candidates` random pairs its members disagree on most."""
    if model is None or k != 2 or len(model.heads) < 2:
        z = torch.randn(k, latent_dim(G), generator=gen)
        return G(z), z
    z = torch.randn(2 * candidates, latent_dim(G), generator=gen)
    x = G(z)
    a, b = x[:candidates], x[candidates:]
    i = int(model.disagreement(a, b).argmax())
    return torch.stack([a[i], b[i]]), torch.stack([z[i], z[candidates + i]])


def draw_against(G: nn.Module, G_base: nn.Module,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample of G and one of G_base (a fine-tune against its start), sides at
    random, and their z: a later feedback round shows the judge what the fine-tune
    changed."""
    z = torch.randn(2, latent_dim(G), generator=gen)
    x = torch.cat([G(z[:1]), G_base(z[1:])])
    if bool(torch.rand((), generator=gen) < 0.5):
        x, z = x.flip(0), z.flip(0)
    return x, z


def judgement(samples: torch.Tensor, z: torch.Tensor, choice: str, judge: str,
              data: DataSet, generator: str, step: int, round_: int = 0,
              criterion: str = "") -> Judgement:
    return Judgement(samples=to_display(samples, data), z=z.float().cpu().numpy(),
                     choice=choice, judge=judge, generator=generator, step=int(step),
                     data=data.name, round=round_, criterion=criterion)


@torch.no_grad()
def simulate(store: PreferenceStore, G: nn.Module, data: DataSet, oracle: Oracle, *,
             n: int, noise: float, seed: int = 0, step: int = 0, k: int = 2,
             criterion: str | None = None, judge: str | None = None,
             repeats: float = 0.0) -> int:
    """An oracle judges n fresh comparisons (pairs, or best-of-4) of G's samples, as a
    person would on the Feedback page; they are stored in one transaction, under
    `criterion` (default: the oracle's name) and `judge` (default: oracle:<name>).
    `repeats`: the share of pairs that are an earlier pair again, sides swapped (the
    page's consistency checks). The same seed draws the same pairs whatever the noise,
    so two simulated judges share their pairs."""
    gen = torch.Generator().manual_seed(seed)
    again = torch.Generator().manual_seed(seed + 1)   # repeats do not shift the pairs
    fingerprint = generator_fingerprint(G)
    judge = judge or f"oracle:{oracle.name}"
    rows, seen = [], []
    for i in range(n):
        if k == 2 and i >= 5 and float(torch.rand((), generator=again)) < repeats:
            x, z = seen[int(torch.randint(len(seen), (1,), generator=again))]
            x, z = x.flip(0), z.flip(0)
        else:
            x, z = draw(G, k, gen)
            seen.append((x, z))
        shown = from_display(to_display(x, data), data)   # judge what a person would see
        if k == 2:
            choice = oracle.judge(shown[:1], shown[1:], noise, gen)[0]
        else:
            choice = f"best:{oracle.best_of(shown, noise, gen)}"
        rows.append(judgement(x, z, choice, judge, data, fingerprint, step,
                              criterion=oracle.name if criterion is None else criterion))
    store.add_many(rows)
    return len(rows)


def pairs_from_store(store: PreferenceStore, data: DataSet, judge: str | None = None,
                     skipped: list[str] | None = None, criterion: str | None = None,
                     exclude: tuple[str, ...] = ()):
    """(a, b, p) tensors in model space (flat) for train_reward_model, of one criterion
    if given. Damaged rows, and rows whose samples are not the shape to_display gives
    this data set, are left out and described in `skipped` (preferences.skipped_line)."""
    shape = tuple(to_display(torch.zeros(1, data.dim), data).shape[1:])
    a, b, p = store.training_pairs(data=data.name, judge=judge, shape=shape, skipped=skipped,
                                   criterion=criterion, exclude=exclude)
    flat = (len(p), data.dim)
    return (torch.from_numpy(a).reshape(flat), torch.from_numpy(b).reshape(flat),
            torch.from_numpy(p))


def train_from_store(store: PreferenceStore, data: DataSet, judge: str | None = None,
                     skipped: list[str] | None = None, criterion: str | None = None,
                     exclude: tuple[str, ...] = (), **options) -> RewardModel:
    """One model, one criterion: the file records the criterion it learnt (None: every
    row, recorded as the criteria found), and the judges it left out (`exclude`)."""
    a, b, p = pairs_from_store(store, data, judge, skipped, criterion, exclude)
    model = train_reward_model(a, b, p, data, **options)
    rows = [j for j in store.judgements(judge=judge, data=data.name, criterion=criterion)
            if j.judge not in exclude]
    model.metrics["self_agreement"], model.metrics["repeats"] = self_agreement(rows)
    model.metrics["excluded_judges"] = list(exclude)
    model.metrics["criterion"] = criterion if criterion is not None else " | ".join(
        c for c in store.criteria(data.name) if c)
    return model


@torch.no_grad()
def blind_win_rate(G_new: nn.Module, G_base: nn.Module, oracle: Oracle, n: int = 1000,
                   noise: float = 0.0, seed: int = 0) -> float:
    """Share of n pairs (a sample of each generator, on independent z, shown in random
    order) in which the oracle prefers G_new's sample; ties count half."""
    gen = torch.Generator().manual_seed(seed)
    new = G_new(torch.randn(n, latent_dim(G_new), generator=gen))
    base = G_base(torch.randn(n, latent_dim(G_base), generator=gen))
    flip = torch.rand(n, generator=gen) < 0.5          # which side the new sample is on
    left = torch.where(flip.unsqueeze(1), base, new)
    right = torch.where(flip.unsqueeze(1), new, base)
    answers = oracle.judge(left, right, noise, gen)
    wins = [0.5 if a == "tie" else float((a == "left") != bool(f))
            for a, f in zip(answers, flip.tolist())]
    return sum(wins) / n


# -- a person's blind test: new generator against its base --------------------------------
Z95 = 1.959964


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of successes / n (nan, nan for n = 0). Fractional successes
    (ties as half) are fine: a tie varies less than a coin, so this errs wide."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate_ci(wins: int, ties: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(rate, low, high): the new generator's win rate over n judged pairs (skips not
    counted), ties counting half as in blind_win_rate, and its 95% Wilson interval."""
    if not 0 <= wins + ties <= n:
        raise ValueError(f"wins {wins} + ties {ties} must be between 0 and n = {n}")
    score = wins + ties / 2
    low, high = wilson(score, n, z)
    return (score / n if n else math.nan), low, high


@torch.no_grad()
def blind_pair(G_base: nn.Module, G_new: nn.Module, gen: torch.Generator
               ) -> tuple[torch.Tensor, str]:
    """One sample of each generator on independent z, in random order:
    (x as [left, right], the side the new generator's sample is on)."""
    base = G_base(torch.randn(1, latent_dim(G_base), generator=gen))
    new = G_new(torch.randn(1, latent_dim(G_new), generator=gen))
    if bool(torch.rand(1, generator=gen) < 0.5):
        return torch.cat([new, base]), "left"
    return torch.cat([base, new]), "right"


@torch.no_grad()
def model_choice(model: RewardModel, shown: np.ndarray, data: DataSet) -> str | None:
    """The side of a shown pair the reward model scores higher (None: equal)."""
    r = model.score(from_display(shown, data))
    diff = float(r[0] - r[1])
    return "left" if diff > 0 else "right" if diff < 0 else None


def model_fingerprint(model: RewardModel) -> str:
    """Which reward model judged a blind pair (its heads' weights)."""
    return generator_fingerprint(model.heads)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ci(low: float, high: float) -> str:
    return f"95% CI {100 * low:.0f}–{100 * high:.0f}%"


ALARM_MIN_PAIRS = 10   # a handful of clicks is too few to raise an alarm on


@dataclass(frozen=True)
class BlindTally:
    """A blind test's counts, for the new generator; agree / model_pairs: how often the
    reward model preferred the sample the person did (pairs with a winner only)."""
    wins: int = 0
    ties: int = 0
    losses: int = 0
    skips: int = 0
    agree: int = 0
    model_pairs: int = 0

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    def win_rate(self) -> tuple[float, float, float]:
        return win_rate_ci(self.wins, self.ties, self.n)

    def winner(self) -> str | None:
        """"new" / "base" when the 95% interval excludes a coin flip, else None."""
        if self.n == 0:
            return None
        _, low, high = self.win_rate()
        return "new" if low > 0.5 else "base" if high < 0.5 else None

    def verdict(self) -> str:
        """One plain sentence: who wins, by how much, and whether it is more than noise."""
        if self.n == 0:
            return "No blind judgements yet."
        rate, low, high = self.win_rate()
        ties = f" and ties {self.ties}" if self.ties else ""
        half = ", ties as half" if self.ties else ""
        counts = (f"wins {self.wins}{ties} of {self.n} ({_pct(rate)}{half}, "
                  f"{_ci(low, high)})")
        if self.winner() == "new":
            return f"The fine-tuned generator is better: it {counts}."
        if self.winner() == "base":
            return f"The base generator is better: the fine-tuned one {counts}."
        return (f"Within noise: the fine-tuned generator {counts}; judge more pairs to "
                f"tell them apart.")

    def agreement(self) -> tuple[float, float, float]:
        """(rate, low, high) of the reward model's on-policy agreement with the person."""
        low, high = wilson(self.agree, self.model_pairs)
        return (self.agree / self.model_pairs if self.model_pairs else math.nan), low, high

    def alarm(self, held_out: float | None) -> bool:
        """Gao et al.: agreement on the new generator's samples clearly below the held-out
        agreement at training time (its 95% upper bound under it) hints at reward hacking."""
        if self.model_pairs < ALARM_MIN_PAIRS or held_out is None or not math.isfinite(held_out):
            return False
        return self.agreement()[2] < held_out


def blind_tally(judgements: list[BlindJudgement], model: str = "") -> BlindTally:
    """Count a blind test; agreement only over the pairs judged while the reward model
    with fingerprint `model` was loaded."""
    out = {"win": 0, "tie": 0, "loss": 0, "skip": 0}
    agree = pairs = 0
    for j in judgements:
        out[j.outcome] += 1
        if model and j.reward_model == model and j.model_choice and j.outcome in ("win", "loss"):
            pairs += 1
            agree += j.model_choice == j.choice
    return BlindTally(out["win"], out["tie"], out["loss"], out["skip"], agree, pairs)


def agreement_line(tally: BlindTally, held_out: float | None) -> str:
    """'The reward model agrees with you on X of N fresh pairs (Y%) ...', plain text."""
    if not tally.model_pairs:
        return "The reward model has no judged fresh pairs to compare with you yet."
    rate, low, high = tally.agreement()
    line = (f"The reward model agrees with you on {tally.agree} of {tally.model_pairs} "
            f"fresh pairs ({_pct(rate)}, {_ci(low, high)})")
    if held_out is None or not math.isfinite(held_out):
        return line + "."
    return line + f"; on held-out pairs at training time it agreed {_pct(held_out)}."


ALARM = ("On the new samples the reward model agrees with you clearly less than on its "
         "held-out pairs: the generator may be exploiting the reward model. Stop the "
         "fine-tune at an earlier checkpoint, or judge more pairs of the new samples.")
