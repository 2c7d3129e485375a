"""A person's blind test of a fine-tuned generator against its base: the win rate and
its interval, the store's blind_tests table (and upgrading a schema-1 file to it), the
reward model's on-policy agreement alarm, and the Feedback page's "Blind test" mode
(AppTest)."""
from __future__ import annotations

import copy
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from core.feedback import loop as feedback
from core.feedback.loop import BlindTally, blind_tally, wilson, win_rate_ci
from core.feedback.preferences import (
    APPLICATION_ID,
    BlindJudgement,
    Judgement,
    PreferenceStore,
    PreferenceStoreError,
)

ROOT = Path(__file__).resolve().parents[1]


def blind(choice="left", new_side="left", judge="person", model="", model_choice=None,
          base="file a/step_1.pt", new="file b/step_2.pt", seed=0) -> BlindJudgement:
    rng = np.random.default_rng(seed)
    return BlindJudgement(samples=rng.integers(0, 256, (2, 8, 8), dtype=np.uint8),
                          new_side=new_side, choice=choice, judge=judge, data="mnist5k",
                          base=base, base_generator="aaa", base_step=1, new=new,
                          new_generator="bbb", new_step=2, reward_model=model,
                          model_choice=model_choice)


# -- the maths ------------------------------------------------------------------------------
def test_win_rate_ci_matches_the_wilson_interval_and_counts_ties_half():
    rate, low, high = win_rate_ci(34, 0, 50)
    assert rate == 0.68 and round(100 * low) == 54 and round(100 * high) == 79
    rate, low, high = win_rate_ci(10, 20, 40)            # 10 wins + 20 ties = 20 of 40
    assert rate == 0.5 and low < 0.5 < high and high - 0.5 == pytest.approx(0.5 - low)
    assert win_rate_ci(0, 0, 10)[1] == 0.0 and win_rate_ci(10, 0, 10)[2] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in win_rate_ci(0, 0, 0))
    with pytest.raises(ValueError):
        win_rate_ci(5, 6, 10)
    # the interval narrows like 1/sqrt(n)
    assert (wilson(600, 1000)[1] - wilson(600, 1000)[0]) < (wilson(60, 100)[1] - wilson(60, 100)[0]) / 3


def test_verdicts_say_who_wins_or_that_it_is_noise():
    assert BlindTally(wins=34, losses=16).verdict() == (
        "The fine-tuned generator is better: it wins 34 of 50 (68%, 95% CI 54–79%).")
    assert BlindTally(wins=6, losses=4).verdict().startswith("Within noise:")
    assert BlindTally(wins=6, ties=2, losses=4).winner() is None
    assert "ties 2 of 12" in BlindTally(wins=6, ties=2, losses=4).verdict()
    assert BlindTally(wins=5, losses=45).winner() == "base"
    assert BlindTally().verdict() == "No blind judgements yet."


def test_tally_outcomes_and_the_agreement_alarm():
    rows = ([blind("left", "left")] * 3 + [blind("right", "left")] + [blind("tie")]
            + [blind("skip")])
    t = blind_tally(rows)
    assert (t.wins, t.losses, t.ties, t.skips, t.n) == (3, 1, 1, 1, 5)
    # the model agrees on 4 of 20 decided pairs judged with it; other models' rows ignored
    rows = ([blind("left", model="rm1", model_choice="left")] * 4
            + [blind("right", model="rm1", model_choice="left")] * 16
            + [blind("left", model="rm0", model_choice="left")] * 9
            + [blind("tie", model="rm1", model_choice="left")])
    t = blind_tally(rows, model="rm1")
    assert (t.agree, t.model_pairs) == (4, 20)
    assert t.alarm(0.85) and not t.alarm(0.2) and not t.alarm(None)
    assert "agrees with you on 4 of 20 fresh pairs (20%" in feedback.agreement_line(t, 0.85)
    assert "held-out pairs at training time it agreed 85%" in feedback.agreement_line(t, 0.85)
    few = blind_tally(rows[:1] + rows[4:6], model="rm1")   # 1 of 3: too few to alarm on
    assert not few.alarm(0.85)
    assert not blind_tally(rows).alarm(0.9)                 # no model: no alarm


def test_blind_pair_sides_are_random_and_samples_independent():
    from core.engine.config import TrainConfig
    from core.engine.trainer import Trainer

    G = Trainer(TrainConfig(data="ring8", latent_dim=2, eval_every=0)).nets.G
    shifted = copy.deepcopy(G)
    with torch.no_grad():
        shifted.layers[-1].bias[1] += 100.0     # the new generator's samples sit far above
    gen = torch.Generator().manual_seed(0)
    sides = []
    for _ in range(200):
        x, side = feedback.blind_pair(G, shifted, gen)
        new_is_left = bool(x[0, 1] > x[1, 1])
        assert new_is_left == (side == "left")
        sides.append(side)
    assert 70 < sides.count("left") < 130
    x, _ = feedback.blind_pair(G, G, gen)
    assert not torch.equal(x[0], x[1])          # independent z, not the same one


# -- the store ------------------------------------------------------------------------------
def test_blind_rows_round_trip_filter_and_undo_apart_from_pairs(tmp_path):
    with PreferenceStore(tmp_path / "p.sqlite") as s:
        first = blind("left", "right", model="rm1", model_choice="right")
        s.add_blind(first)
        s.add_blind(blind("tie", judge="ann"))
        s.add_blind(blind("right", new="file c/step_3.pt"))
        (got,) = s.blind_judgements(judge="person", new="file b/step_2.pt")
        assert np.array_equal(got.samples, first.samples) and got.samples.dtype == np.uint8
        assert (got.choice, got.new_side, got.outcome) == ("left", "right", "loss")
        assert (got.reward_model, got.model_choice, got.base_step) == ("rm1", "right", 1)
        assert got.time > 0 and got.id == 1
        assert s.count() == 0 and s.training_pairs()[2].shape == (0,)   # not training data
        assert s.undo_last_blind("person").new == "file c/step_3.pt"
        assert len(s.blind_judgements()) == 2 and s.undo_last_blind("bob") is None
    with PreferenceStore(tmp_path / "p.sqlite") as s:   # durable
        assert [j.judge for j in s.blind_judgements()] == ["person", "ann"]



def test_blind_tests_export_as_csv_with_each_outcome(tmp_path):
    import csv
    import io

    with PreferenceStore(tmp_path / "p.sqlite") as s:
        s.add_blind(blind("left", "right", model="rm1", model_choice="right"))
        s.add_blind(blind("right", "right", judge="=cmd()"))
        s.add_blind(blind("tie"))
        rows = list(csv.DictReader(io.StringIO(s.blind_csv().decode("utf-8"))))
    assert [r["outcome"] for r in rows] == ["loss", "win", "tie"]
    assert rows[0]["new_side"] == "right" and rows[0]["model_choice"] == "right"
    assert rows[0]["new"] == "file b/step_2.pt" and rows[0]["base_step"] == "1"
    assert "T" in rows[0]["time"] and rows[1]["judge"] == "'=cmd()"    # no formula

@pytest.mark.parametrize("field, value, match", [
    ("new_side", "up", "new_side"), ("choice", "best:1", "choice"), ("base", " ", "base"),
    ("model_choice", "left", "model_choice"), ("new_step", -1, "step"),
])
def test_bad_blind_judgements_are_refused(tmp_path, field, value, match):
    from dataclasses import replace
    with PreferenceStore(tmp_path / "p.sqlite") as s:
        with pytest.raises(PreferenceStoreError, match=match):
            s.add_blind(replace(blind(), **{field: value}))
        with pytest.raises(PreferenceStoreError, match="2 samples"):
            s.add_blind(replace(blind(), samples=np.zeros((4, 8, 8), np.uint8)))
        assert s.blind_judgements() == []


SCHEMA_1 = """CREATE TABLE judgements (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, judge TEXT NOT NULL,
    generator TEXT NOT NULL, step INTEGER NOT NULL, data TEXT NOT NULL,
    choice TEXT NOT NULL, k INTEGER NOT NULL, samples BLOB NOT NULL,
    samples_dtype TEXT NOT NULL, samples_shape TEXT NOT NULL, z BLOB NOT NULL,
    z_dtype TEXT NOT NULL, z_shape TEXT NOT NULL)"""


def schema_1_file(path: Path) -> None:
    """A preference database exactly as the first version wrote it, with one row."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=1")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(SCHEMA_1)
    conn.execute("INSERT INTO judgements (time, judge, generator, step, data, choice, k, "
                 "samples, samples_dtype, samples_shape, z, z_dtype, z_shape) VALUES "
                 "(1.5, 'person', 'g1', 3, 'ring8', 'left', 2, ?, 'float32', '[2, 2]', ?, "
                 "'float32', '[2, 4]')",
                 (np.ones((2, 2), "<f4").tobytes(), np.zeros((2, 4), "<f4").tobytes()))
    conn.commit()
    conn.close()


def test_a_schema_1_database_opens_keeps_its_rows_and_gains_blind_tests(tmp_path):
    path = tmp_path / "old.sqlite"
    schema_1_file(path)
    with PreferenceStore(path) as s:
        (j,) = s.judgements()
        assert (j.judge, j.choice, j.step, j.round) == ("person", "left", 3, 0)
        assert s.blind_judgements() == []
        s.add_blind(blind())
        s.add(Judgement(samples=np.zeros((2, 2), np.float32), z=np.zeros((2, 4), np.float32),
                        choice="tie", judge="person", generator="g1", step=4, data="ring8",
                        round=2))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    conn.close()
    with PreferenceStore(path) as s:   # and opens again as a schema-4 file
        assert s.count() == 2 and len(s.blind_judgements()) == 1
        assert [(j.round, j.criterion) for j in s.judgements()] == [(0, ""), (2, "")]


def test_a_schema_2_file_without_its_blind_table_is_damaged(tmp_path):
    path = tmp_path / "half.sqlite"
    schema_1_file(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    with pytest.raises(PreferenceStoreError, match="damaged .*schema 2"):
        PreferenceStore(path)


# -- the Feedback page (AppTest) -------------------------------------------------------------
@pytest.fixture
def two_generators(tmp_path, monkeypatch):
    """Two ring8 checkpoints: 'base' and 'new', whose samples sit far above the ring."""
    from core.engine.config import TrainConfig
    from core.engine.trainer import Trainer
    from ui.feedback_view import _stores

    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.chdir(ROOT)
    trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, batch_size=16, eval_every=0))
    trainer.step()
    trainer.save_checkpoint(tmp_path / "base" / "step_1.pt")
    with torch.no_grad():
        trainer.nets.G.layers[-1].bias[1] += 50.0
    trainer.save_checkpoint(tmp_path / "new" / "step_1.pt")
    _stores().clear()
    yield tmp_path
    for s in _stores().values():
        s.close()
    _stores().clear()


def test_feedback_page_blind_test_counts_wins_and_checks_the_reward_model(two_generators,
                                                                         monkeypatch):
    """A person who always picks the higher sample: the fine-tuned (higher) generator wins
    every pair. A reward model that prefers lower samples disagrees every time: the alarm."""
    from streamlit.testing.v1 import AppTest

    from core.data.datasets import load_by_name
    from core.feedback.oracles import make_oracle
    from core.feedback.reward_model import train_reward_model

    monkeypatch.setattr(feedback, "ALARM_MIN_PAIRS", 5)   # fewer clicks: a quicker test
    data = load_by_name("ring8")
    a, b = data.x[:200], data.x[200:400]
    rm = train_reward_model(a, b, make_oracle("upper", data).prob_left(b, a, 0.0), data,
                            members=1, seed=0)         # learns "lower is better"
    rm.save(two_generators / "rm_lower.pt")

    at = AppTest.from_file(str(ROOT / "views" / "feedback.py"), default_timeout=60).run()
    at.radio(key="fb_mode").set_value("Blind test").run()
    at.selectbox(key="fb_base").set_value("file base/step_1.pt")
    at.selectbox(key="fb_new").set_value("file new/step_1.pt")
    at.text_input(key="fb_model").set_value(str(two_generators / "rm_lower.pt")).run()
    assert not at.exception, at.exception
    assert "0 blind judgements" in at.get("progress")[0].proto.text
    assert "fb_train" not in [b.key for b in at.button]   # pairs train reward models
    for _ in range(6):
        current = at.session_state["fb_blind_current"]
        up = "left" if current["shown"][0, 1] > current["shown"][1, 1] else "right"
        assert up == current["new_side"]          # the new generator's sample is the high one
        at.button(key=f"fb_blind_{up}").click().run()
        assert not at.exception, at.exception
    assert "6 blind judgements" in at.get("progress")[0].proto.text
    assert at.success[0].value.startswith("The fine-tuned generator is better: it wins 6 of 6")
    text = " ".join(m.value for m in at.markdown)
    assert "agrees with you on 0 of 6 fresh pairs" in text
    assert any("exploiting the reward model" in w.value for w in at.warning)
    at.button(key="fb_blind_undo").click().run()
    assert "5 blind judgements" in at.get("progress")[0].proto.text
    assert not at.button(key="fb_blind_left").disabled
    assert "Blind tests CSV" in [d.proto.label for d in at.get("download_button")]
    with PreferenceStore(two_generators / "preferences.sqlite") as s:
        rows = s.blind_judgements()
        assert len(rows) == 5 and s.count() == 0
        assert {j.outcome for j in rows} == {"win"} and {j.model_choice for j in rows} != {None}
