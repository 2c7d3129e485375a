"""AppTest of the Compare page's many-seed mode: seeds run as tasks on the local
process pool from a background thread; the page shows them arriving, the mean ±
s.e. charts and the paired verdict. Tiny: ring8, 40 steps, 3 seeds on 2 workers.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def jobs(monkeypatch):
    monkeypatch.chdir(ROOT)
    from ui.seeds_view import registry
    registry().clear()
    yield registry()
    registry().clear()


def wait_for(predicate, timeout: float = 90.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_many_seeds_arrive_with_bands_and_a_paired_verdict(jobs):
    at = AppTest.from_file(str(ROOT / "views" / "compare.py"), default_timeout=60).run()
    assert not at.exception and not any(b.key == "cmp_seeds_start" for b in at.button)
    at.sidebar.number_input(key="cmp_steps").set_value(40)
    at.sidebar.number_input(key="cmp_seeds").set_value(3).run()
    at.sidebar.number_input(key="cmp_seeds_eval_every").set_value(20)
    assert at.sidebar.radio(key="cmp_backend").value.startswith("this machine")
    at.sidebar.radio(key="cmp_backend").set_value("Ray cluster").run()   # an address box
    assert at.sidebar.text_input(key="cmp_ray_address").value == ""
    at.sidebar.radio(key="cmp_backend").set_value("this machine (process pool)").run()
    at.button(key="cmp_seeds_start").click().run()
    assert not at.exception
    (job,) = jobs.runs()
    assert job.backend == "local" and job.seeds == [0, 1, 2] and job.cfg.eval_every == 20
    assert job.run_id in at.query_params["seeds"]
    wait_for(lambda: len(job.results) >= 1 or job.status.state != "running")
    at.run()                                   # seeds are drawn as they arrive
    assert not at.exception, at.exception
    assert " / 3 seeds done" in at.get("progress")[0].proto.text
    assert any("cmp_seeds_chart_q_modes" in c.proto.id for c in at.get("plotly_chart"))
    wait_for(lambda: job.status.state != "running")
    assert job.status.state == "finished", job.status.message
    at.run()
    assert not at.exception
    assert "3 / 3 seeds done" in at.get("progress")[0].proto.text
    keys = [c.proto.id for c in at.get("plotly_chart")]
    assert any("cmp_seeds_chart_q_modes" in k for k in keys)
    assert any("cmp_seeds_chart_d_loss" in k for k in keys)
    said = at.info[0].value
    assert "modes covered" in said and "of 3 seeds" in said
    verdict = next(d for d in at.dataframe if "verdict" in d.value.columns).value
    assert set(verdict["seeds"]) == {3} and set(verdict["arm"]) == {"reinforce"}
    # a second tab (a new session with the id in the URL) re-attaches to the job
    again = AppTest.from_file(str(ROOT / "views" / "compare.py"), default_timeout=60)
    again.query_params["seeds"] = job.run_id
    again.run()
    assert not again.exception and "3 / 3 seeds done" in again.get("progress")[0].proto.text
    again.button(key="cmp_seeds_reset").click().run()
    assert again.button(key="cmp_start")


def test_a_seed_that_fails_twice_is_reported_and_the_others_go_on():
    from core.engine.config import preset
    from core.jobs.backends import FailFor
    from core.jobs.seed_job import SeedJob

    job = SeedJob(preset("recommended", data="ring8", steps=10, eval_every=10),
                  ["bce", "reinforce"], [0, 1], run_id="t", backend="serial",
                  hook=FailFor([1]))
    job.start()
    wait_for(lambda: not job.thread_alive)
    assert job.status.state == "finished" and list(job.results) == [0]
    assert [(f.task.seed, f.attempts) for f in job.failures] == [(1, 2)]
    assert job.finished == job.total == 2 and job.eta() == 0.0
    assert any("retrying" in line for line in job.lines)
    assert set(job.finals()[0]) == {"bce", "reinforce"}


def test_an_unreachable_ray_address_fails_the_job_in_one_line(monkeypatch):
    import socket

    from core.engine.config import preset
    from core.jobs.seed_job import SeedJob
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with socket.socket() as s:            # a local port that nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    job = SeedJob(preset("recommended", data="ring8", steps=5), ["bce", "reinforce"],
                  [0, 1], run_id="t", backend="ray", address=address)
    job.start()
    wait_for(lambda: not job.thread_alive, timeout=30)
    assert job.status.state == "failed"
    assert job.status.message.startswith(f"Ray address {address}: no Ray cluster")
    assert "ray start --head" in job.status.message and "\n" not in job.status.message


def test_bands_average_seeds_per_step():
    import pandas as pd

    from ui.seed_charts import band, seed_series
    a = pd.DataFrame({"step": [0, 1, 2, 3], "q_modes": [None, 4.0, None, 6.0]})
    b = pd.DataFrame({"step": [0, 1, 2, 3], "q_modes": [None, 6.0, None, 8.0]})
    stats = band({0: seed_series(a, "q_modes"), 1: seed_series(b, "q_modes")})
    assert list(stats.index) == [1, 3] and list(stats["mean"]) == [5.0, 7.0]
    assert list(stats["se"]) == [1.0, 1.0] and list(stats["n"]) == [2, 2]   # std sqrt2 / sqrt2
    long = pd.DataFrame({"step": range(1000), "d_loss": [float(i % 2) for i in range(1000)]})
    series = seed_series(long, "d_loss", points=10)   # buckets of 100 steps
    assert len(series) == 10 and set(series.values) == {0.5}
    assert len(band({0: series})["se"].dropna()) == 0     # one seed: no band
