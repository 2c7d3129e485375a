"""AppTest tests of the dashboard pages (in-process, no browser).

AppTest runs the app in this process, so the cache_resource run registry is shared
between tests: every test stops and clears it (fixture `app_env`). Fragments with
run_every are not auto-run by AppTest: tests call at.run() again.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.engine.config import preset
from core.engine.trainer import Trainer
from core.io.checkpoint import to_bytes

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60   # seconds per script run: the CI machine is small and shared


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """Checkpoints in a temp folder; a clean registry before and after."""
    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.chdir(ROOT)
    from ui.compare_view import registry as arenas
    from ui.runs import registry
    registry().clear()
    arenas().clear()
    yield tmp_path / "checkpoints"
    registry().clear()
    arenas().clear()


def new_app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()


def registry():
    from ui.runs import registry as reg
    return reg()


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status_text(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "· step **" in m.value)


def chart_keys(at: AppTest) -> list[str]:
    """Keys of the Plotly charts and of the live metric charts (ui/live_chart.py)."""
    return [c.proto.id.split("-")[-1]
            for c in [*at.get("plotly_chart"), *at.get("bidi_component")]]


def live_chart(at: AppTest, key: str) -> dict:
    """What the live chart with this key was sent in the last script run."""
    return next(json.loads(c.proto.json) for c in at.get("bidi_component")
                if c.proto.id.endswith("-" + key))


def tiny_trainer(data: str = "ring8", steps: int = 5, **changes) -> Trainer:
    trainer = Trainer(preset("recommended", data=data, sample_every=2, **changes))
    trainer.take_snapshot()   # step 0, as start() does
    for _ in range(steps):
        trainer.step()
    return trainer


# -- every page renders ------------------------------------------------------------------
@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "views").glob("*.py")))
def test_every_page_renders(app_env, page):
    at = new_app()
    assert not at.exception
    at.switch_page(f"views/{page}").run()
    assert not at.exception, at.exception
    assert at.title, f"{page} has no title"


def test_train_page_guide_shows_until_dismissed(app_env):
    at = new_app()
    assert any(m.value == "#### What am I looking at?" for m in at.markdown)
    at.button(key="guide_dismiss").click().run()
    assert not any(m.value == "#### What am I looking at?" for m in at.markdown)
    at.switch_page("views/compare.py").run()
    at.switch_page("views/train.py").run()   # the session remembers the dismissal
    assert not any(b.key == "guide_dismiss" for b in at.button)


def test_train_page_defaults(app_env):
    at = new_app()
    assert at.title[0].value == "Train"
    assert at.selectbox(key="cfg_data").value == "mnist5k"
    assert set(at.selectbox(key="cfg_data").options) == {
        "mnist5k", "ring8", "grid25", "mnist", "fashion-mnist", "folder", "points"}
    assert not at.button(key="btn_start").disabled


# -- validation messages from core, next to the form --------------------------------------
@pytest.mark.parametrize("key,value,field", [
    ("cfg_g_lr", 0.0, "g_opt.lr"),
    ("cfg_batch", 1, "batch_size"),
    ("cfg_reinforce_samples_per_z", 1, "reinforce.samples_per_z"),
])
def test_validation_message_names_the_field(app_env, key, value, field):
    at = new_app()
    at.number_input(key=key).set_value(value).run()
    errors = [e.value for e in at.error]
    assert any(field in e for e in errors), errors
    assert at.button(key="btn_start").disabled


def test_folder_needs_a_path(app_env):
    at = new_app()
    at.selectbox(key="cfg_data").set_value("folder").run()
    assert any("data_root" in e.value for e in at.error)
    at.text_input(key="cfg_root").set_value("/no/such/folder").run()
    assert not at.error
    at.button(key="btn_start").click().run()   # core's DataError comes back as a message
    assert any("Could not start" in e.value for e in at.error)
    assert not registry().runs()


def test_preset_fills_learning_rates(app_env):
    at = new_app()
    at.selectbox(key="cfg_preset").set_value("source").run()
    assert at.number_input(key="cfg_g_lr").value == pytest.approx(2e-4)
    assert at.number_input(key="cfg_g_beta1").value == pytest.approx(0.9)


# -- Start / Pause / Step / Resume / Stop / Reset wiring ----------------------------------
def test_start_pause_step_resume_stop_reset(app_env):
    at = new_app()
    at.selectbox(key="cfg_data").set_value("ring8").run()
    at.number_input(key="cfg_steps").set_value(100000).run()
    at.button(key="btn_start").click().run()
    assert not at.exception
    # on a loaded machine the run's first steps may already be drawn by this script run
    drawn = (live_chart(at, "chart_d_loss")["sources"][0] if "chart_d_loss" in chart_keys(at)
             else None)
    run_id = at.query_params["run"]
    trainer = registry().get(run_id)
    assert trainer is not None and trainer.status.state == "running"
    wait_for(lambda: trainer.status.step > 20, what="steps")
    at.run()
    assert "**running**" in status_text(at)
    assert at.get("progress"), "a step budget shows a progress bar"
    assert "chart_d_loss" in chart_keys(at) and "chart_toy" in chart_keys(at)
    first = live_chart(at, "chart_d_loss")["sources"][0]
    if drawn is None:
        assert first["full"] and len(first["x"]) > 20, "the whole history on first draw"
    else:
        assert drawn["full"] and not first["full"], "the whole history on first draw, once"
    wait_for(lambda: trainer.status.step > first["x"][-1] + 5, what="steps")
    at.run()
    later = live_chart(at, "chart_d_loss")["sources"][0]
    assert not later["full"] and later["start"] == first["end"] - 1, "then only new rows"

    at.button(key="btn_pause").click().run()
    wait_for(lambda: trainer.status.state == "paused", what="pause")
    at.run()
    step = trainer.status.step
    assert "**paused**" in status_text(at)
    at.button(key="btn_step").click().run()
    assert trainer.status.step == step + 1

    at.button(key="btn_resume").click().run()
    wait_for(lambda: trainer.status.step > step + 5, what="resume")
    # Stop ends the run, so it sits in a popover behind a "Really stop" button
    assert "Stop" in [p.proto.popover.label for p in at.get("popover")]
    assert at.button(key="btn_stop").label == "Really stop"
    at.button(key="btn_stop").click().run()
    assert trainer.status.state == "stopped"
    at.run()
    assert "**stopped**" in status_text(at)
    assert at.button(key="btn_stop").disabled

    at.button(key="btn_reset").click().run()
    assert "run" not in at.query_params
    assert at.button(key="btn_start")


def test_reload_reattaches_by_run_id(app_env):
    trainer = registry().add(tiny_trainer())
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["run"] = trainer.run_id
    at.run()
    assert trainer.run_id in status_text(at)
    assert "step **5**" in status_text(at)


def test_unknown_run_id_is_explained(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["run"] = "run-that-does-not-exist"
    at.run()
    assert any("not running in this server" in w.value for w in at.warning)
    assert at.button(key="btn_start")


def test_rule_switch_on_a_live_run_marks_the_charts(app_env):
    at = new_app()
    at.selectbox(key="cfg_data").set_value("ring8").run()
    at.button(key="btn_start").click().run()
    trainer = registry().get(at.query_params["run"])
    wait_for(lambda: trainer.status.step > 5, what="steps")
    at.selectbox(key=f"live_rule_{trainer.run_id}").set_value("reinforce").run()
    assert trainer.cfg.rule == "reinforce"
    assert any("bce -> reinforce" in text for _, text in trainer.log.events)
    losses = live_chart(at, "chart_d_loss")   # the marker is sent once, when it is new
    assert any("bce -> reinforce" in text for _, text in losses["events"]["items"])
    wait_for(lambda: trainer.status.step > trainer.log.events[-1][0] + 60, what="steps")
    at.run()
    assert "events" not in live_chart(at, "chart_d_loss")   # unchanged: not re-sent
    assert "chart_grad_cosine" in chart_keys(at)
    trainer.stop()


def test_cap_on_running_runs(app_env):
    for _ in range(2):
        registry().start(Trainer(preset("recommended", data="ring8")))
    at = new_app()
    at.selectbox(key="cfg_data").set_value("ring8").run()
    at.button(key="btn_start").click().run()
    assert any("the limit is 2" in e.value for e in at.error)
    assert len(registry().runs()) == 2


def test_start_reads_the_form_at_click_time(app_env):
    # A value typed and Start clicked in the same script run: the run gets the value
    # (on_click args bound one run earlier would start with the old batch size).
    at = new_app()
    at.selectbox(key="cfg_data").set_value("ring8").run()
    at.number_input(key="cfg_batch").set_value(96)
    at.button(key="btn_start").click().run()
    (trainer,) = registry().runs()
    assert trainer.cfg.batch_size == 96 and trainer.cfg.data == "ring8"
    assert at.query_params["run"] == trainer.run_id and at.button(key="btn_pause")


def test_one_cap_for_runs_and_comparisons(app_env):
    from core.engine.arena import Arena
    from ui.compare_view import registry as arenas
    cfg = preset("recommended", data="ring8")
    run = Trainer(cfg)
    registry().start(run)
    arena = Arena(cfg, ["bce", "reinforce"])
    arenas().start(arena)
    at = new_app()
    at.selectbox(key="cfg_data").set_value("ring8").run()
    at.button(key="btn_start").click().run()
    (message,) = [e.value for e in at.error]
    assert "the limit is 2" in message and "pause or stop" in message
    assert f"`{run.run_id}` (Train page)" in message
    assert f"`{arena.run_id}` (Compare page)" in message
    assert registry().runs() == [run]
    # the same limit on the Compare page; pausing the run frees its slot there
    at.switch_page("views/compare.py").run()
    at.button(key="cmp_start").click().run()
    assert any("the limit is 2" in e.value for e in at.error)
    assert arenas().runs() == [arena]
    run.pause()
    at.button(key="cmp_start").click().run()
    assert len(arenas().running()) == 2 and not at.error
    # ... and a paused run cannot resume while both slots are taken
    at.switch_page("views/train.py")
    at.query_params["run"] = run.run_id
    at.run()
    at.button(key="btn_resume").click().run()
    assert any("the limit is 2" in e.value for e in at.error)
    assert run.status.state == "paused"


def test_samples_grid_and_downloads_for_images(app_env):
    trainer = registry().add(tiny_trainer("mnist5k", steps=4))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["run"] = trainer.run_id
    at.run()
    assert at.get("image")[0].proto.imgs[0].caption.endswith("at step 4"), "the grid is shown"
    assert not at.select_slider, "no slider while following the latest snapshot"
    at.checkbox(key=f"follow_{trainer.run_id}").uncheck().run()
    slider = at.select_slider(key=f"snap_{trainer.run_id}")
    assert slider.options == ["0", "2", "4"] and slider.value == 4
    slider.set_value(2).run()
    assert at.get("image")[0].proto.imgs[0].caption.endswith("at step 2"), \
        "the slider picks an older snapshot"
    labels = {d.label for d in at.get("download_button")}
    assert {"Metrics CSV", "Grid PNG", "Progression GIF"} <= labels


def test_quality_metrics_from_the_form_reach_the_quality_chart(app_env):
    at = new_app()
    at.selectbox(key="cfg_data").set_value("ring8").run()
    at.number_input(key="cfg_eval_every").set_value(20).run()
    at.button(key="btn_start").click().run()
    trainer = registry().get(at.query_params["run"])
    assert trainer.cfg.eval_every == 20
    wait_for(lambda: any(c.startswith("q_") for c in trainer.log.columns), what="q_ columns")
    trainer.pause()
    at.run()
    assert any(k.startswith("chart_q_") for k in chart_keys(at))


def test_quality_chart_group_for_q_columns(app_env):
    trainer = tiny_trainer(steps=4)
    trainer.log.set_at_step(4, {"q_modes": 3.0, "q_high_quality": 0.5})
    registry().add(trainer)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["run"] = trainer.run_id
    at.run()
    assert {"chart_q_modes", "chart_q_high_quality"} <= set(chart_keys(at))
    modes = live_chart(at, "chart_q_modes")
    assert modes["chart"]["title"].startswith("modes covered") and modes["chart"]["points"]
    assert modes["sources"][0]["ys"][0][-1] == 3.0
    judged = tiny_trainer(steps=4)
    judged.log.set_at_step(4, {"q_fd": 52.0, "q_fd_floor": 4.4, "q_accuracy": 97.7})
    at.query_params["run"] = registry().add(judged).run_id
    at.run()
    assert live_chart(at, "chart_q_fd")["chart"]["metrics"] == ["q_fd", "q_fd_floor"]
    assert "chart_q_accuracy" not in chart_keys(at)
    assert any("classifier accuracy: 97.7 %" in c.value for c in at.caption)
    cards = {m.label: m.value for m in at.metric}
    assert cards["classifier FD ↓"] == "52 (floor 4.4)", cards
    plain = registry().add(tiny_trainer(steps=3))
    at.query_params["run"] = plain.run_id
    at.run()
    assert not any(k.startswith("chart_q_") for k in chart_keys(at))


# -- Checkpoints page ---------------------------------------------------------------------
def checkpoints_page() -> AppTest:
    at = new_app()
    at.switch_page("views/checkpoints.py").run()
    assert not at.exception, at.exception
    return at


def test_checkpoint_table_and_save_now(app_env):
    trainer = registry().add(tiny_trainer(steps=7))
    at = checkpoints_page()
    assert any("No checkpoints" in c.value for c in at.caption)
    at.button(key=f"save_{trainer.run_id}").click().run()
    saved = app_env / trainer.run_id / "step_7.safetensors"
    assert saved.exists()
    table = at.dataframe[0].value
    row = table.iloc[0]
    assert (row["run"], row["step"], row["rule"], row["data"]) == (trainer.run_id, 7, "bce",
                                                                   "ring8")
    assert row["size (MB)"] > 0 and row["time"]
    names = {d.proto.id.split("-")[-1]: d for d in at.get("download_button")}
    assert "dl_file" in names


def test_upload_error_path_changes_nothing(app_env):
    trainer = registry().add(tiny_trainer(steps=3))
    trainer.save_checkpoint(app_env / trainer.run_id / "step_3.safetensors")
    at = checkpoints_page()
    before = at.dataframe[0].value.copy()
    at.file_uploader(key="upload").upload("junk.pt", b"this is not a checkpoint").run()
    assert any("not a checkpoint file" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert not at.exception
    assert len(registry().runs()) == 1
    assert at.dataframe[0].value.equals(before)
    # A PyTorch file that is not ours gets its own clear message.
    at.file_uploader(key="upload").set_value(None)
    import io
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, buf)
    at.file_uploader(key="upload").upload("foreign.pt", buf.getvalue()).run()
    assert any("not a GAN RL Lab checkpoint" in e.value for e in at.error)


def test_an_old_pt_checkpoint_is_listed_loaded_and_said_to_be_converted(app_env):
    from core.io.checkpoint import CONVERTED_NOTE, to_pt_bytes

    state = tiny_trainer(steps=5).state_dict()
    old = app_env / state["run_id"] / "step_5.pt"
    old.parent.mkdir(parents=True)
    old.write_bytes(to_pt_bytes(state))
    at = checkpoints_page()
    assert at.dataframe[0].value.iloc[0]["step"] == 5       # listed next to new files
    assert not at.error
    # picked from the saved files (the only one here), it gets the same note as an upload
    assert [i.value for i in at.info if CONVERTED_NOTE in i.value and "5.pt" in i.value]
    at.file_uploader(key="upload").upload("old.pt", old.read_bytes()).run()
    assert any("valid checkpoint" in s.value for s in at.success)
    assert [i.value for i in at.info if i.value.startswith(f"old.pt: {CONVERTED_NOTE}")], \
        [i.value for i in at.info]
    assert not at.exception


def test_upload_then_fine_tune_with_another_rule(app_env):
    state = tiny_trainer(steps=6).state_dict()
    at = checkpoints_page()
    at.file_uploader(key="upload").upload("good.safetensors", to_bytes(state)).run()
    assert any("valid checkpoint" in s.value for s in at.success)
    at.toggle(key="upload_samples").set_value(True).run()
    assert "upload_toy" in chart_keys(at)
    at.selectbox(key="upload_rule").set_value("reinforce").run()
    at.button(key="upload_finetune").click().run()
    assert not at.exception, at.exception
    (trainer,) = registry().runs()
    assert trainer.cfg.rule == "reinforce" and trainer.step_count >= 6
    assert any("bce -> reinforce" in text for _, text in trainer.log.events)
    assert at.query_params["run"] == trainer.run_id   # switched to the Train page
    assert at.title[0].value == "Train"


def test_recommended_preset_follows_the_data_set(app_env):
    at = new_app()
    at.selectbox(key="cfg_data").set_value("ring8").run()
    expected = preset("recommended", data="ring8")
    assert at.number_input(key="cfg_batch").value == expected.batch_size
    assert at.number_input(key="cfg_g_lr").value == pytest.approx(expected.g_opt.lr)


def test_arena_checkpoint_resumes_the_chosen_arm(app_env):
    from core.engine.arena import Arena
    arena = Arena(preset("recommended", data="ring8", sample_every=2), ["bce", "reinforce"])
    for _ in range(4):
        arena.step()
    path = arena.save_checkpoint(app_env / arena.run_id / "step_4.safetensors")
    at = checkpoints_page()
    # uploaded (e.g. the arena.safetensors of `python -m core compare`): pick an arm, see
    # its samples
    at.file_uploader(key="upload").upload("arena.safetensors", path.read_bytes()).run()
    at.selectbox(key="upload_arm").set_value("reinforce").run()
    at.toggle(key="upload_samples").set_value(True).run()
    assert "upload_toy" in chart_keys(at)
    # listed (saved on the Compare page): resume one arm as a single run
    arm = at.selectbox(key="file_arm")
    assert arm.options == ["bce (rule bce)", "reinforce (rule reinforce)"]
    arm.set_value("reinforce").run()
    assert at.selectbox(key="file_rule").options == ["bce", "rlhf", "latent"]   # the others
    at.button(key="file_resume").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (trainer,) = registry().runs()
    assert trainer.cfg.rule == "reinforce" and trainer.step_count >= 4
    assert (4, f"from {arena.run_id}-reinforce @ 4") in list(trainer.log.events)
    assert at.title[0].value == "Train"


def test_checkpoints_page_lists_and_saves_live_comparisons(app_env):
    from core.engine.arena import Arena
    from ui.compare_view import registry as arenas
    arena = Arena(preset("recommended", data="ring8", steps=0), ["bce", "reinforce"])
    arenas().start(arena)
    wait_for(lambda: arena.step_count >= 3, what="steps")
    arena.pause()
    at = checkpoints_page()
    card = at.get("markdown")
    assert any(f"`{arena.run_id}` · **paused**" in m.value and "bce vs reinforce" in m.value
               for m in card)
    at.button(key=f"save_{arena.run_id}").click().run()
    assert not at.exception
    (saved,) = (app_env / arena.run_id).glob("step_*.safetensors")
    # the saved-checkpoints table, at the row of the file just saved (other tables and
    # rows may list this arena too when other tests' runs are in this process)
    rows = [r for t in at.dataframe if {"file", "rule"} <= set(t.value.columns)
            for _, r in t.value.iterrows() if r["file"] == str(saved.relative_to(app_env))]
    assert [r["rule"] for r in rows] == ["bce,reinforce"], ("one file, every arm", rows)
    arena.stop()
    at.run()   # a finished comparison stays listed, to save it (or one arm) later
    assert any(f"`{arena.run_id}` · **stopped**" in m.value for m in at.get("markdown"))


# -- a run that failed or diverged ----------------------------------------------------------
def record_fragment_intervals(monkeypatch) -> list:
    """The run_every of every st.fragment the page defines, in order."""
    import streamlit as st
    seen, real = [], st.fragment

    def recording(func=None, *, run_every=None, **kwargs):
        seen.append(run_every)
        return real(func, run_every=run_every, **kwargs)

    monkeypatch.setattr(st, "fragment", recording)
    return seen


def train_page(run_id: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, at.exception
    return at


def test_failed_run_shows_the_error_and_what_to_do(app_env, monkeypatch):
    trainer = Trainer(preset("recommended", data="ring8"))

    def explode(t):
        if t.step_count == 3:
            raise ValueError("boom in a hook")

    trainer.on_step.append(explode)
    registry().start(trainer)
    wait_for(lambda: trainer.status.state == "failed", what="the crash")
    intervals = record_fragment_intervals(monkeypatch)
    at = train_page(trainer.run_id)
    (error,) = at.error
    assert "ValueError: boom in a hook" in error.value and "step 3" in error.value
    assert "Checkpoints" in error.value and "Reset" in error.value, "what the user can do"
    assert "**failed**" in status_text(at)
    # the runs panel is a fragment too (it refreshes while a job is live)
    assert intervals and set(intervals) == {None}, "no polling for a failed run"
    assert at.button(key="btn_resume").disabled and not at.button(key="btn_reset").disabled


def test_diverged_run_shows_the_message_and_what_to_do(app_env):
    trainer = tiny_trainer(steps=3)
    trainer.stream.x = torch.full_like(trainer.stream.x, float("nan"))   # poisoned data -> NaN D loss
    registry().start(trainer)
    wait_for(lambda: trainer.status.state == "diverged", what="divergence")
    at = train_page(trainer.run_id)
    (warning,) = at.warning
    assert "diverged at step 4" in warning.value and "not finite" in warning.value
    assert "fine-tune with lower learning rates" in warning.value and "resume" in warning.value
    assert not at.error and not at.button(key="btn_resume").disabled
    trainer.stop()


def test_a_finished_run_can_continue_and_be_saved(app_env):
    trainer = registry().add(tiny_trainer(steps=0))
    trainer.run.cfg = trainer.cfg.replace(steps=6)
    trainer.start()
    wait_for(lambda: trainer.status.state == "finished", what="the budget")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["run"] = trainer.run_id
    at.run()
    at.button(key="btn_save").click().run()
    assert not at.exception
    assert (app_env / trainer.run_id / "step_6.safetensors").exists()
    at.number_input(key="btn_more_steps").set_value(10).run()
    at.button(key="btn_continue").click().run()
    wait_for(lambda: trainer.status.state == "finished" and trainer.step_count == 16,
             what="the continued budget")
    assert any("continued for 10 steps" in text for _, text in trainer.log.events)
