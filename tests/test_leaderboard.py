"""The generator leaderboard (core/feedback/leaderboard.py): Bradley-Terry strengths
with bootstrap intervals, actively chosen pairs, votes stored as blind tests."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from core.data.datasets import load_by_name
from core.engine.config import preset
from core.engine.trainer import Trainer
from core.feedback.leaderboard import bradley_terry, next_pair, oracle_votes, ranking
from core.feedback.oracles import make_oracle


def test_bradley_terry_recovers_known_strengths():
    rng = np.random.default_rng(0)
    truth = np.array([1.0, 0.0, -1.0])
    votes = []
    for _ in range(3000):
        i, j = rng.choice(3, 2, replace=False)
        p = 1 / (1 + np.exp(-(truth[i] - truth[j])))
        votes.append((int(i), int(j), float(rng.random() < p)))
    theta = bradley_terry(votes, 3)
    assert theta == pytest.approx(truth - truth.mean(), abs=0.12)
    assert bradley_terry([], 3) == pytest.approx(np.zeros(3))   # the prior alone: equal
    # one lucky vote moves a score, but not to infinity
    assert np.isfinite(bradley_terry([(0, 1, 1.0)], 2)).all()


def test_the_next_pair_is_the_least_certain_neighbours():
    rng = np.random.default_rng(1)
    votes = [(0, 1, 1.0)] * 40 + [(1, 2, 1.0), (2, 1, 1.0)]   # 0 > 1 settled; 1 ~ 2 not
    asked = [tuple(sorted(next_pair(votes, 3, rng))) for _ in range(10)]
    assert asked.count((1, 2)) >= 8


def test_an_oracle_ranks_early_middle_and_late_checkpoints_in_150_votes():
    data = load_by_name("ring8")
    trainer = Trainer(preset("recommended", data="ring8", eval_every=0, seed=0))
    snapshots = {}
    for step in range(1, 1501):
        trainer.step()
        if step in (10, 200, 1500):
            snapshots[step] = copy.deepcopy(trainer.nets.G).eval()
    generators = [snapshots[s] for s in (10, 200, 1500)]
    votes = oracle_votes(generators, make_oracle("real", data), data, n=150, noise=0.3,
                         seed=0)
    standings = ranking(votes, 3)
    assert [s.index for s in standings] == [2, 1, 0]   # late > middle > early
    assert standings[0].low > standings[-1].high       # and the ends are told apart


def test_the_feedback_page_ranks_generators_from_blind_votes(tmp_path, monkeypatch):
    """Leaderboard mode: two saved checkpoints are preselected; each vote is stored as a
    blind test, counted, and the ranking table follows."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.engine.config import TrainConfig
    from core.feedback.preferences import PreferenceStore
    from ui.feedback_view import _stores

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.chdir(root)
    for name, steps in (("early", 1), ("late", 3)):
        trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, batch_size=8, eval_every=0))
        for _ in range(steps):
            trainer.step()
        trainer.save_checkpoint(tmp_path / name / f"step_{steps}.pt")
    _stores().clear()
    at = AppTest.from_file(str(root / "views" / "feedback.py"), default_timeout=60).run()
    at.radio(key="fb_mode").set_value("Leaderboard").run()
    assert not at.exception, at.exception
    assert len(at.multiselect(key="fb_lb").value) == 2   # the saved checkpoints
    for _ in range(6):
        at.button(key="fb_blind_left").click().run()
        assert not at.exception
    assert "6 votes between these 2 generators" in at.get("progress")[0].proto.text
    (table,) = at.dataframe
    assert list(table.value["votes"]) == [6, 6]
    with PreferenceStore(tmp_path / "preferences.sqlite") as store:
        assert len(store.blind_judgements()) == 6
    for s in _stores().values():
        s.close()
    _stores().clear()
