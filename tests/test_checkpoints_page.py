"""The Checkpoints page lists finished comparisons too, and saves one arm as a run."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest
from test_app import ROOT, TIMEOUT, app_env  # noqa: F401

from core.engine.arena import Arena
from core.engine.config import preset
from core.io.checkpoint import load_checkpoint


def test_a_finished_comparison_saves_an_arm_as_a_run(app_env):  # noqa: F811
    from ui.compare_view import registry as arenas

    arena = Arena(preset("recommended", data="ring8", sample_every=2, steps=3),
                  ["bce", "reinforce"])
    for _ in range(3):
        arena.step()
    arena.stop()   # not live: listed all the same
    arenas().add(arena)
    at = AppTest.from_file(str(ROOT / "views" / "checkpoints.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    at.button(key=f"save_arm_{arena.run_id}_reinforce").click().run()
    assert not at.exception, at.exception
    (saved,) = (app_env / f"{arena.run_id}-reinforce").glob("step_*.safetensors")
    state = load_checkpoint(saved)
    assert state.get("kind", "run") == "run" and state["rule"] == "reinforce"
    assert int(state["step"]) == 3
    arenas().clear()
