"""Sweeps on the Compare page: the reader of a sweep folder (core/jobs/sweep_read.py),
the value lists typed on the page (core/jobs/sweep.py grid_of), the grid figures
(ui/sweep_charts.py) and the page's open / bad-input paths (AppTest).

One tiny real sweep made in-process by the CLI: ring8, lr x batch_size = 2 x 1 cells,
2 seeds, 20 steps, quality metrics at steps 10 and 20.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.cli.main import main
from core.engine.config import preset
from core.jobs.sweep import grid_of
from core.jobs.sweep_read import SweepReadError, cell_frames, read_sweep, signature

ROOT = Path(__file__).resolve().parents[1]
CFG = preset("recommended", data="ring8", steps=20, eval_every=10)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "s"
    rc = main(["sweep", "--data", "ring8", "--grid", "lr=1e-4,1e-3", "--grid",
               "batch_size=64", "--seeds", "2", "--steps", "20", "--eval-every", "10",
               "--backend", "serial", "--out", str(out)])
    assert rc == 0
    return out


@pytest.fixture
def copy(sweep, tmp_path) -> Path:
    """A copy to damage."""
    return Path(shutil.copytree(sweep, tmp_path / "copy"))


# -- the reader ------------------------------------------------------------------------
def test_a_sweep_folder_reads_as_a_grid_of_cells_with_every_seed(sweep):
    grid = read_sweep(sweep)
    assert grid.grid == [("lr", [1e-4, 1e-3]), ("batch_size", [64])]
    assert grid.arms == ["bce", "reinforce"] and grid.seeds == [0, 1]
    assert [c.label for c in grid.cells] == ["lr=0.0001,batch_size=64", "lr=0.001,batch_size=64"]
    assert grid.finished == grid.total == 4 and not grid.problems
    assert {"q_modes", "q_high_quality"} <= set(grid.metrics())
    assert all(m.startswith("q_") for m in grid.metrics())
    table = grid.table()
    modes = table[table.metric == "q_modes"]
    assert len(modes) == 4 and set(modes.n) == {2}                  # 2 cells x 2 arms
    assert (modes["min"] <= modes["mean"]).all() and (modes["mean"] <= modes["max"]).all()
    # the same means as the CLI's own sweep.csv (recomputed from each seed's metrics.csv)
    import pandas as pd
    cli = pd.read_csv(sweep / "sweep.csv")
    cli = cli[cli.metric == "q_modes"].set_index(["point", "arm"])["mean"]
    mine = modes.set_index(["point", "arm"])["mean"]
    assert mine.reindex(cli.index).round(6).tolist() == cli.round(6).tolist()
    frames = cell_frames(grid, grid.cells[1])
    assert set(frames) == {0, 1} and set(frames[0]) == {"bce", "reinforce"}
    assert "q_modes" in frames[0]["bce"] and frames[0]["bce"]["step"].max() == 20


def test_a_sweep_still_running_reads_what_has_finished(copy):
    shutil.rmtree(copy / "lr=0.001,batch_size=64" / "seed_1")
    before = signature(copy)
    grid = read_sweep(copy)
    assert grid.finished == 3 and grid.total == 4 and not grid.problems
    assert set(grid.cells[1].finals) == {0}
    modes = grid.table().query("metric == 'q_modes' and cell == 1")
    assert set(modes.n) == {1} and modes.se.isna().all()
    (copy / "lr=0.001,batch_size=64" / "seed_1").mkdir()
    assert signature(copy) == before       # an empty seed folder is not a result yet


@pytest.mark.parametrize("make,words", [
    (lambda p: p / "nowhere", ["no such folder", "python -m core sweep --out"]),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", ["is a file"]),
    (lambda p: p, ["not a sweep", "no config.json"]),
])
def test_a_folder_that_is_no_sweep_says_what_to_open(tmp_path, make, words):
    with pytest.raises(SweepReadError) as err:
        read_sweep(make(tmp_path))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_comparison_folder_is_named_as_such(tmp_path):
    assert main(["compare", "--data", "ring8", "--steps", "5", "--eval-every", "0",
                 "--backend", "serial", "--out", str(tmp_path / "c")]) == 0
    with pytest.raises(SweepReadError, match="no grid.*python -m core compare"):
        read_sweep(tmp_path / "c")


def test_damaged_files_are_named_with_what_to_do(copy):
    (copy / "config.json").write_text('{"grid": [["lr", [0.001')
    with pytest.raises(SweepReadError, match=r"config.json is damaged \(JSONDecodeError.*rerun"):
        read_sweep(copy)
    (copy / "config.json").write_text(json.dumps({"grid": "lr", "arms": [], "seeds": [0]}))
    with pytest.raises(SweepReadError, match="config.json is damaged: it needs a grid"):
        read_sweep(copy)


def test_a_damaged_metrics_file_leaves_its_seed_out_and_says_so(sweep, copy):
    meta = json.loads((sweep / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(meta))
    bad = copy / "lr=0.0001,batch_size=64" / "seed_1" / "reinforce" / "metrics.csv"
    bad.write_bytes(b"\x00\xff garbage \x00")
    (copy / "lr=0.001,batch_size=64" / "seed_0" / "bce" / "metrics.csv").write_text(
        "step,q_modes\n0,abc\n")
    grid = read_sweep(copy)
    assert grid.finished == 2 and len(grid.problems) == 2
    first, second = grid.problems
    assert first.startswith("lr=0.0001,batch_size=64/seed_1/reinforce/metrics.csv is damaged")
    assert "delete lr=0.0001,batch_size=64/seed_1" in first
    assert "non-numeric values in q_modes" in second


# -- value lists typed on the page --------------------------------------------------------
def test_value_lists_parse_and_bad_ones_name_the_value_and_the_fix():
    examples = {"lr": "1e-4, 3e-4, 1e-3"}
    assert grid_of([("lr", "1e-4, 1e-3"), ("batch_size", "64")], CFG, examples) == \
        [("lr", [1e-4, 1e-3]), ("batch_size", [64])]
    for fields, words in [
        ([("lr", "1e-3, abc")], ["lr: 'abc' does not fit", "not a number",
                                 "separated by commas, e.g. 1e-4, 3e-4, 1e-3"]),
        ([("lr", " ")], ["lr: no values", "separated by commas"]),
        ([("lr", "1e-3; 1e-4")], ["holds ';'"]),
        ([("lr", "1e-3, 1e-3")], ["a value is repeated"]),
        ([("batch_size", "64, 6.5")], ["'6.5' does not fit", "not an integer"]),
        ([("lr", "1e-3"), ("g_opt.lr", "1e-4")], ["set the same setting"]),
        ([], ["choose a setting"]),
    ]:
        with pytest.raises(ValueError) as err:
            grid_of(fields, CFG, examples)
        assert all(w in str(err.value) for w in words), str(err.value)


# -- the figures --------------------------------------------------------------------------
def test_figures_use_human_labels_the_theme_and_carry_the_cell(sweep):
    from ui.sweep_charts import sweep_figures
    grid = read_sweep(sweep)
    labels = [c.label for c in grid.cells]
    figs = dict(sweep_figures(grid.table(), grid.grid, grid.arms, grid.metrics(), labels))
    fig = figs["q_modes"]
    # a panel per arm: the heatmap, and clear markers that take hover and clicks
    assert [t.type for t in fig.data] == ["heatmap", "scatter"] * 2
    assert fig.layout.title.text.startswith("modes covered")           # not q_modes
    assert fig.layout.paper_bgcolor == "rgba(0,0,0,0)"
    marks = fig.data[1]
    assert list(marks.y) == ["0.0001", "0.001"] and list(marks.x) == ["64", "64"]
    assert [c[0] for c in marks.customdata] == [0, 1]                  # the cell index
    assert "2 seeds" in marks.customdata[1][1] and "±" in marks.customdata[1][1]
    one = dict(sweep_figures(grid.table(), grid.grid[:1], grid.arms, ["q_modes"], labels))
    line = one["q_modes"]
    assert [t.type for t in line.data] == ["scatter", "scatter"]
    assert [c[0] for c in line.data[0].customdata] == [0, 1]
    assert line.layout.xaxis.title.text == "lr"


# -- the page -----------------------------------------------------------------------------
def _page():
    from streamlit.testing.v1 import AppTest
    return AppTest.from_file(str(ROOT / "views" / "compare.py"), default_timeout=30)


def test_the_page_opens_a_sweep_folder_and_refuses_a_bad_one(sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    at = _page().run()
    assert not at.exception
    at.text_input(key="sw_open_path").set_value(str(tmp_path)).run()
    at.button(key="sw_open").click().run()
    assert "not a sweep" in at.error[0].value and "sweep" not in at.query_params
    at.text_input(key="sw_values1_lr").set_value("1e-3, abc").run()
    assert any("'abc' does not fit" in e.value for e in at.error)
    assert at.button(key="sw_start").disabled
    at.text_input(key="sw_open_path").set_value(str(sweep)).run()
    at.button(key="sw_open").click().run()
    assert not at.exception, at.exception
    assert at.query_params["sweep"] == str(sweep.resolve())
    keys = [c.proto.id for c in at.get("plotly_chart")]
    assert any("sw_fig_q_modes" in k for k in keys)
    assert any(m.value.startswith("Sweep of **lr** × **batch\\_size**") for m in at.markdown)
    at.button(key="sw_reset").click().run()                  # New comparison: the form
    assert "sweep" not in at.query_params and at.button(key="cmp_start")
