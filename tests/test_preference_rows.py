"""Hostile preference rows: a store edited by hand (raw sqlite3 UPDATEs here) is read
row by row through the rules add() uses, so damaged rows are left out and described,
the good ones still load, export and train a reward model, and no NaN gets through;
a locked, read-only or full database and a file that is no database each get their
own one-line message; every CSV cell a spreadsheet could run as a formula is made
plain."""
from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli.main import main
from core.data.datasets import load_by_name
from core.feedback import preferences
from core.feedback.loop import pairs_from_store
from core.feedback.preferences import (
    BlindJudgement,
    Judgement,
    PreferenceStore,
    PreferenceStoreError,
    skipped_line,
)
from core.feedback.reward_model import load_reward_model, train_reward_model

ROOT = Path(__file__).resolve().parents[1]
N = 30   # good rows per store: enough pairs for a reward model


def point(seed: int, **fields) -> Judgement:
    """A ring8 pair judged by 'the sample further right wins'."""
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal((2, 2)).astype(np.float32)
    choice = "left" if samples[0, 0] > samples[1, 0] else "right"
    values = dict(samples=samples, z=rng.standard_normal((2, 4)).astype(np.float32),
                  choice=choice, judge="oracle:right", generator="g1", step=7, data="ring8")
    return Judgement(**{**values, **fields})


def blind(seed: int, **fields) -> BlindJudgement:
    rng = np.random.default_rng(seed)
    values = dict(samples=rng.standard_normal((2, 2)).astype(np.float32), new_side="left",
                  choice="left", judge="person", data="ring8", base="file a.pt",
                  base_generator="aaa", base_step=1, new="file b.pt", new_generator="bbb",
                  new_step=2)
    return BlindJudgement(**{**values, **fields})


def good_store(tmp_path: Path, n: int = N, blinds: int = 0) -> Path:
    path = tmp_path / "prefs.sqlite"
    with PreferenceStore(path) as s:
        s.add_many([point(i) for i in range(n)])
        for i in range(blinds):
            s.add_blind(blind(i))
    return path


def corrupt(path: Path, sql: str, *params) -> None:
    """What a hand edit does: a raw UPDATE, past every check of the store."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def csv_rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


NAN_Z = np.full((2, 4), np.nan, np.float32).tobytes()
INF_POINTS = np.array([[np.inf, 0], [1, 2]], np.float32).tobytes()

# (the raw UPDATE of row 3, its parameters, what the skip message says)
DAMAGE = [
    ("step = 'abc'", (), r"step must be an integer"),
    ("step = -5", (), r"step must be an integer .* got -5"),
    ("step = 4611686018427387904", (), r"step must be an integer from 0 to"),
    ("round = -1", (), r"round must be an integer from 0 to 1000"),
    ("round = 5000", (), r"round must be an integer from 0 to 1000"),
    ("time = 'yesterday'", (), r"time must be a unix time"),
    ("time = 9e999", (), r"time must be a unix time .* got inf"),
    ("time = 1e30", (), r"time must be a unix time"),
    ("choice = 'up'", (), r"choice 'up' is not valid for k = 2"),
    ("choice = 'best:1'", (), r"choice 'best:1' is not valid for k = 2"),
    ("judge = x'00ff'", (), r"judge must be a non-empty string"),
    ("judge = printf('%.*c', 100000, 'a')", (), r"judge must be a non-empty string of at most 1000"),
    ("generator = '   '", (), r"generator must be a non-empty string"),
    ("data = x'01'", (), r"data must be a non-empty string"),   # a blob stays a blob
    ("z = ?", (NAN_Z,), r"z must be finite"),
    ("samples = ?", (INF_POINTS,), r"samples points must be finite"),
    ("samples_dtype = 'float64'", (), r"samples does not match its dtype and shape"),
    ("samples = 'hello'", (), r"samples does not match its dtype and shape"),
    ("samples = zeroblob(7)", (), r"samples does not match its dtype and shape"),
    ("samples_shape = '[2, \"2\"]'", (), r"samples does not match its dtype and shape"),
    ("samples_shape = printf('%.*c', 100000, '[')", (), r"samples does not match its dtype"),
    ("samples_shape = '[1,1,1,1,1,2,2]'", (), r"samples does not match its dtype and shape"),
    ("samples_shape = '[0, 1099511627776, 1099511627776]', samples = x''", (),
     r"samples does not match its dtype and shape"),
    ("samples_shape = '[4, 1]'", (), r"samples float32 points must have shape \(k, 2\)"),
    ("z_shape = '[4, 2]'", (), r"z must have shape \(2, latent_dim\)"),
    ("z_dtype = 'uint8', z_shape = '[2, 16]'", (), r"z must be a float32 numpy array"),
    ("k = 4", (), r"k is 4 but the row holds 2 samples"),
]


@pytest.mark.parametrize("change, params, problem", DAMAGE,
                         ids=[d[0][:40] for d in DAMAGE])
def test_a_damaged_row_is_left_out_and_named_and_the_rest_still_works(tmp_path, change,
                                                                       params, problem):
    path = good_store(tmp_path)
    corrupt(path, f"UPDATE judgements SET {change} WHERE id = 3", *params)
    with PreferenceStore(path) as s:
        skipped: list[str] = []
        rows = s.judgements(skipped=skipped)
        assert [j.id for j in rows] == [i for i in range(1, N + 1) if i != 3]
        assert len(skipped) == 1 and skipped[0].startswith("row 3: ")
        assert re.search(problem, skipped[0]), skipped[0]
        assert "\n" not in skipped[0] and len(skipped[0]) < 300   # a huge value is cut short
        assert s.damaged() == skipped
        line = skipped_line(skipped)
        assert line.startswith("1 damaged row skipped: row 3: ") and "\n" not in line
        assert [r["id"] for r in csv_rows(s.to_csv())] == [str(j.id) for j in rows]
        skipped = []
        a, b, p = pairs_from_store(s, load_by_name("ring8"), skipped=skipped)
        assert len(p) == N - 1 and set(skipped) <= set(s.damaged())   # row 3 may not be ring8's
        assert torch.isfinite(a).all() and torch.isfinite(b).all()


def test_a_nan_row_never_reaches_the_reward_model_and_the_good_rows_train(tmp_path):
    path = good_store(tmp_path, n=60)
    corrupt(path, "UPDATE judgements SET samples = ? WHERE id IN (5, 9)",
            np.full((2, 2), np.nan, np.float32).tobytes())
    data = load_by_name("ring8")
    with PreferenceStore(path) as s:
        skipped: list[str] = []
        a, b, p = pairs_from_store(s, data, skipped=skipped)
    assert len(p) == 58 and torch.isfinite(a).all() and torch.isfinite(b).all()
    assert skipped_line(skipped).startswith("2 damaged rows skipped: row 5: samples points "
                                            "must be finite")
    model = train_reward_model(a, b, p, data, features="raw", members=2, max_epochs=40)
    out = model.save(tmp_path / "rm.pt")
    loaded = load_reward_model(out)
    assert torch.isfinite(loaded.score(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))).all()


def test_samples_of_another_data_set_are_left_out_of_its_training_pairs(tmp_path):
    path = good_store(tmp_path)
    # a well-formed image row that claims to be ring8 (and one of the wrong image size)
    corrupt(path, "UPDATE judgements SET samples = zeroblob(32), samples_dtype = 'uint8', "
                  "samples_shape = '[2, 4, 4]' WHERE id = 4")
    with PreferenceStore(path) as s:
        assert len(s.judgements()) == N and s.damaged() == []   # sound as a row
        skipped: list[str] = []
        a, b, p = pairs_from_store(s, load_by_name("ring8"), skipped=skipped)
    assert len(p) == N - 1 and a.shape == (N - 1, 2)
    assert skipped == ["row 4: samples of shape (4, 4) do not fit ring8 (its samples are (2,))"]


def test_undo_passes_over_a_damaged_newest_row(tmp_path):
    path = good_store(tmp_path, n=3)
    corrupt(path, "UPDATE judgements SET choice = 'up' WHERE id = 3")
    with PreferenceStore(path) as s:
        gone = s.undo_last()
        assert gone.id == 2 and s.count() == 2          # the damaged row 3 stays, to be seen
        assert [j.id for j in s.judgements()] == [1]
        assert s.damaged() == ["row 3: choice 'up' is not valid for k = 2; use one of "
                               "left, right, tie, skip"]


@pytest.mark.parametrize("change, problem", [
    ("new_side = 'up'", "new_side must be 'left' or 'right'"),
    ("model_choice = 'left'", "model_choice must be one of (None,)"),
    ("base_step = 'x'", "base_step must be an integer"),
    ("new_step = -3", "new_step must be an integer"),
    ("samples = zeroblob(3)", "samples does not match"),
    ("time = -1.0", "time must be a unix time"),
    ("reward_model = printf('%.*c', 5000, 'r')", "reward_model must be a string of at most"),
])
def test_damaged_blind_tests_are_left_out_of_the_page_and_its_csv(tmp_path, change, problem):
    path = good_store(tmp_path, n=1, blinds=4)
    corrupt(path, f"UPDATE blind_tests SET {change} WHERE id = 4")
    with PreferenceStore(path) as s:
        skipped: list[str] = []
        assert [j.id for j in s.blind_judgements(skipped=skipped)] == [1, 2, 3]
        assert skipped == [s.damaged()[0]] and skipped[0].startswith(f"blind test row 4: {problem}")
        assert [r["id"] for r in csv_rows(s.blind_csv())] == ["1", "2", "3"]
        assert s.undo_last_blind().id == 3              # the damaged newest one is passed over


def test_many_damaged_rows_make_one_short_line():
    rows = [f"row {i}: z must be finite (found NaN or inf)" for i in range(1, 8)]
    line = skipped_line(rows + rows[:2])                # each row counted once
    assert line.startswith("7 damaged rows skipped: row 1: z must be finite")
    assert "; and 4 more (delete them or restore a backup)" in line
    assert skipped_line([]) == ""


def test_add_refuses_what_a_read_would_skip(tmp_path):
    with PreferenceStore(tmp_path / "p.sqlite") as s:
        for j, field in [(point(0, judge="x" * 1001), "judge"),
                         (point(0, step=10**13), "step"),
                         (point(0, time=1e30), "time")]:
            with pytest.raises(PreferenceStoreError, match=rf"^invalid judgement: {field} ") as info:
                s.add(j)
            assert len(str(info.value)) < 300
        assert s.count() == 0


# -- the CLI: one line and a non-zero exit, or success with the damaged rows named ---------
def reward_train(db: Path, out: Path, *extra: str) -> int:
    return main(["reward", "train", "--db", str(db), "--out", str(out), "--features", "raw",
                 *extra])


def test_reward_train_skips_damaged_rows_and_writes_a_loadable_model(tmp_path, capsys):
    path = good_store(tmp_path, n=60)
    corrupt(path, "UPDATE judgements SET samples = ? WHERE id = 7",
            np.full((2, 2), np.nan, np.float32).tobytes())
    corrupt(path, "UPDATE judgements SET step = 'abc' WHERE id = 8")
    corrupt(path, "UPDATE judgements SET samples_shape = printf('%.*c', 5000, '[') WHERE id = 9")
    corrupt(path, "UPDATE judgements SET data = 'no-such-set' WHERE id = 10")
    out = tmp_path / "rm.pt"
    assert reward_train(path, out) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warning == [warning[0]] and warning[0].startswith(
        "warning: 4 damaged rows skipped: row 7: samples points must be finite")
    assert "and 1 more" in warning[0]
    model = load_reward_model(out)
    assert model.metrics["pairs"] == 56 and model.data == "ring8"


def test_reward_train_with_only_damaged_rows_says_so_in_one_line(tmp_path, capsys):
    path = good_store(tmp_path, n=5)
    corrupt(path, "UPDATE judgements SET z = ?", NAN_Z)
    assert reward_train(path, tmp_path / "rm.pt") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "holds no usable judgements" in err and "5 damaged rows skipped: row 1: z must be" in err
    assert not (tmp_path / "rm.pt").exists()


def test_reward_train_with_too_few_pairs_left_names_the_damaged_rows(tmp_path, capsys):
    path = good_store(tmp_path, n=12)
    corrupt(path, "UPDATE judgements SET choice = 'sideways' WHERE id <= 4")
    assert reward_train(path, tmp_path / "rm.pt", "--data", "ring8") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: 8 usable pairs: a reward model needs at least 10")
    assert "; 4 damaged rows skipped: row 1: choice 'sideways'" in err


# -- locked, read-only, full, and not a database: each its own message ----------------------
@pytest.fixture
def quick_locks(monkeypatch):
    monkeypatch.setattr(preferences, "BUSY_TIMEOUT_S", 0.1)


def test_a_write_lock_held_by_another_program_is_named_and_loses_nothing(tmp_path, quick_locks):
    path = good_store(tmp_path, n=2)
    other = sqlite3.connect(path, isolation_level=None)
    with PreferenceStore(path) as s:
        other.execute("BEGIN EXCLUSIVE")
        assert len(s.judgements()) == 2                      # WAL: reading still works
        with pytest.raises(PreferenceStoreError) as info:
            s.add(point(9))
        message = str(info.value)
        assert message.startswith(f"{path} is locked: another program holds a write lock")
        assert "close that program or wait" in message and "not a readable" not in message
        other.execute("ROLLBACK")
        s.add(point(9))
        assert s.count() == 3
    other.close()


def test_opening_a_database_another_program_has_locked(tmp_path, quick_locks):
    path = good_store(tmp_path, n=2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=DELETE")   # a rollback-journal lock blocks readers too
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(PreferenceStoreError, match=r"is locked: another program holds a "
                                                       r"write lock .*; close that program"):
            PreferenceStore(path)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with PreferenceStore(path) as s:
        assert s.count() == 2


def test_a_full_disk_says_so_and_loses_nothing(tmp_path):
    path = good_store(tmp_path, n=2)
    with PreferenceStore(path) as s:
        pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
        s._conn.execute(f"PRAGMA max_page_count = {pages}")   # the file may not grow: full
        with pytest.raises(PreferenceStoreError) as info:
            s.add_many([point(i) for i in range(200)])
        assert str(info.value) == (
            f"the disk holding {path} is full (database or disk is full): this change was "
            "not saved, and nothing saved before it was lost; free some space and retry")
        assert s.count() == 2 and not s._conn.in_transaction
        s._conn.execute(f"PRAGMA max_page_count = {10**6}")   # space freed: saving works
        s.add(point(9))
        assert s.count() == 3


def test_a_damaged_database_file_is_still_not_a_readable_database(tmp_path):
    path = good_store(tmp_path, n=2)
    with open(path, "r+b") as f:   # keep the 100-byte header (ours), wreck the schema page
        f.seek(100)
        f.write(os.urandom(3000))
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    with pytest.raises(PreferenceStoreError, match=r"is not a readable SQLite database \("):
        PreferenceStore(path)


READ_ONLY_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from core.feedback.preferences import Judgement, PreferenceStore, PreferenceStoreError
    try:
        s = PreferenceStore(sys.argv[1])
    except PreferenceStoreError as e:
        print("open:", e)
        raise SystemExit
    print("read:", len(s.judgements()))
    j = Judgement(samples=np.zeros((2, 2), np.float32), z=np.zeros((2, 4), np.float32),
                  choice="left", judge="j", generator="g", step=1, data="ring8")
    try:
        s.add(j)
        print("add: ok")
    except PreferenceStoreError as e:
        print("add:", e)
""")


@pytest.fixture
def shared_dir(tmp_path):
    """A folder another user can reach: as root, permissions do not stop us, so the
    store is opened by a child process running as nobody."""
    if os.geteuid() != 0:
        yield tmp_path / "shared"
        return
    folder = Path(tempfile.mkdtemp(prefix="prefs-ro-"))
    folder.chmod(0o777)
    yield folder / "shared"
    shutil.rmtree(folder, ignore_errors=True)


def as_another_user(path: Path) -> list[str]:
    """READ_ONLY_SCRIPT's lines, run as nobody when we are root (setpriv: a process
    started with subprocess's user= cannot reach this venv's python here)."""
    command = [sys.executable, "-c", READ_ONLY_SCRIPT, str(path)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("no setpriv to run a process as another user")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0 and "Permission denied" in done.stderr and "core" not in done.stderr:
        pytest.skip(f"cannot run python as another user here: {done.stderr.strip()}")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout.splitlines()


def read_only_store(folder: Path) -> Path:
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    path = good_store(folder, n=2)
    path.chmod(0o666)
    return path


def test_a_read_only_file_reads_but_says_judgements_cannot_be_saved(shared_dir):
    path = read_only_store(shared_dir)
    path.chmod(0o444)
    try:
        assert as_another_user(path) == [
            "read: 2",
            f"add: {path} is read-only (the file is not writable): judgements cannot be saved "
            "to it, though reading it may still work; make it writable or choose another file"]
    finally:
        path.chmod(0o666)


def test_a_read_only_folder_is_named(shared_dir):
    path = read_only_store(shared_dir)
    shared_dir.chmod(0o555)
    try:
        lines = as_another_user(path)
    finally:
        shared_dir.chmod(0o777)
    assert lines == [f"open: {path} is read-only (its folder {shared_dir} is not writable, "
                     "and SQLite keeps its -wal and -shm files there): judgements cannot be "
                     "saved to it; make the folder writable or copy the file to a writable "
                     "folder"]


# -- CSV cells ---------------------------------------------------------------------------
@pytest.mark.parametrize("start", ["=", "+", "-", "@"])
def test_no_csv_cell_starts_a_formula(tmp_path, start):
    with PreferenceStore(tmp_path / "p.sqlite") as s:
        s.add(point(0, judge=f"{start}judge", data=f"{start}data",
                    generator=f"{start}gen"))
        s.add_blind(blind(0, judge=f"{start}j", data=f"{start}d", base=f"{start}b",
                          base_generator=f"{start}bg", new=f"{start}n",
                          new_generator=f"{start}ng", reward_model=f"{start}rm",
                          model_choice="right"))
        files = {"preferences.csv": s.to_csv(), "blind_tests.csv": s.blind_csv()}
    for name, data in files.items():
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        assert len(rows) == 2, name
        for header, cell in zip(rows[0], rows[1]):
            assert not cell.startswith(("=", "+", "-", "@")), (name, header, cell)
        assert f"'{start}" in rows[1][2]                 # the judge, kept readable
    assert not math.isnan(float(csv_rows(files["preferences.csv"])[0]["step"]))
