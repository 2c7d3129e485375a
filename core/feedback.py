"""The human-feedback loop's engine side: draw samples to judge, let an oracle judge
them, and fit a reward model on what a store holds. Shared by the CLI and the
Feedback page.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from .data import DataSet
from .oracles import Oracle
from .preferences import Judgement, PreferenceStore
from .reward_model import RewardModel, train_reward_model

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


def judgement(samples: torch.Tensor, z: torch.Tensor, choice: str, judge: str,
              data: DataSet, generator: str, step: int) -> Judgement:
    return Judgement(samples=to_display(samples, data), z=z.float().cpu().numpy(),
                     choice=choice, judge=judge, generator=generator, step=int(step),
                     data=data.name)


@torch.no_grad()
def simulate(store: PreferenceStore, G: nn.Module, data: DataSet, oracle: Oracle, *,
             n: int, noise: float, seed: int = 0, step: int = 0, k: int = 2) -> int:
    """An oracle judges n fresh comparisons (pairs, or best-of-4) of G's samples, as a
    person would on the Feedback page; they are stored in one transaction."""
    gen = torch.Generator().manual_seed(seed)
    fingerprint = generator_fingerprint(G)
    judge = f"oracle:{oracle.name}"
    rows = []
    for _ in range(n):
        x, z = draw(G, k, gen)
        shown = torch.as_tensor(to_display(x, data))   # judge what a person would see
        shown = shown.reshape(k, -1).float() / 127.5 - 1 if data.is_image else shown
        if k == 2:
            choice = oracle.judge(shown[:1], shown[1:], noise, gen)[0]
        else:
            choice = f"best:{oracle.best_of(shown, noise, gen)}"
        rows.append(judgement(x, z, choice, judge, data, fingerprint, step))
    store.add_many(rows)
    return len(rows)


def pairs_from_store(store: PreferenceStore, data: DataSet, judge: str | None = None):
    """(a, b, p) tensors in model space (flat) for train_reward_model."""
    a, b, p = store.training_pairs(data=data.name, judge=judge)
    flat = (len(p), data.dim)
    return (torch.from_numpy(a).reshape(flat), torch.from_numpy(b).reshape(flat),
            torch.from_numpy(p))


def train_from_store(store: PreferenceStore, data: DataSet, judge: str | None = None,
                     **options) -> RewardModel:
    a, b, p = pairs_from_store(store, data, judge)
    return train_reward_model(a, b, p, data, **options)


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
