"""The user's own 2-D points ("points" data): the CSV loader and its messages, the
scaling, the k-NN precision / coverage metrics on known configurations, checkpoints that
carry their points (and resume where the CSV moved or changed), the CLI on a CSV, and
the Train form's picker."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from helpers import TINY, put

from core.cli.main import main
from core.data import points as P
from core.data.datasets import DataError, load_by_name
from core.engine.config import ConfigError, preset
from core.engine.trainer import Trainer
from core.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.quality.coverage import make_reference, precision_coverage
from core.quality.evaluate import Evaluator
from core.quality.metrics import POINT_METRICS, QUALITY_METRICS


def blobs(n_per: int = 100, centres=((0, 0), (4, 0), (0, 4), (4, 4)), std: float = 0.3,
          seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([np.asarray(c) + std * rng.standard_normal((n_per, 2))
                           for c in centres])


def write_csv(path, pts: np.ndarray, header: str = "x,y") -> str:
    np.savetxt(path, pts, delimiter=",", header=header, comments="")
    return str(path)


def tiny(root: str, **changes):
    return preset("recommended", data="points", data_root=root, **{**TINY, **changes})


# -- parsing ------------------------------------------------------------------------------
def test_parse_accepts_header_comments_bom_and_other_separators():
    text = "\ufeffx,y\n# a comment\n\n" + "".join(f"{i},{2 * i}\n" for i in range(12))
    pts = P.parse_csv(text.encode())
    assert pts.shape == (12, 2) and pts[3].tolist() == [3.0, 6.0]
    for sep in (";", "\t", "  "):
        body = "".join(f"{i}{sep}{-i}.5\n" for i in range(10))
        assert P.parse_csv(body.encode())[9].tolist() == [9.0, -9.5]
    assert P.parse_csv(("1,2,\n" * 5 + "3,4,\n" * 5).encode()).shape == (10, 2)


ROWS = "".join(f"{i},{i % 3}\n" for i in range(12))


@pytest.mark.parametrize("raw, message", [
    (b"\x89PNG\r\n\x1a\n\0\0\0", r"not a text file \(it holds binary bytes\); save the points"),
    ("x,y\n1,2\n".encode("utf-16"), "not a text file|not UTF-8 text"),
    (b"\xff\xfe1,2\n", "not UTF-8 text; save it as a UTF-8 CSV"),
    ((ROWS + "3,abc\n").encode(), r"line 13, column 2 is 'abc', not a number; every cell"),
    (("x,y\n" + ROWS + "nan,1\n").encode(), r"line 14, column 1 is 'nan', not a finite number; "
                                            "remove the rows with NaN"),
    ((ROWS + "1,inf\n").encode(), "'inf', not a finite number"),
    ((ROWS + ",2\n").encode(), "line 13, column 1 is empty; every row needs two numbers"),
    ((ROWS + "7\n").encode(), r"line 13 has 1 column \(7\); a points CSV has exactly two columns"),
    ("x;y\n1,5;2,5\n".encode(), "use a point as the decimal mark"),
    (("x,y,z\n" + "1,2,3\n" * 12).encode(), r"line 2 has 3 columns \(1, 2, 3\); a points CSV has "
                                           "exactly two columns, x and y: delete the other"),
    (b"x,y\n1,2\n3,4\n", "has 2 points; at least 10 are needed"),
    (b"", "has 0 points; at least 10"),
    (b"1,1\n" * 20, "all its points in one place"),
    ((ROWS + "1e300,0\n").encode(), "coordinates must be at most 1e\\+12 in size"),
])
def test_bad_csvs_get_one_line_naming_the_problem_and_the_fix(raw, message):
    with pytest.raises(P.PointsError, match=message) as info:
        P.parse_csv(raw, "pts.csv")
    assert "\n" not in str(info.value) and str(info.value).startswith("pts.csv")


def test_too_many_rows_and_too_many_bytes_are_refused(monkeypatch):
    rows = "".join(f"{i % 97},{i % 89}\n" for i in range(P.MAX_POINTS + 1)).encode()
    with pytest.raises(P.PointsError, match=r"more than 100,000 points; use at most 100,000"):
        P.parse_csv(rows)
    assert P.parse_csv(rows[:rows.rindex(b"\n", 0, len(rows) - 1) + 1]).shape == (P.MAX_POINTS, 2)
    monkeypatch.setattr(P, "MAX_CSV_BYTES", 100)
    with pytest.raises(P.PointsError, match=r"MB; at most 0 MB .*keep only the x,y columns"):
        P.parse_csv(b"1,2\n" * 30)


def test_read_csv_names_missing_files_folders_and_fifos(tmp_path):
    with pytest.raises(P.PointsError, match="no such file; give the path of a CSV"):
        P.read_csv(str(tmp_path / "gone.csv"))
    with pytest.raises(P.PointsError, match="is a folder; give a CSV file"):
        P.read_csv(str(tmp_path))
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(P.PointsError, match="not a regular file"):
        P.read_csv(str(fifo))
    with pytest.raises(P.PointsError, match="no CSV given"):
        P.read_csv("")


# -- scaling and loading ------------------------------------------------------------------------
def test_scaling_centres_keeps_proportions_and_is_deterministic():
    rng = np.random.default_rng(1)
    raw = np.c_[1000 + 30 * rng.standard_normal(500), -7 + 10 * rng.standard_normal(500)]
    x, note = P.scaled(raw)
    assert x.dtype == np.float32 and np.allclose(x.mean(0), 0, atol=1e-5)
    assert math.isclose(x.std(0).max(), 1.0, rel_tol=1e-4)
    ratio = raw.std(0)[1] / raw.std(0)[0]
    assert math.isclose(x.std(0)[1] / x.std(0)[0], ratio, rel_tol=1e-4)   # one common scale
    assert not np.allclose(x, (raw - raw.mean(0)) / raw.std(0).max())      # rows shuffled...
    assert np.array_equal(x, P.scaled(raw)[0])                            # ...the same way
    (cx, cy), scale = raw.mean(0), raw.std(0).max()
    assert f"500 points, centred on their mean ({cx:.4g}, {cy:.4g}) and divided by {scale:.4g}" in note


def test_points_data_set_loads_and_rereads_a_rewritten_csv(tmp_path):
    path = write_csv(tmp_path / "p.csv", blobs())
    data = load_by_name("points", path)
    assert data.dim == 2 and not data.is_image and data.modes is None and len(data) == 400
    assert data.raw.dtype == torch.float64 and np.array_equal(data.raw.numpy(), blobs())
    assert "400 points" in data.note and path in data.note
    x0, x1, _, _ = data.extent()
    assert x0 < -1 < 1 < x1
    assert load_by_name("points", path) is data                 # cached
    write_csv(tmp_path / "p.csv", blobs(n_per=30))
    os.utime(path, ns=(1, 1))                                   # even within one mtime tick
    assert len(load_by_name("points", path)) == 120             # rewritten: read again
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match="points: .*has 1 point; at least 10"):
        load_by_name("points", str(tmp_path / "bad.csv"))


def test_a_points_config_needs_its_csv():
    with pytest.raises(ConfigError, match="data = 'points' needs data_root: the path of a CSV"):
        preset("recommended", data="points")
    assert preset("recommended", data="points", data_root="x.csv").latent_dim == 2


# -- metrics ------------------------------------------------------------------------------------
def test_precision_and_coverage_on_a_hand_checked_configuration():
    # k = 1: every drawn point's ball reaches its nearest neighbour, 1 away
    ref = make_reference(torch.tensor([[0.0, 0], [1, 0], [10, 0], [11, 0]]), k=1)
    assert ref.radii.tolist() == [1.0, 1.0, 1.0, 1.0]
    q = precision_coverage(torch.tensor([[0.5, 0.0], [5.0, 0.0]]), ref)
    assert q == {"q_precision": 50.0, "q_coverage": 50.0}   # one sample on, one off
    assert precision_coverage(torch.tensor([[float("nan"), 0.0]]), ref)["q_precision"] == 0.0
    dup = make_reference(torch.zeros(12, 2).index_fill_(0, torch.tensor([0]), 1.0))
    assert dup.radii.min() == 0.01                           # repeated rows: the floor


def test_perfect_collapsed_and_off_samplers_score_as_expected(tmp_path):
    data = load_by_name("points", write_csv(tmp_path / "b.csv", blobs()))
    ref = make_reference(data.x)
    centre, scale = data.raw.numpy().mean(0), data.raw.numpy().std(0).max()
    fresh = torch.from_numpy((blobs(n_per=625, seed=7) - centre) / scale).float()
    perfect = precision_coverage(fresh, ref)
    assert perfect["q_precision"] > 90 and perfect["q_coverage"] > 95
    one_blob = fresh[:625]                                   # a quarter of the drawing
    collapsed = precision_coverage(one_blob, ref)
    assert collapsed["q_precision"] > 90 and 20 < collapsed["q_coverage"] < 30
    assert precision_coverage(fresh + 10, ref) == {"q_precision": 0.0, "q_coverage": 0.0}


def test_evaluator_scores_points_with_labelled_metrics(tmp_path):
    data = load_by_name("points", write_csv(tmp_path / "b.csv", blobs()))
    ev = Evaluator(data)
    assert ev.unavailable is None and ev.ready and ev.metrics == POINT_METRICS
    assert set(POINT_METRICS) == {"q_precision", "q_coverage"} <= set(QUALITY_METRICS)
    G = torch.nn.Linear(2, 2)
    values = ev(G, n=500)
    assert set(values) == set(POINT_METRICS) and all(0 <= v <= 100 for v in values.values())
    from core.engine.metric_info import METRICS
    for name in POINT_METRICS:
        entry = METRICS.entry(name)
        assert entry.unit == "%" and entry.better == "higher" and "drawn" in entry.help
        assert "k-NN" in entry.label


# -- checkpoints carry their points -------------------------------------------------------------
def trained(tmp_path, steps: int = 4):
    path = write_csv(tmp_path / "p.csv", blobs())
    trainer = Trainer(tiny(path, steps=steps))
    for _ in range(steps):
        trainer.step()
    return path, trainer, trainer.save_checkpoint(folder=tmp_path / "run")


def test_checkpoint_holds_the_points_and_resumes_where_the_csv_moved(tmp_path):
    path, trainer, ckpt = trained(tmp_path)
    state = load_checkpoint(ckpt)
    assert np.array_equal(state["data_points"].numpy(), blobs())
    same = Trainer.from_checkpoint(state)
    assert not [t for _, t in same.log.events if "CSV" in t]   # the CSV is unchanged
    os.rename(path, tmp_path / "moved.csv")
    resumed = Trainer.from_checkpoint(state)
    assert torch.equal(resumed.data.x, trainer.data.x)           # exactly the run's data
    notes = [t for _, t in resumed.log.events if t.startswith("data:")]
    assert len(notes) == 1 and "no longer there (moved or deleted)" in notes[0]
    assert "goes on with the 400 points saved in its checkpoint" in notes[0]
    resumed.step()
    assert resumed.step_count == 5


def test_resume_says_when_the_csv_changed(tmp_path):
    path, _, ckpt = trained(tmp_path)
    write_csv(path, blobs(seed=3))
    resumed = Trainer.from_checkpoint(load_checkpoint(ckpt))
    note = next(t for _, t in resumed.log.events if t.startswith("data:"))
    assert "has changed since (fingerprint" in note and len(resumed.data) == 400
    assert np.array_equal(resumed.data.raw.numpy(), blobs())


def test_saved_points_are_validated(tmp_path):
    _, trainer, _ = trained(tmp_path)
    state = trainer.state_dict()
    cases = [
        (put(state, ["data_points"], state["data_points"].float()), "dtype float32"),
        (put(state, ["data_points"], state["data_points"][:5].clone()), "has 5 points"),
        (put(state, ["data_points"], torch.full((20, 2), float("nan"), dtype=torch.float64)),
         "NaN"),
        (put(state, ["data_points"], torch.zeros(20, 3, dtype=torch.float64)), r"shape \(20, 3\)"),
    ]
    ring = Trainer(preset("recommended", data="ring8", **TINY)).state_dict()
    cases.append(({**ring, "data_points": state["data_points"]}, "only runs on data = 'points'"))
    for i, (bad, message) in enumerate(cases):
        save_checkpoint(bad, tmp_path / f"bad{i}.safetensors")
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / f"bad{i}.safetensors")


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_trains_on_a_csv_then_scores_and_resumes_it_elsewhere(tmp_path, capsys):
    csv = write_csv(tmp_path / "pts.csv", blobs())
    out = tmp_path / "run"
    rc = main(["train", "--data", "points", "--data-root", csv, "--preset", "recommended",
               "--steps", "60", "--eval-every", "30", "--out", str(out)])
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert "data: " in err and "400 points, centred on their mean" in err
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    state = load_checkpoint(out / "step_60.safetensors")
    assert state["data_points"].shape == (400, 2)
    os.remove(csv)                                  # the CSV is gone: the file still works
    assert main(["eval", str(out / "step_60.safetensors"), "--n", "300"]) == 0
    text = capsys.readouterr().out
    assert "precision (k-NN) (%)" in text and "coverage (k-NN) (%)" in text
    assert main(["train", "--resume", str(out / "step_60.safetensors"), "--steps", "70",
                 "--out", str(out)]) == 0
    assert load_checkpoint(out / "step_70.safetensors")["step"] == 70
    assert "no longer there (moved or deleted); the run goes on with the 400 points" in (
        capsys.readouterr().err)


def test_cli_names_a_bad_csv(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("x,y\n" + "1,oops\n" * 12)
    rc = main(["train", "--data", "points", "--data-root", str(tmp_path / "bad.csv"),
               "--steps", "5", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "line 2, column 2 is 'oops', not a number" in err
    assert "Traceback" not in err


# -- the Train form's picker --------------------------------------------------------------------
def _form_script():
    import streamlit as st

    from ui import widgets
    with st.sidebar:
        cfg, _ = widgets.config_form()
    st.text(f"config ok {cfg.data_root}" if cfg is not None else "config invalid")


def test_form_offers_drawing_and_checks_a_csv_path(tmp_path):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_form_script, default_timeout=60).run()
    at.selectbox(key="cfg_data").set_value("points").run()
    assert at.radio(key="cfg_points_source").value == "draw"
    assert any(c.proto.id.endswith("cfg_points_canvas") for c in at.get("bidi_component"))
    assert at.text[0].value == "config invalid"
    assert any("draw at least 10 points on the canvas" in e.value for e in at.error)
    at.radio(key="cfg_points_source").set_value("path").run()
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    at.text_input(key="cfg_points_path").set_value(str(tmp_path / "bad.csv")).run()
    assert any("has 1 point; at least 10 are needed" in e.value for e in at.error)
    good = write_csv(tmp_path / "good.csv", blobs())
    at.text_input(key="cfg_points_path").set_value(good).run()
    assert not at.error and at.text[0].value == f"config ok {good}"
    assert any("400 points, centred on their mean" in c.value for c in at.caption)


def _upload_script():
    import streamlit as st

    from ui import points_input

    class Upload:   # what st.file_uploader returns, as far as the picker reads it
        def __init__(self, name, data, size=None):
            self.name, self.file_id, self._data = name, name, data
            self.size = len(data) if size is None else size

        def getvalue(self):
            assert self.size <= 16 * 2**20, "an oversized upload must not be read"
            return self._data

    rows = "".join(f"{i % 7},{i % 5}\n" for i in range(40)).encode()
    for up in (Upload("png.csv", b"\x89PNG\r\n\x1a\n\0\0"), Upload("big.csv", b"", 10**9),
               Upload("ok.csv", b"x,y\n" + rows)):
        st.text(repr(points_input._uploaded(up)))


def test_uploads_are_checked_and_saved_by_fingerprint(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path))
    at = AppTest.from_function(_upload_script, default_timeout=60).run()
    png, big, ok = (t.value for t in at.text)
    assert "'png.csv' is not a text file (it holds binary bytes)" in png
    assert "'big.csv' is 953.7 MB; at most 16 MB" in big
    saved = list((tmp_path / "points").glob("upload-*.csv"))
    assert len(saved) == 1 and f"('{saved[0]}', None)" == ok
    assert P.parse_csv(saved[0].read_bytes()).shape == (40, 2)
    assert any("40 points, centred on their mean" in c.value for c in at.caption)
