"""The runs panel (ui/runs_panel.py): every run and comparison of the server, any tab.

AppTest runs the app in this process, so two AppTests are two tabs of one server: they
share the process-wide registries (see tests/test_app.py).
"""
from __future__ import annotations

from streamlit.testing.v1 import AppTest
from test_app import ROOT, TIMEOUT, app_env, new_app, registry, status_text, tiny_trainer  # noqa: F401, F811

from core.engine.arena import Arena
from core.engine.config import preset
from core.io.checkpoint import load_checkpoint
from ui.text import plain


def panel_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def test_a_run_started_in_another_tab_is_listed_and_opens(app_env):  # noqa: F811
    other_tab = new_app()
    other_tab.selectbox(key="cfg_data").set_value("ring8").run()
    other_tab.number_input(key="cfg_steps").set_value(30).run()
    other_tab.button(key="btn_start").click().run()
    run_id = other_tab.query_params["run"]

    at = new_app()   # a fresh tab: no run attached, but the panel knows the run
    assert "run" not in at.query_params
    assert run_id in panel_text(at) and "ring8 · bce" in panel_text(at)
    at.button(key=f"panel_open_{run_id}").click().run()
    assert not at.exception, at.exception
    assert at.query_params["run"] == run_id
    assert run_id in status_text(at)
    assert at.button(key=f"panel_open_{run_id}").disabled, "the shown run is marked"
    registry().get(run_id).stop()


def test_a_finished_comparison_stays_listed_and_reopens_on_its_page(app_env):  # noqa: F811
    from ui.compare_view import registry as arenas
    arena = Arena(preset("recommended", data="ring8", sample_every=2), ["bce", "reinforce"])
    arena.step()
    arena.stop()
    arenas().add(arena)
    at = new_app()   # the Train page lists comparisons too
    assert arena.run_id in panel_text(at) and "ring8 · bce, reinforce" in panel_text(at)
    at.button(key=f"panel_open_{arena.run_id}").click().run()
    assert not at.exception, at.exception
    assert at.query_params["arena"] == arena.run_id and "run" not in at.query_params
    assert any(f"arena `{arena.run_id}`" in m.value for m in at.markdown), "Compare page"


def test_rename_and_note_are_shown_as_text_and_saved_with_the_checkpoint(app_env, tmp_path):  # noqa: F811
    trainer = registry().add(tiny_trainer())
    at = new_app()
    key = f"panel_notes_{trainer.run_id}"
    at.text_input(key=f"{key}_name").input("[sharp](http://x.example) run")
    at.text_area(key=f"{key}_text").input("# sigma 0.02\n*lower* lr")
    at.button(key=f"{key}_save").click().run()
    assert not at.exception, at.exception
    assert trainer.notes == {"name": "[sharp](http://x.example) run",
                             "text": "# sigma 0.02\n*lower* lr"}
    text = panel_text(at)
    assert f"**{plain(trainer.notes['name'])}**" in text, "the name as plain text"
    assert plain("# sigma 0.02 *lower* lr") in text, "the note as plain text, one line"

    state = load_checkpoint(trainer.save_checkpoint(tmp_path / "named.safetensors"))
    assert state["notes"] == trainer.notes
    resumed = registry().add(type(trainer).from_checkpoint(state))
    assert resumed.notes == trainer.notes, "a resumed run keeps its name and note"


def test_a_seed_job_is_listed_and_opens_on_the_compare_page(app_env):  # noqa: F811
    from core.jobs.seed_job import SeedJob
    from ui.seeds_view import registry as seed_jobs
    job = SeedJob(preset("recommended", data="ring8"), ["bce", "reinforce"], [0, 1],
                  run_id="seeds-ring8-test")
    seed_jobs().add(job)   # created, never started: listed all the same
    try:
        at = new_app()
        assert "created · 0/2 seeds · ring8 · bce, reinforce" in panel_text(at)
        at.button(key="panel_open_seeds-ring8-test").click().run()
        assert not at.exception, at.exception
        assert at.query_params["seeds"] == "seeds-ring8-test"
        assert any("job `seeds-ring8-test`" in m.value for m in at.markdown)
    finally:
        seed_jobs().clear()


def test_runs_and_arms_compare_as_a_table_of_what_differs(app_env):  # noqa: F811
    from ui.compare_view import registry as arenas
    from ui.runs_table import table

    one = tiny_trainer(steps=3, seed=1, eval_every=2)
    two = tiny_trainer(steps=3, seed=2, eval_every=2)
    for t in (one, two):
        registry().add(t)
    arena = Arena(preset("recommended", data="ring8", sample_every=2), ["bce", "reinforce"])
    arena.step()
    arenas().add(arena)
    at = new_app()
    names = [f"{one.run_id}", f"{two.run_id}", f"{arena.run_id} · reinforce"]
    at.multiselect(key="panel_table_pick").set_value(names).run()
    assert not at.exception, at.exception
    (shown,) = [d.value for d in at.dataframe if "differs" in d.value.columns]
    assert {"seed", "rule"} <= set(shown.index) and shown["differs"].all()
    assert "eval_every" in shown.index and "data" not in shown.index   # ring8 for all
    assert list(shown.loc["rule"])[1:] == ["bce", "bce", "reinforce"]
    frame = table({"a": ({"x": 1, "o": {"k": [1, 2]}}, {"FD": 3.0}),
                   "b": ({"x": 1, "o": {"k": [1, 3]}}, {})})
    assert list(frame.index) == ["x", "o.k", "final FD"]
    assert list(frame["differs"]) == [False, True, True]
    assert frame.loc["o.k", "b"] == "1, 3" and frame.loc["final FD", "b"] == "–"
    arena.stop()
