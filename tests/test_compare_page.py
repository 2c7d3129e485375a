"""AppTest of the Compare page (in-process, no browser).

The arena registry is process-wide (cache_resource) and shared by tests: every test
stops and clears it. Fragments with run_every are not auto-run: tests call run().
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60


@pytest.fixture
def arenas(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.chdir(ROOT)
    from ui.compare_view import registry
    registry().clear()
    yield registry()
    registry().clear()


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / "compare.py"), default_timeout=TIMEOUT).run()


def wait_for(predicate, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_renders_with_bce_vs_reinforce_by_default(arenas):
    at = page()
    assert not at.exception
    assert at.sidebar.selectbox(key="cmp_arm1").value == "bce"
    assert at.sidebar.selectbox(key="cmp_arm2").value == "reinforce"
    assert at.button(key="cmp_start").disabled is False
    assert at.button(key="cmp_warm")


def test_start_shows_both_arms_then_stop(arenas):
    at = page()
    at.sidebar.number_input(key="cmp_steps").set_value(400)
    at.sidebar.number_input(key="cmp_sample_every").set_value(20)
    at.button(key="cmp_start").click().run()
    assert not at.exception
    (arena,) = arenas.runs()
    assert list(arena.arms) == ["bce", "reinforce"]
    wait_for(lambda: arena.step_count >= 40)
    at.run()
    assert not at.exception
    text = " ".join(c.value for c in at.caption)
    assert "identical" in text and "DIFFERENT" not in text
    keys = [c.proto.id for c in [*at.get("plotly_chart"), *at.get("bidi_component")]]
    assert any("cmp_chart_d_loss" in k for k in keys)
    assert any("cmp_toy_bce" in k for k in keys) and any("cmp_toy_reinforce" in k for k in keys)
    table = at.dataframe[0].value
    assert list(table.columns) == ["metric", "bce", "reinforce"]
    assert not table.isna().any().any(), "a metric an arm does not log reads '—'"
    # browse the history: untick "Follow latest", pick the first snapshot for every arm
    at.checkbox(key=f"cmp_follow_{arena.run_id}").uncheck().run()
    slider = at.select_slider(key=f"cmp_snap_{arena.run_id}")
    slider.set_value(0).run()
    assert not at.exception
    toy = next(c for c in at.get("bidi_component") if c.proto.id.endswith("cmp_toy_bce"))
    sent = json.loads(toy.proto.json)
    assert sent["title"] == "bce · step 0" and sent["snapshot"]["points"]
    at.button(key="cmp_stop").click().run()
    assert arena.status.state in ("stopped", "finished")
    assert not arena.thread_alive


def test_rule_switch_and_save(arenas, tmp_path):
    at = page()
    at.sidebar.number_input(key="cmp_steps").set_value(0)
    at.button(key="cmp_start").click().run()
    (arena,) = arenas.runs()
    wait_for(lambda: arena.step_count >= 5)
    at.button(key="cmp_pause").click().run()
    wait_for(lambda: arena.status.state == "paused")
    at.run()
    at.sidebar.selectbox(key=f"cmp_rule_{arena.run_id}_bce").set_value("reinforce").run()
    assert arena.arms["bce"].cfg.rule == "reinforce"
    assert any("rule: bce -> reinforce" in t for _, t in arena.arms["bce"].log.events)
    at.button(key="cmp_save").click().run()
    assert not at.exception
    saved = list((tmp_path / "checkpoints").rglob("*.safetensors"))
    assert len(saved) == 1
    at.button(key="cmp_reset").click().run()
    assert not arena.thread_alive
    assert at.button(key="cmp_start")


def test_reinforce_options_reach_every_arm(arenas):
    # the same REINFORCE inputs as the Train form (K too), shared by every arm
    at = page()
    at.sidebar.number_input(key="cmp_reinforce_samples_per_z").set_value(1).run()
    assert any("reinforce.samples_per_z" in e.value for e in at.error)
    assert at.button(key="cmp_start").disabled
    at.sidebar.number_input(key="cmp_reinforce_samples_per_z").set_value(6)
    at.sidebar.number_input(key="cmp_reinforce_sigma_start").set_value(0.2)
    at.sidebar.number_input(key="cmp_reinforce_sigma_end").set_value(0.05).run()
    at.button(key="cmp_start").click().run()
    assert not at.exception
    (arena,) = arenas.runs()
    arena.stop()
    for arm in arena.arms.values():
        opts = arm.cfg.reinforce
        assert (opts.samples_per_z, opts.sigma_start, opts.sigma_end) == (6, 0.2, 0.05)


def test_a_diverged_arena_offers_resume_and_step(arenas):
    import torch

    at = page()
    at.sidebar.number_input(key="cmp_steps").set_value(0)
    at.button(key="cmp_start").click().run()
    (arena,) = arenas.runs()
    wait_for(lambda: arena.step_count >= 3)
    assert at.button(key="cmp_pause").proto.label == "Pause"
    with arena.lock:   # poisoned data: the next step's D loss is NaN
        arena.stream.x = torch.full_like(arena.stream.x, float("nan"))
    wait_for(lambda: arena.status.state == "diverged")
    at.run()
    assert not at.exception
    assert "diverged at step" in at.warning[0].value
    assert not at.button(key="cmp_resume").disabled
    assert not at.button(key="cmp_step").disabled
    assert not any(b.key == "cmp_pause" for b in at.button)
    text = " ".join(c.value for c in at.caption)
    assert "Same for every rule: G gradient clip off" in text
    assert "D trains on what G emitted" in text
    arena.stop()


def test_verdict_names_the_arm_that_leads_on_quality():
    from core.engine.arena import Arena
    from core.engine.config import preset
    from ui.compare_view import verdict

    arena = Arena(preset("recommended", data="ring8", eval_every=10), ["bce", "reinforce"])
    assert verdict(arena) is None                  # no evaluation yet
    for _ in range(10):
        arena.step_once()
    text = verdict(arena)
    assert text and "at step 10" in text and "modes covered" in text and "leads" in text
    arena.stop()


def test_the_warm_up_follows_the_data_set_unless_typed(arenas):
    from core.jobs.multi_seed import DEFAULT_IMAGE_WARMUP

    at = page()
    assert at.selectbox(key="cmp_data").value == "ring8"
    assert at.number_input(key="cmp_warmup").value == 0       # 2-D: from the start
    at.selectbox(key="cmp_data").set_value("mnist5k").run()
    assert at.number_input(key="cmp_warmup").value == DEFAULT_IMAGE_WARMUP   # digits
    at.number_input(key="cmp_warmup").set_value(300).run()
    at.selectbox(key="cmp_data").set_value("grid25").run()
    assert at.number_input(key="cmp_warmup").value == 300     # typed: kept


def test_your_own_points_are_compared_like_ring8(arenas, tmp_path):
    """Compare offers the user's own 2-D points with the Train form's picker (here a CSV
    path on the server): nothing starts until the points are given, then the arms train
    on exactly those points."""
    import numpy as np

    at = page()
    at.sidebar.selectbox(key="cmp_data").set_value("points").run()
    assert not at.exception
    assert any("Draw at least" in m.value for m in at.info), [m.value for m in at.info]
    assert not arenas.runs()
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(c, 0.05, size=(100, 2)) for c in ((0, 0), (3, 1))])
    csv = tmp_path / "two_blobs.csv"
    np.savetxt(csv, pts, delimiter=",", header="x,y", comments="")
    at.sidebar.radio(key="cmp_points_source").set_value("path").run()
    at.sidebar.text_input(key="cmp_points_path").input(str(csv)).run()
    at.sidebar.number_input(key="cmp_steps").set_value(30)
    at.button(key="cmp_start").click().run()
    assert not at.exception, at.exception
    (arena,) = arenas.runs()
    assert arena.cfg.data == "points" and arena.cfg.data_root == str(csv)
    assert len(arena.data) == 200
    wait_for(lambda: arena.status.state == "finished")
