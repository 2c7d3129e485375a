"""Annotation quality (core/feedback/agreement.py): self-agreement on repeated pairs,
agreement with an oracle, Cohen's kappa, and leaving an unreliable judge out."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.cli.main import main
from core.data.datasets import load_by_name
from core.engine.config import TrainConfig
from core.engine.trainer import Trainer
from core.feedback.agreement import accuracy_ceiling, cohens_kappa, judge_stats, pair_key, self_agreement
from core.feedback.loop import latent_dim, train_from_store
from core.feedback.oracles import make_oracle
from core.feedback.preferences import Judgement, PreferenceStore
from core.feedback.reward_model import agreement, verdict

ORACLE = "upper"


def _pair(a: float, b: float, choice: str, judge: str = "ann") -> Judgement:
    return Judgement(samples=np.array([[a, 0.0], [b, 0.0]], np.float32),
                     z=np.zeros((2, 2), np.float32), choice=choice, judge=judge,
                     generator="g", step=0, data="ring8")


def _digest_of(value: float) -> str:
    """The content key of the sample [value, 0] (as pair_key orders samples)."""
    a, b = pair_key(_pair(value, value, "tie"))
    return a


def test_self_agreement_and_kappa_match_a_hand_computed_example():
    # ann judges (1,2) left, then again with the sides swapped: right = the same sample
    # wins; (3,4) left then swapped left = the other sample wins: 1 of 2 repeats agree
    ann = [_pair(1, 2, "left"), _pair(3, 4, "left"), _pair(2, 1, "right"),
           _pair(4, 3, "left"), _pair(5, 6, "tie"), _pair(7, 8, "right")]
    assert self_agreement(ann) == (0.5, 2)
    # bob on the 4 distinct pairs ann judged first: the same winner on (1,2), (3,4)
    # and (7,8) (some shown swapped), left (the 5) instead of a tie on (5,6)
    bob = [_pair(2, 1, "right", "bob"), _pair(3, 4, "left", "bob"),
           _pair(5, 6, "left", "bob"), _pair(8, 7, "left", "bob")]
    winners = {"ann": [1, 3, None, 8], "bob": [1, 3, 5, 8]}   # None: a tie
    # kappa by hand: a label per pair, the winner's place in the pair's canonical order
    keys = [pair_key(_pair(a, b, "tie")) for a, b in ((1, 2), (3, 4), (5, 6), (7, 8))]

    def label(key, winner):
        if winner is None:
            return "tie"
        return "first" if _digest_of(winner) == key[0] else "second"

    la = [label(k, w) for k, w in zip(keys, winners["ann"])]
    lb = [label(k, w) for k, w in zip(keys, winners["bob"])]
    observed = sum(x == y for x, y in zip(la, lb)) / 4          # 3 / 4
    chance = sum(la.count(c) * lb.count(c) / 16 for c in ("first", "second", "tie"))
    kappa, shared = cohens_kappa(ann, bob)
    assert observed == 0.75 and shared == 4
    assert kappa == pytest.approx((observed - chance) / (1 - chance))
    assert math.isnan(cohens_kappa(ann, [])[0])


def test_a_careful_and_a_noisy_judge_are_told_apart_and_the_noisy_one_left_out(tmp_path,
                                                                                capsys):
    """Two simulated judges on the same criterion and the same pairs, at noise 0.1 and
    2.0: the stats rank them, and a reward model without the noisy one is more accurate
    on fresh pairs judged by the exact oracle."""
    trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, batch_size=64, eval_every=0))
    for _ in range(300):
        trainer.step()
    ckpt = trainer.save_checkpoint(tmp_path / "g.pt")
    db = tmp_path / "p.sqlite"
    for name, noise in (("careful", "0.1"), ("noisy", "2.0")):
        assert main(["feedback", "simulate", "--from", str(ckpt), "--oracle", ORACLE,
                     "--pairs", "200", "--noise", noise, "--judge", name, "--repeats", "0.15",
                     "--criterion", "Which is higher?", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["feedback", "stats", "--db", str(db), "--oracle", ORACLE]) == 0
    out = capsys.readouterr().out
    assert "Cohen's kappa careful vs noisy" in out
    data = load_by_name("ring8")
    oracle = make_oracle(ORACLE, data)
    with PreferenceStore(db) as store:
        rows = store.judgements()
        G = trainer.nets.G.eval()

        def prob_left(pairs):
            left = torch.stack([torch.from_numpy(j.samples[0]) for j in pairs])
            right = torch.stack([torch.from_numpy(j.samples[1]) for j in pairs])
            return oracle.prob_left(left, right, 0.0).numpy()

        stats = {s.judge: s for s in judge_stats(rows, prob_left)}
        careful, noisy = stats["careful"], stats["noisy"]
        assert careful.repeats >= 20 and noisy.repeats == careful.repeats
        assert careful.self_agreement > noisy.self_agreement + 0.05   # ranked right
        assert careful.oracle_agreement > noisy.oracle_agreement + 0.05
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            a = G(torch.randn(1000, latent_dim(G), generator=gen))
            b = G(torch.randn(1000, latent_dim(G), generator=gen))
        exact = oracle.prob_left(a, b, 0.0)
        accuracy = {}
        for label, exclude in (("both", ()), ("careful only", ("noisy",))):
            model = train_from_store(store, data, exclude=exclude, seed=0)
            with torch.no_grad():
                accuracy[label] = agreement(model.score(a) - model.score(b), exact)
        # the model says what the labels it learnt from allow (the judges it kept)
        assert (model.metrics["self_agreement"], model.metrics["repeats"]) == (
            careful.self_agreement, careful.repeats)
        ceiling = f"{accuracy_ceiling(careful.self_agreement):.2f} at most"
        assert ceiling in verdict(model.metrics)[1]
    summary = (f"self-agreement careful {careful.self_agreement:.2f} vs noisy "
          f"{noisy.self_agreement:.2f}; oracle agreement {careful.oracle_agreement:.2f} vs "
          f"{noisy.oracle_agreement:.2f}; reward model on 1,000 exact pairs: {accuracy}")
    assert accuracy["careful only"] > accuracy["both"], summary
    # the CLI leaves the noisy judge out by its self-agreement, and says so
    assert main(["reward", "train", "--db", str(db), "--out", str(tmp_path / "rm.pt"),
                 "--min-self-agreement", "0.7"]) == 0
    assert "left out (self-agreement below 70%): noisy" in capsys.readouterr().err


def test_the_accuracy_ceiling_undoes_the_agreement_of_two_noisy_verdicts():
    # each verdict right with probability q: two agree with probability q^2 + (1-q)^2
    for q in (0.5, 0.7, 0.8, 0.95, 1.0):
        assert accuracy_ceiling(q * q + (1 - q) ** 2) == pytest.approx(q)
    assert math.isnan(accuracy_ceiling(0.4)) and math.isnan(accuracy_ceiling(float("nan")))
    rng = np.random.default_rng(0)    # and by simulation: a judge right 80% of the time
    first, second = rng.random(20_000) < 0.8, rng.random(20_000) < 0.8
    assert accuracy_ceiling(float(np.mean(first == second))) == pytest.approx(0.8, abs=0.01)
