"""Feedback rounds: judge, fit a reward model, fine-tune, then judge the fine-tuned samples.

One round of feedback leaves the reward model blind to what the fine-tune will draw: it
only ever saw the base generator's samples, so the fine-tune finds edits it scores as
high as the real thing. Each later round shows the judge samples of the generator as it
is now (pairs of its own samples, and pairs of one of its samples against one of the
base's, sides at random), so the reward model sees its own exploits. Every pair keeps its
round and its generator(s) in the store; the reward model of round r learns from every
round up to r and is saved as a new file; the fine-tune goes on where it stopped.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from core.data.datasets import DataSet
from core.engine.fine_tune import R1_OFF, drops_r1
from core.feedback.loop import (
    draw_against,
    from_display,
    generator_fingerprint,
    judgement,
    latent_dim,
    pairs_from_store,
    to_display,
)
from core.feedback.oracles import Oracle
from core.feedback.preferences import PreferenceStore
from core.feedback.reward_model import new_file, train_reward_model, verdict


@dataclass
class RoundResult:
    round: int
    pairs: int              # judged this round
    reward_model: str       # the file fit on every round so far
    summary: str            # its held-out accuracy with the interval
    step: int               # the fine-tune's step at the end of the round


@torch.no_grad()
def judge_round(store: PreferenceStore, oracle: Oracle, G: nn.Module, G_base: nn.Module,
                data: DataSet, *, n: int, noise: float, round_: int, step: int,
                gen: torch.Generator) -> int:
    """The oracle judges n pairs: of G's own samples in round 0, and in later rounds half
    of them G's own and half G against the base (sides at random)."""
    fp_new, fp_base = generator_fingerprint(G), generator_fingerprint(G_base)
    rows = []
    for i in range(n):
        if round_ > 0 and i % 2 == 1:
            (x, z), fingerprint = draw_against(G, G_base, gen), f"{fp_new}/{fp_base}"
        else:
            z = torch.randn(2, latent_dim(G), generator=gen)
            x, fingerprint = G(z), fp_new
        shown = from_display(to_display(x, data), data)   # judged as a person sees them
        choice = oracle.judge(shown[:1], shown[1:], noise, gen)[0]
        rows.append(judgement(x, z, choice, f"oracle:{oracle.name}", data, fingerprint,
                              step, round_=round_, criterion=oracle.name))
    store.add_many(rows)
    return len(rows)


def run_rounds(trainer, rule: str, store: PreferenceStore, oracle: Oracle, *, rounds: int,
               pairs_per_round: int, steps_per_round: int, out: str | Path,
               noise: float = 0.0, features: str | None = None, seed: int = 0,
               log: Callable[[str], None] = print) -> list[RoundResult]:
    """`rounds` rounds from a trainer's generator as it is now (the base): `rule` (rlhf or
    latent) fine-tunes on each round's reward model, which replaces the last one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = trainer.data
    G_base = copy.deepcopy(trainer.nets.G).requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    judge = f"oracle:{oracle.name}"
    results = []
    for r in range(rounds):
        n = judge_round(store, oracle, trainer.nets.G, G_base, data, n=pairs_per_round,
                        noise=noise, round_=r, step=trainer.step_count, gen=gen)
        a, b, p = pairs_from_store(store, data, judge)
        model = train_reward_model(a, b, p, data, features=features, seed=seed + r)
        path = model.save(new_file(out / f"rm-round{r}.pt"))
        good, summary = verdict(model.metrics)
        log(f"round {r}: {n} pairs judged, reward model {path}: {summary}")
        option = {f"{rule}.reward_model": str(path)}
        if trainer.cfg.rule == rule:
            trainer.reconfigure(**option)
        else:   # the fine-tune starts here: a rule that needs a reward model has one now
            r1_off = drops_r1(trainer.cfg, [rule])
            trainer.set_rule(rule, **option, **({"r1": 0.0} if r1_off else {}))
            if r1_off:
                trainer.log.add_event(trainer.step_count, R1_OFF)
        for _ in range(steps_per_round):
            trainer.step()
        trainer.save_checkpoint(out / f"round{r}.safetensors")
        results.append(RoundResult(r, n, str(path), summary, trainer.step_count))
    return results
