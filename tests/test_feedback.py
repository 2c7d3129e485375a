"""The preference loop: oracles, the Bradley-Terry reward model, the 'preference'
reward, the CLI commands and the Feedback page (AppTest)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli.main import main
from core.data.datasets import load_by_name
from core.engine.config import TrainConfig
from core.engine.trainer import Trainer
from core.feedback.loop import pairs_from_store, simulate
from core.feedback.oracles import make_oracle
from core.feedback.preferences import PreferenceStore
from core.feedback.reward_model import (
    RewardModelError,
    agreement,
    bt_loss,
    load_reward_model,
    train_reward_model,
)
from core.io.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def oracle_pairs(data_name: str, spec: str, n: int, noise: float = 0.0, seed: int = 0):
    data = load_by_name(data_name)
    oracle = make_oracle(spec, data)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(data.x), (2 * n,), generator=gen)
    a, b = data.x[idx[:n]], data.x[idx[n:]]
    return data, oracle, a, b, oracle.prob_left(a, b, noise).round()


def test_bt_loss_value_gradient_and_ties():
    r_a = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    r_b = torch.tensor([0.0, 1.0, 0.5])
    p = torch.tensor([1.0, 0.0, 0.5])
    loss = bt_loss(r_a, r_b, p)
    d = (r_a - r_b).detach()
    expected = -(p * torch.nn.functional.logsigmoid(d)
                 + (1 - p) * torch.nn.functional.logsigmoid(-d)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected))
    loss.backward()
    torch.testing.assert_close(r_a.grad, (torch.sigmoid(d) - p) / 3)
    # a tie between equal scores is already optimal: zero gradient
    assert float(r_a.grad[2]) == 0.0


def test_oracles_are_deterministic_under_a_seed_and_noise_flips_some_answers():
    data = load_by_name("ring8")
    oracle = make_oracle("angle:90", data)
    a, b = data.x[:300], data.x[300:600]
    first = oracle.judge(a, b, 0.5, torch.Generator().manual_seed(4))
    assert first == oracle.judge(a, b, 0.5, torch.Generator().manual_seed(4))
    exact = oracle.judge(a, b, 0.0, torch.Generator().manual_seed(4))
    agree = sum(x == y for x, y in zip(first, exact)) / len(exact)
    assert 0.55 < agree < 0.99
    with pytest.raises(Exception, match="does not judge ring8"):
        make_oracle("thick", data)


def test_reward_model_ranks_fresh_pairs_well_and_round_trips(tmp_path):
    data, oracle, a, b, p = oracle_pairs("ring8", "angle:90", 300)
    model = train_reward_model(a, b, p, data, seed=1)
    _, _, a2, b2, _ = oracle_pairs("ring8", "angle:90", 1000, seed=9)
    with torch.no_grad():
        fresh = agreement(model.score(a2) - model.score(b2), oracle.prob_left(a2, b2, 0.0))
    assert fresh > 0.8, fresh
    assert len(model.heads) == 3 and model.metrics["held_out_pairs"] == 60
    path = model.save(tmp_path / "rm.pt")
    again = load_reward_model(path)
    with torch.no_grad():
        torch.testing.assert_close(again.score(a2), model.score(a2))
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(RewardModelError, match="is not a reward model file"):
        load_reward_model(tmp_path / "bad.pt")
    torch.save({"kind": "reward_model", "schema_version": 1}, tmp_path / "half.pt")
    with pytest.raises(RewardModelError, match="not a usable reward model"):
        load_reward_model(tmp_path / "half.pt")


def test_simulate_store_train_and_fine_tune_on_the_preference_reward(tmp_path, capsys):
    trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, batch_size=64, eval_every=0))
    for _ in range(30):
        trainer.step()
    ckpt = trainer.save_checkpoint(tmp_path / "g.pt")
    db = tmp_path / "p.sqlite"
    assert main(["feedback", "simulate", "--from", str(ckpt), "--oracle", "upper",
                 "--pairs", "60", "--best-of", "4", "--db", str(db)]) == 0
    store = PreferenceStore(db)
    assert store.count(judge="oracle:upper") == 60
    a, b, p = pairs_from_store(store, load_by_name("ring8"))
    assert a.shape == (180, 2) and bool((p == 1).all())   # best of 4: 3 pairs each
    store.close()
    rm = tmp_path / "rm.pt"
    assert main(["reward", "train", "--db", str(db), "--out", str(rm)]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    assert load_reward_model(rm).metrics["criterion"] == "upper"   # the oracle's name
    # a second criterion in the store: one model learns one, chosen by name
    assert main(["feedback", "simulate", "--from", str(ckpt), "--oracle", "angle:90",
                 "--pairs", "30", "--db", str(db), "--criterion", "Which is nearer 90°?"]) == 0
    assert main(["reward", "train", "--db", str(db), "--out", str(tmp_path / "r2.pt")]) == 2
    assert "judged under 2 criteria ('upper', 'Which is nearer 90°?')" in \
        capsys.readouterr().err
    assert main(["reward", "train", "--db", str(db), "--out", str(tmp_path / "r2.pt"),
                 "--criterion", "Which is nearer 90°?"]) == 0
    model = load_reward_model(tmp_path / "r2.pt")
    assert model.metrics["criterion"] == "Which is nearer 90°?" and model.metrics["pairs"] == 30
    mtime = rm.stat().st_mtime_ns   # a model a run may be using is never replaced
    assert main(["reward", "train", "--db", str(db), "--out", str(rm)]) == 2
    assert "already exists" in capsys.readouterr().err and rm.stat().st_mtime_ns == mtime
    out = tmp_path / "ft"
    assert main(["train", "--resume", str(ckpt), "--rule", "reinforce", "--steps", "40",
                 "--set", "reinforce.reward=preference", "--set",
                 f"reinforce.reward_model={rm}", "--out", str(out)]) == 0
    state = load_checkpoint(out / "step_40.safetensors")
    assert state["config"]["reinforce"]["reward"] == "preference"
    assert main(["train", "--data", "ring8", "--steps", "5", "--rule", "reinforce", "--set",
                 "reinforce.reward=preference", "--out", str(tmp_path / "x")]) == 2
    assert "reinforce.reward_model = '' is not a file" in capsys.readouterr().err
    # a reward model of other data: one line at the start, not an internal error
    digits_rm = tmp_path / "digits.pt"
    data = load_by_name("mnist5k")
    x = data.x[:40]
    train_reward_model(x[:20], x[20:], torch.ones(20), data, features="pixels",
                       max_epochs=3).save(digits_rm)
    assert main(["train", "--data", "ring8", "--steps", "5", "--rule", "reinforce", "--set",
                 "reinforce.reward=preference", "--set", f"reinforce.reward_model={digits_rm}",
                 "--out", str(tmp_path / "y")]) == 2
    assert "was trained on mnist5k samples, but this run is on ring8" in \
        capsys.readouterr().err


def test_an_oracle_simulation_of_digit_images_stores_uint8_pixels(tmp_path):
    trainer = Trainer(TrainConfig(g_hidden=(16,), d_hidden=(16,), batch_size=8, eval_every=0))
    trainer.step()
    store = PreferenceStore(tmp_path / "p.sqlite")
    data = load_by_name("mnist5k")
    assert simulate(store, trainer.nets.G, data, make_oracle("thick", data), n=5,
                    noise=0.1) == 5
    (j, *_) = store.judgements()
    assert j.samples.dtype.name == "uint8" and j.samples.shape == (2, 28, 28)
    assert j.choice in ("left", "right") and j.judge == "oracle:thick"


# -- the Feedback page (AppTest) -------------------------------------------------------------
@pytest.fixture
def feedback_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.chdir(ROOT)
    trainer = Trainer(TrainConfig(g_hidden=(16,), d_hidden=(16,), batch_size=8, eval_every=0))
    trainer.step()
    trainer.save_checkpoint(tmp_path / "digits" / "step_1.pt")
    from ui.feedback_view import _stores
    _stores().clear()
    yield tmp_path
    for s in _stores().values():
        s.close()
    _stores().clear()


def feedback_page():
    from streamlit.testing.v1 import AppTest
    return AppTest.from_file(str(ROOT / "views" / "feedback.py"), default_timeout=60).run()


def test_feedback_page_judge_ten_undo_one_reload_shows_nine(feedback_env):
    at = feedback_page()
    assert not at.exception, at.exception
    assert [type(e).__name__ for e in at.main].count("Image") == 2   # left and right
    for i in range(10):
        shown = [im.proto.imgs[0].url for im in at.get("imgs")]
        at.button(key="fb_left" if i % 2 else "fb_right").click().run()
        assert not at.exception
    at.button(key="fb_undo").click().run()
    # the undone pair is back on the screen, to judge again
    assert [im.proto.imgs[0].url for im in at.get("imgs")] == shown
    again = feedback_page()      # a reload: a new session, the same database
    assert "person: 9 pairs" in again.get("progress")[0].proto.text
    store = PreferenceStore(feedback_env / "preferences.sqlite")
    assert store.count(judge="person") == 9
    choices = [j.choice for j in store.judgements()]
    assert choices == ["right", "left"] * 4 + ["right"]
    store.close()


def test_feedback_page_stores_the_round_a_person_judges_in(feedback_env):
    at = feedback_page()
    at.button(key="fb_left").click().run()
    at.number_input(key="fb_round").set_value(2).run()
    at.button(key="fb_right").click().run()
    store = PreferenceStore(feedback_env / "preferences.sqlite")
    assert [(j.choice, j.round) for j in store.judgements()] == [("left", 0), ("right", 2)]
    store.close()


def test_feedback_page_best_of_four_gives_three_pairs(feedback_env):
    at = feedback_page()
    at.radio(key="fb_mode").set_value("Best of 4").run()
    at.button(key="fb_best2").click().run()
    assert not at.exception
    store = PreferenceStore(feedback_env / "preferences.sqlite")
    (j,) = store.judgements()
    assert j.choice == "best:2" and len(j.pairs()) == 3
    store.close()
    at.button(key="fb_skip").click().run()
    assert "person: 3 pairs of mnist5k judged of a suggested 200, 1 skipped" in \
        at.get("progress")[0].proto.text   # a click counts as its pairs; skips apart


def train_on_page(at, jobs) -> None:
    """Click Train reward model and wait for the background job."""
    import time

    at.button(key="fb_train").click().run()
    job = jobs()[at.text_input(key="fb_db").value]
    end = time.monotonic() + 60
    while job.state == "running" and time.monotonic() < end:
        time.sleep(0.1)
    assert job.state == "done", job.message
    at.run()


def test_feedback_to_reward_model_to_fine_tune_comparison(feedback_env):
    """The whole flow, an oracle standing in for the person: judgements -> Train reward
    model (background) -> Fine-tune with these preferences -> an arena of bce,
    reinforce, rlhf and latent from the judged generator; then a second round: judge the
    rlhf arm (some pairs set against its start), train on both rounds, Continue this
    fine-tune: the arena goes on with the new reward model."""
    from ui.compare_view import registry as arenas
    from ui.feedback_view import arm_label, jobs, new_comparison, sources

    trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, batch_size=64, eval_every=0))
    for _ in range(20):
        trainer.step()
    trainer.save_checkpoint(feedback_env / "ring" / "step_20.pt")
    data = load_by_name("ring8")
    store = PreferenceStore(feedback_env / "preferences.sqlite")
    simulate(store, trainer.nets.G, data, make_oracle("upper", data), n=40, noise=0.1)
    arenas().clear()
    jobs().clear()
    at = feedback_page()
    at.selectbox(key="fb_source").set_value("file ring/step_20.pt").run()
    train_on_page(at, jobs)
    # 40 pairs: saved, with a warning instead of a green success
    assert "Saved" in at.warning[0].value and "too few pairs; judge about 60 more" in \
        at.warning[0].value and not at.success
    at.button(key="fb_finetune").click().run()
    (arena,) = arenas().runs()
    try:
        assert list(arena.arms) == ["bce", "reinforce", "rlhf", "latent"]
        assert arena.fork_step == 20
        first = arena.arms["rlhf"].cfg.rlhf.reward_model
        assert arena.arms["latent"].cfg.latent.reward_model == first
        # a new file per data set and time: no save replaces a model a run uses
        assert Path(first).name.startswith("ring8-")

        arena.stop()
        label = arm_label(arena.run_id, "rlhf")
        source = sources()[label]()
        assert source.arena is arena and source.base is not None
        kinds = {"/" in new_comparison(source, 2, None, round_=1)["fingerprint"]
                 for _ in range(40)}
        assert kinds == {True, False}   # own pairs, and pairs against its start
        assert all("/" not in new_comparison(source, 2, None)["fingerprint"]
                   for _ in range(10))   # round 0: its own samples only
        at.run()   # the arena's arms are generators to judge now
        at.selectbox(key="fb_source").set_value(label)
        at.number_input(key="fb_round").set_value(1).run()
        at.button(key="fb_left").click().run()
        simulate(store, source.G, data, make_oracle("upper", data), n=30, noise=0.1, seed=1)
        at.text_input(key="fb_out_ring8").set_value(str(feedback_env / "round1.pt"))
        train_on_page(at, jobs)
        assert [j.round for j in store.judgements()][40] == 1
        step, end = arena.step_count, arena.end_step
        at.button(key="fb_continue").click().run()
        assert not at.exception, at.exception
        for arm in ("rlhf", "latent"):
            assert arena.arms[arm].cfg.options().reward_model == str(feedback_env / "round1.pt")
            assert "reward model: round1.pt" in arena.arms[arm].log.events[-1][1]
        assert arena.arms["bce"].cfg.rule == "bce" and arena.end_step == step + 10_000 > end
        assert arena.status.state == "running"
    finally:
        store.close()
        arenas().clear()
        jobs().clear()


def test_blind_win_rate_is_a_half_against_itself_and_high_for_a_better_generator():
    from core.feedback.loop import blind_win_rate

    data = load_by_name("ring8")
    oracle = make_oracle("upper", data)
    G = Trainer(TrainConfig(data="ring8", latent_dim=2, eval_every=0)).nets.G
    assert 0.4 < blind_win_rate(G, G, oracle, n=2000) < 0.6
    shifted = Trainer(TrainConfig(data="ring8", latent_dim=2, eval_every=0)).nets.G
    with torch.no_grad():
        shifted.layers[-1].bias[1] += 3.0    # every sample moved up
    assert blind_win_rate(shifted, G, oracle, n=500) > 0.95


def test_a_reward_model_no_better_than_chance_is_a_warning_with_judge_more():
    from core.feedback.reward_model import train_reward_model, verdict

    data = load_by_name("ring8")
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(len(data.x), (600,), generator=gen)
    coin = (torch.rand(300, generator=gen) > 0.5).float()      # labels that mean nothing
    model = train_reward_model(data.x[idx[:300]], data.x[idx[300:]], coin, data)
    lo, hi = model.metrics["held_out_acc_ci"]
    assert lo < 0.5 < hi and 0.3 < model.metrics["held_out_acc"] < 0.7
    good, text = verdict(model.metrics)
    assert not good and "not clearly better than chance; judge about 150 more" in text
    upper = make_oracle("upper", data)
    a, b = data.x[idx[:300]], data.x[idx[300:]]
    good, text = verdict(train_reward_model(a, b, upper.prob_left(a, b, 0.0), data).metrics)
    assert good and "95% interval" in text


def test_feedback_rounds_judge_the_fine_tuned_samples_and_keep_each_round(tmp_path, capsys):
    """rlhf-rounds on ring8 with the latent rule: every round's pairs are stored with
    their round (later rounds also against the base), each round's reward model is a new
    file fit on every round so far, and the fine-tune goes on where it stopped."""
    trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, batch_size=64, eval_every=0))
    for _ in range(30):
        trainer.step()
    ckpt = trainer.save_checkpoint(tmp_path / "g.safetensors")
    out = tmp_path / "rounds"
    assert main(["rlhf-rounds", "--from", str(ckpt), "--oracle", "upper", "--rounds", "3",
                 "--pairs-per-round", "40", "--steps-per-round", "15", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("pairs judged, reward model") == 3
    store = PreferenceStore(out / "preferences.sqlite")
    rows = store.judgements()
    store.close()
    assert [sum(j.round == r for j in rows) for r in range(3)] == [40, 40, 40]
    base = rows[0].generator
    assert all(j.generator == base for j in rows if j.round == 0)
    later = [j.generator for j in rows if j.round == 2]
    assert sum("/" in g for g in later) == 20 and all(g.endswith("/" + base) for g in later
                                                       if "/" in g)
    assert sorted(p.name for p in out.glob("rm-round*.pt")) == [f"rm-round{r}.pt" for r in range(3)]
    final = load_checkpoint(out / "round2.safetensors")
    assert final["step"] == 30 + 3 * 15 and final["rule"] == "latent"
    assert final["config"]["latent"]["reward_model"].endswith("rm-round2.pt")
    # the fine-tune went on: its map is one map trained for 45 steps, not restarted
    assert float(final["rule_state"]["t"][0]) == 45
    assert main(["rlhf-rounds", "--from", str(ckpt), "--oracle", "upper", "--rounds", "1",
                 "--pairs-per-round", "40", "--steps-per-round", "5", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_reward_model_path_that_is_not_a_regular_file_is_one_line_not_a_hang(tmp_path):
    import os

    from core.feedback.reward_model import RewardModelError, load_reward_model

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)   # opening it for reading would wait for a writer forever
    for path in (fifo, "/dev/zero", tmp_path):
        with pytest.raises(RewardModelError, match="cannot read it"):
            load_reward_model(path)
    big = tmp_path / "big.pt"
    with open(big, "wb") as fh:
        fh.truncate(65 * 2**20)   # sparse: no disk, but larger than a reward model can be
    with pytest.raises(RewardModelError, match="more than a reward model can be"):
        load_reward_model(big)


def test_the_feedback_page_names_damaged_rows_and_keeps_the_good_ones(feedback_env):
    import sqlite3

    at = feedback_page()
    for _ in range(3):
        at.button(key="fb_left").click().run()
    con = sqlite3.connect(feedback_env / "preferences.sqlite")
    con.execute("UPDATE judgements SET choice = 'sideways' WHERE id = 2")
    con.commit()
    con.close()
    at = feedback_page()   # checked once per session: a reload after the damage
    assert not at.exception
    (warning,) = [w.value for w in at.warning if "damaged" in w.value]
    assert "1 damaged row skipped: row 2" in warning
    assert "person: 2 pairs" in at.get("progress")[0].proto.text   # the good ones count


def test_the_criterion_is_typed_shown_stored_and_counted_apart(feedback_env):
    at = feedback_page()
    at.selectbox(key="fb_criterion_mnist5k").set_value("Which has thicker strokes?").run()
    assert any("Which has thicker strokes?" in m.value for m in at.markdown)
    at.button(key="fb_left").click().run()
    at.selectbox(key="fb_criterion_mnist5k").set_value("Which looks more like a 7?").run()
    at.button(key="fb_right").click().run()
    at.button(key="fb_left").click().run()
    assert "person: 2 pairs" in at.get("progress")[0].proto.text   # this criterion's
    store = PreferenceStore(feedback_env / "preferences.sqlite")
    assert [j.criterion for j in store.judgements()] == [
        "Which has thicker strokes?"] + ["Which looks more like a 7?"] * 2
    assert store.criteria("mnist5k") == {"Which looks more like a 7?": 2,
                                         "Which has thicker strokes?": 1}
    store.close()


def test_some_pairs_come_back_swapped_and_the_quality_panel_counts_them(feedback_env,
                                                                          monkeypatch):
    import ui.feedback_view as fv

    monkeypatch.setattr(fv, "REPEAT_SHARE", 0.5)
    monkeypatch.setattr(fv, "REPEAT_AFTER", 3)
    np.random.seed(0)   # which clicks are repeats (SQLite picks the pair)
    at = feedback_page()
    for _ in range(30):
        at.button(key="fb_left").click().run()
    at.toggle(key="fb_quality").set_value(True).run()
    (table,) = at.dataframe
    row = table.value.iloc[0]
    assert row["judge"] == "person" and row["judgements"] == 30 and row["repeats"] >= 5
    # 'left' each time: a swapped repeat names the other sample, so self-agreement is low
    assert int(row["self-agreement"].rstrip("%")) < 100, row   # swapped: not all agree


def test_switching_to_a_generator_of_another_data_set_does_not_carry_the_criterion(
        feedback_env):
    trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, batch_size=8, eval_every=0))
    trainer.step()
    trainer.save_checkpoint(feedback_env / "ring" / "step_1.pt")
    store = PreferenceStore(feedback_env / "preferences.sqlite")
    simulate(store, trainer.nets.G, load_by_name("ring8"), make_oracle("upper", load_by_name(
        "ring8")), n=12, noise=0.1)
    store.close()
    at = feedback_page()
    at.selectbox(key="fb_source").set_value("file ring/step_1.pt").run()
    assert at.selectbox(key="fb_criterion_ring8").value == "upper"   # judged before
    at.selectbox(key="fb_source").set_value("file digits/step_1.pt").run()
    assert at.selectbox(key="fb_criterion_mnist5k").value == "Which sample is better?"
    at.button(key="fb_left").click().run()
    store = PreferenceStore(feedback_env / "preferences.sqlite")
    assert store.criteria("mnist5k") == {"Which sample is better?": 1}
    store.close()
