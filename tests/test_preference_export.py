"""Preferences as a shared dataset: export to Parquet in the TRL and Pick-a-Pic
conventions, read back by Hugging Face `datasets`, imported into a fresh store exactly."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from core.cli.main import main
from core.feedback.export import DatasetFileError, export, import_into, read_judgements
from core.feedback.preferences import Judgement, PreferenceStore

FIELDS = ("choice", "judge", "generator", "step", "data", "time", "round", "criterion")


def _judgements(data: str, n: int = 6) -> list[Judgement]:
    rng = np.random.default_rng(0)
    out = []
    choices = ["left", "right", "tie", "best:2", "skip", "best:0"]
    for i in range(n):
        choice = choices[i % len(choices)]
        k = 4 if choice.startswith("best") else 2
        samples = (rng.integers(0, 256, (k, 28, 28), dtype=np.uint8) if data == "mnist5k"
                   else rng.normal(size=(k, 2)).astype(np.float32))
        out.append(Judgement(samples=samples, z=rng.normal(size=(k, 8)).astype(np.float32),
                             choice=choice, judge="person" if i % 2 else "oracle:digit:7",
                             generator="abc123", step=100 + i, data=data,
                             time=1_780_000_000.25 + i, round=i % 3,
                             criterion="Which looks more like a 7?"))
    return out


def _same(a: Judgement, b: Judgement) -> bool:
    return (all(getattr(a, f) == getattr(b, f) for f in FIELDS)
            and np.array_equal(a.samples, b.samples) and a.samples.dtype == b.samples.dtype
            and np.array_equal(a.z, b.z))


@pytest.mark.parametrize("data", ["mnist5k", "ring8"])
def test_export_load_dataset_import_round_trip(tmp_path, data):
    datasets = pytest.importorskip("datasets")
    with PreferenceStore(tmp_path / "a.sqlite") as store:
        store.add_many(_judgements(data))
        rows, card = export(store, tmp_path / "prefs.parquet", data)
        original = [j for j in store.judgements() if j.choice != "skip"]   # no preference
    assert rows == 1 + 1 + 1 + 3 + 3   # left, right, tie, and 3 pairs per best-of-4
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "prefs.parquet"),
                               cache_dir=str(tmp_path / "hf"))["train"]
    assert len(ds) == rows
    first = ds[0]
    assert first["prompt"] == first["caption"] == "Which looks more like a 7?"
    if data == "mnist5k":   # decoded as images by the declared features
        assert first["chosen"].size == (28, 28) and first["jpg_0"].mode == "L"
    tie = ds[2]
    assert tie["tie"] and (tie["label_0"], tie["label_1"]) == (0.5, 0.5)
    best = ds[3]
    assert best["label_0"] == 1.0 and best["index_0"] == 2 and best["source"] == "person"
    assert "Which looks more like a 7?" in card.read_text() and "load_dataset" in card.read_text()
    with PreferenceStore(tmp_path / "b.sqlite") as fresh:
        assert import_into(fresh, tmp_path / "prefs.parquet") == len(original)
        back = fresh.judgements()
    assert len(back) == len(original) and all(map(_same, original, back))


def test_the_cli_exports_and_imports_and_a_bad_file_is_one_line(tmp_path, capsys):
    db, out = tmp_path / "a.sqlite", tmp_path / "ds" / "p.parquet"
    with PreferenceStore(db) as store:
        store.add_many(_judgements("ring8"))
    assert main(["feedback", "export", "--db", str(db), "--out", str(out)]) == 0
    assert "9 pairs" in capsys.readouterr().out and (out.parent / "README.md").is_file()
    assert main(["feedback", "import", str(out), "--db", str(tmp_path / "b.sqlite")]) == 0
    assert "5 judgements" in capsys.readouterr().out
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    assert main(["feedback", "import", str(tmp_path / "bad.parquet"), "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable Parquet file" in err[0]
    with pytest.raises(DatasetFileError, match="is not a file"):
        read_judgements(tmp_path)


def test_a_foreign_readme_is_never_overwritten(tmp_path):
    (tmp_path / "README.md").write_text("my own notes")
    with PreferenceStore(tmp_path / "a.sqlite") as store:
        store.add_many(_judgements("ring8"))
        _, card = export(store, tmp_path / "p.parquet", "ring8")
    assert card.name == "p.README.md" and (tmp_path / "README.md").read_text() == "my own notes"


@pytest.mark.parametrize("change, says", [
    (lambda t: t.set_column(t.schema.get_field_index("judgement"), "judgement",
                            pa.array([7] * t.num_rows, pa.int64())), "not the pairs of one"),
    (lambda t: t.set_column(t.schema.get_field_index("judgement"), "judgement",
                            pa.array([None] * t.num_rows, pa.int64())), "judgement None"),
])
def test_a_file_whose_rows_do_not_form_clicks_is_refused(tmp_path, change, says):
    import pyarrow.parquet as pq

    with PreferenceStore(tmp_path / "a.sqlite") as store:
        store.add_many(_judgements("ring8"))
        export(store, tmp_path / "p.parquet", "ring8")
    table = pq.read_table(tmp_path / "p.parquet")
    pq.write_table(change(table), tmp_path / "bad.parquet")
    with pytest.raises(DatasetFileError, match=says):
        read_judgements(tmp_path / "bad.parquet")


def test_stats_and_export_name_the_damaged_rows_they_leave_out(tmp_path, capsys):
    import sqlite3

    db = tmp_path / "a.sqlite"
    with PreferenceStore(db) as store:
        store.add_many(_judgements("ring8"))
    con = sqlite3.connect(db)
    con.execute("UPDATE judgements SET choice = 'maybe' WHERE id = 2")
    con.commit()
    con.close()
    for args in (["feedback", "stats"], ["feedback", "export", "--out",
                                         str(tmp_path / "p.parquet")]):
        assert main([*args, "--db", str(db)]) == 0
        assert "warning: 1 damaged row skipped: row 2" in capsys.readouterr().err
