"""Rough edges a new user hit (issue 22, item 8), one test per fix: the Compare
page's warm-up charts, rule switches, one step count, the seed jobs' progress, legends,
labels and final samples, the Checkpoints actions row, the first page's guide, the
classes-covered help, and the runs panel's counts. AppTest or plain functions; the
browser-only parts (the fork redraw, the 800 px row, the panel's refresh) are in
tests/test_e2e_new_user.py.
"""
from __future__ import annotations

import io
import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_app import ROOT, TIMEOUT, app_env, new_app, tiny_trainer  # noqa: F401

from core.engine.arena import Arena
from core.engine.config import preset


def compare_page(**params) -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / "compare.py"), default_timeout=TIMEOUT)
    at.query_params.update(params)
    return at.run()


def warming_arena(steps: int = 30, warmup: int = 20, done: int = 8) -> Arena:
    """An arena in its bce warm-up, stepped here (no thread): `done` warm-up steps."""
    from ui.compare_view import registry
    arena = Arena(preset("recommended", data="ring8", steps=steps, sample_every=5),
                  ["bce", "reinforce"], warmup_steps=warmup)
    arena.take_snapshot()
    for _ in range(done):
        arena.step()
    registry().add(arena)
    return arena


def chart_ids(at: AppTest) -> list[str]:
    return [c.proto.id for c in [*at.get("plotly_chart"), *at.get("bidi_component")]]


# -- a. the warm-up's metrics are charted while it trains -----------------------------------
def test_the_warm_up_is_charted_while_it_trains(app_env):  # noqa: F811
    arena = warming_arena()
    at = compare_page(arena=arena.run_id)
    assert not at.exception, at.exception
    assert arena.warming_up
    assert any(i.endswith("cmp_chart_d_loss") for i in chart_ids(at)), chart_ids(at)
    chart = next(json.loads(c.proto.json) for c in at.get("bidi_component")
                 if c.proto.id.endswith("cmp_chart_d_loss"))
    assert "warm-up (bce)" in json.dumps(chart), "the warm-up's grey line"
    assert not any("Charts appear after the first steps" in c.value for c in at.caption)
    # and the warm-up's samples, the generator every arm will start from (ring8: a picture)
    assert any(i.endswith("cmp_toy_warmup") for i in chart_ids(at)), chart_ids(at)
    assert not any("No samples yet" in c.value for c in at.caption)


# -- b. the arms' rule switches: off in the warm-up, on after the fork -----------------------
def test_rule_switches_are_enabled_after_the_fork(app_env):  # noqa: F811
    arena = warming_arena(warmup=4, done=2)
    arena._state = "paused"   # live, as a paused comparison is
    at = compare_page(arena=arena.run_id)
    keys = [f"cmp_rule_{arena.run_id}_{n}" for n in arena.arms]
    assert all(at.sidebar.selectbox(key=k).disabled for k in keys)   # no arms yet
    for _ in range(3):
        arena.step()
    assert not arena.warming_up
    at.run()
    assert not at.exception, at.exception
    assert not any(at.sidebar.selectbox(key=k).disabled for k in keys)
    at.sidebar.selectbox(key=keys[0]).set_value("reinforce").run()
    assert arena.arms["bce"].cfg.rule == "reinforce"


# -- c. one budget, one count: compared steps per arm --------------------------------------
def test_the_budget_and_the_progress_count_compared_steps_per_arm(app_env):  # noqa: F811
    arena = warming_arena(steps=6, warmup=5, done=2)
    at = compare_page(arena=arena.run_id)
    (bar,) = at.get("progress")
    assert bar.proto.text == "bce warm-up: 2 / 5 steps, then 6 compared steps per arm"
    arena.run_here()   # to the budget, in this thread
    assert arena.status.state == "finished"
    message = arena.status.message
    assert "6 compared steps per arm" in message and "fork at step 5" in message
    assert "(11 steps)" not in message, "the old message counted the warm-up in"
    at.run()
    assert not at.exception, at.exception
    (bar,) = at.get("progress")
    assert bar.proto.text == "6 / 6 compared steps per arm (after the fork at step 5)"
    shown = " ".join(c.value for c in at.caption)
    assert "reached the step budget: 6 compared steps per arm" in shown


# -- d. seed jobs: progress inside a seed, legends, labels, final samples -------------------
def test_a_worker_reports_its_step_and_the_job_reads_it(tmp_path):
    from core.jobs.arena_task import read_progress, run_arena
    from core.jobs.seed_job import SeedJob

    arena = Arena(preset("recommended", data="ring8", steps=3), ["bce", "reinforce"],
                  warmup_steps=2)
    path = tmp_path / "p.txt"
    run_arena(arena, log_every=1e9, quiet=True, progress_file=str(path))
    step, warmup, steps = read_progress(str(path))
    assert (warmup, steps) == (2, 3) and 1 <= step <= 5   # written at most every 0.5 s
    assert read_progress(str(tmp_path / "missing.txt")) is None
    (tmp_path / "bad.txt").write_text("half")
    assert read_progress(str(tmp_path / "bad.txt")) is None

    job = SeedJob(preset("recommended", data="ring8", steps=3), ["bce", "reinforce"],
                  [0, 1, 2], run_id="seeds-progress-test")
    assert job.seed_progress() == {}   # not started
    job._progress_dir = str(tmp_path)
    (tmp_path / "seed_1.txt").write_text("4 2 3")
    (tmp_path / "seed_2.txt").write_text("1 2 3")
    job.results[2] = object()           # finished: no longer "inside"
    assert job.seed_progress() == {1: (4, 2, 3)}


def test_seed_steps_read_in_the_pages_one_count():
    from ui.seeds_view import seed_fraction, seed_steps_text

    assert seed_steps_text(40, 100, 300) == "bce warm-up 40 / 100 steps"
    assert seed_steps_text(250, 100, 300) == "150 / 300 compared steps per arm"
    assert seed_fraction(200, 100, 300) == 0.5 and seed_fraction(0, 0, 0) == 0.0


def test_every_mark_on_a_seed_chart_has_a_legend_entry():
    from ui.seed_charts import seed_figure

    frame = lambda k: pd.DataFrame({"step": [0, 10, 20], "q_modes": [1.0, 2.0 + k, 3.0]})  # noqa: E731
    fig = seed_figure({"bce": {0: frame(0), 1: frame(1)},
                       "reinforce": {0: frame(2), 1: frame(0)}}, "q_modes")
    shown = [t.name for t in fig.data if t.showlegend is not False]
    assert shown == ["bce: each seed (thin)", "bce: ± 1 s.e. band", "bce: mean of 2 seeds",
                     "reinforce: each seed (thin)", "reinforce: ± 1 s.e. band",
                     "reinforce: mean of 2 seeds"]
    for t in fig.data:   # a hidden entry is only a repeat of a shown one (the same group)
        assert t.showlegend is not False or t.name in shown
    assert fig.layout.title.text == "modes covered ↑"


def _png() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), "white").save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def seed_jobs(monkeypatch):
    monkeypatch.chdir(ROOT)
    from ui.seeds_view import registry
    registry().clear()
    yield registry()
    registry().clear()


def test_a_seed_job_shows_steps_inside_seeds_labels_and_final_samples(seed_jobs, tmp_path):
    from core.jobs.seed_job import SeedJob, SeedResult

    job = SeedJob(preset("recommended", data="ring8", steps=300), ["bce", "reinforce"],
                  [0, 1, 2], run_id="seeds-ring8-edges", warmup_steps=100)
    frame = pd.DataFrame({"step": np.arange(0, 400, 100), "d_loss": [1.3, 1.2, 1.2, 1.1],
                          "q_modes": [2.0, 4.0, 6.0, 8.0]})
    finals = {"d_loss": 1.1, "q_modes": 8.0}
    job.results[0] = SeedResult(0, {"bce": frame, "reinforce": frame},
                                {"bce": finals, "reinforce": finals}, 1.0, "here", 1, "",
                                _png())
    job._state, job.started_at = "running", time.monotonic()   # seed 0 done, 1 training
    job._progress_dir = str(tmp_path)
    (tmp_path / "seed_1.txt").write_text("250 100 300")
    seed_jobs.add(job)
    at = compare_page(seeds=job.run_id)
    assert not at.exception, at.exception
    texts = [p.proto.text for p in at.get("progress")]
    assert texts[0].startswith("1 / 3 seeds done")
    assert at.get("progress")[0].proto.value == pytest.approx(100 * (1 + 0.625) / 3, abs=1)
    assert "Seed 1: 150 / 300 compared steps per arm" in texts
    head = next(m.value for m in at.markdown if "job `seeds-ring8-edges`" in m.value)
    assert "3 seeds × 300 compared steps per arm after a 100-step bce warm-up" in head
    summary = next(d.value for d in at.dataframe if "arm" in d.value.columns)
    assert "modes covered ↑" in summary.columns and "D loss" in summary.columns
    assert not any(str(c).startswith("q_") for c in summary.columns), summary.columns
    assert at.selectbox(key="cmp_seeds_png_seed").options == ["0"]
    (image,) = at.get("image") or at.get("imgs")
    assert image.proto.imgs[0].caption.startswith("Seed 0: each arm")
    assert any("Grey: real points" in c.value for c in at.caption)
    job._state = "finished"


# -- e. the Checkpoints page: one action row ------------------------------------------------
def test_a_files_actions_share_one_row(app_env):  # noqa: F811
    from ui.checkpoints import save_now

    save_now(tiny_trainer())
    at = AppTest.from_file(str(ROOT / "views" / "checkpoints.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    (row,) = [b for b in at.main.children.values() if getattr(b, "key", None) == "file_actions"]
    assert [w.key for w in row.children.values()] == [
        "file_resume", "file_rule", "file_finetune", "file_samples", "dl_file"]


# -- f. the first page says what the pages are for ------------------------------------------
def test_the_first_page_says_what_compare_and_feedback_are_for(app_env):  # noqa: F811
    at = new_app()
    text = " ".join(m.value for m in at.markdown)
    assert "**Compare** trains two or three update rules side by side" in text
    assert "**Feedback** is where people pick the better of two" in text
    assert "A fine-tune needs a trained generator first" in text


# -- g. classes covered: of 10, and how a class counts --------------------------------------
def test_classes_covered_says_of_10_and_how_a_class_counts():
    from core.engine.metric_info import METRICS
    from core.quality import metrics
    from core.quality.evaluate import EVAL_SAMPLES

    entry = METRICS.entry("q_classes")
    assert entry.title == "classes covered (of 10)"
    assert "at least 20% of an even share of the evaluated samples" in entry.help
    assert "confidence >= 0.9" in entry.help
    # the words' numbers are the definition's: 20% of 2,500 / 10 = 50 confident samples
    share = metrics.COVER_SHARE * EVAL_SAMPLES / 10
    assert f"{share:.0f} of the {EVAL_SAMPLES:,} drawn" in entry.help
    probs = torch.full((EVAL_SAMPLES, 10), 0.0)
    probs[:, 0] = 1.0                     # everything confidently class 0 ...
    probs[:50, :] = 0.0
    probs[:50, 1] = 1.0                   # ... but 50 confidently class 1: counts
    probs[50:99, :] = 0.0
    probs[50:99, 2] = 1.0                 # 49 of class 2: does not
    probs[99:200, :] = 0.1                # unsure (max 0.1): never counts
    assert metrics.class_scores(probs)["q_classes"] == 2.0


# -- h. the runs panel: a paused run is not counted as running -----------------------------
def test_the_runs_panel_counts_paused_apart_from_running(app_env):  # noqa: F811
    from ui.runs import registry
    from ui.runs_panel import counts, entries

    trainer = registry().add(tiny_trainer())
    trainer._state = "paused"
    at = new_app()
    assert not at.exception, at.exception
    label = at.expander[0].label
    assert label.endswith(": 1 (1 paused)"), label
    assert "running" not in label
    trainer._state = "running"
    assert counts(entries()) == " (1 running)"
    trainer._state = "stopped"
    assert counts(entries()) == ""
