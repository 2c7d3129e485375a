"""core.feedback.preferences: round trips, pair targets, validation, refusing foreign files
without touching them, crash safety under SIGKILL, and concurrent adds."""
from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.feedback.preferences import (
    CHOICES,
    SCHEMA_VERSION,
    Judgement,
    PreferenceStore,
    PreferenceStoreError,
    default_path,
)

ROOT = Path(__file__).resolve().parents[1]


def image_judgement(k=2, choice="left", judge="person", data="mnist5k", channels=False, seed=0):
    rng = np.random.default_rng(seed)
    shape = (k, 1, 8, 8) if channels else (k, 8, 8)
    return Judgement(samples=rng.integers(0, 256, size=shape, dtype=np.uint8),
                     z=rng.standard_normal((k, 16)).astype(np.float32),
                     choice=choice, judge=judge, generator="abc123", step=100, data=data)


def point_judgement(choice="left", judge="oracle:ring", seed=0):
    rng = np.random.default_rng(seed)
    return Judgement(samples=rng.standard_normal((2, 2)).astype(np.float32),
                     z=rng.standard_normal((2, 4)).astype(np.float32),
                     choice=choice, judge=judge, generator="def456", step=7, data="ring8")


@pytest.fixture
def store(tmp_path):
    s = PreferenceStore(tmp_path / "sub" / "prefs.sqlite")
    yield s
    s.close()


def assert_same(stored: Judgement, original: Judgement) -> None:
    for field in ("samples", "z"):
        a, b = getattr(stored, field), getattr(original, field)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    for field in ("choice", "judge", "generator", "step", "data"):
        assert getattr(stored, field) == getattr(original, field)


# ---------------------------------------------------------------- round trips and pairs

def test_round_trip_images_and_points(store):
    originals = [image_judgement(2, "left"), image_judgement(4, "best:2", channels=True, seed=1),
                 point_judgement("tie")]
    ids = [store.add(j) for j in originals]
    assert ids == sorted(ids) and len(set(ids)) == 3
    stored = store.judgements()
    assert [j.id for j in stored] == ids
    for s, o in zip(stored, originals):
        assert_same(s, o)
        assert s.time > 0
    assert [j.data for j in store.judgements(data="ring8")] == ["ring8"]
    assert len(store.judgements(judge="person")) == 2


def test_reopen_keeps_everything(tmp_path):
    path = tmp_path / "p.sqlite"
    with PreferenceStore(path) as s:
        s.add(image_judgement())
        s.add_many([point_judgement(seed=i) for i in range(5)])
    with PreferenceStore(path) as s:
        assert s.count() == 6
        assert_same(s.judgements()[0], image_judgement())


def test_pairs_for_every_choice():
    expected = {"left": [(0, 1, 1.0)], "right": [(0, 1, 0.0)], "tie": [(0, 1, 0.5)], "skip": []}
    for choice in CHOICES:
        assert image_judgement(2, choice).pairs() == expected[choice]
    for i in range(4):
        pairs = image_judgement(4, f"best:{i}").pairs()
        assert pairs == [(i, j, 1.0) for j in range(4) if j != i]
    assert image_judgement(4, "skip").pairs() == []


def test_training_pairs_shapes_and_values(store):
    j_left = image_judgement(2, "left", seed=1)
    j_tie = image_judgement(2, "tie", seed=2)
    j_best = image_judgement(4, "best:3", seed=3)
    store.add_many([j_left, image_judgement(2, "skip"), j_tie, j_best, image_judgement(4, "skip")])
    store.add(point_judgement("right"))
    a, b, p = store.training_pairs(data="mnist5k")
    assert a.shape == b.shape == (5, 8, 8) and p.shape == (5,)
    assert a.dtype == b.dtype == p.dtype == np.float32
    np.testing.assert_allclose(p, [1.0, 0.5, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(a[0], j_left.samples[0] / 127.5 - 1, atol=1e-6)
    np.testing.assert_allclose(b[0], j_left.samples[1] / 127.5 - 1, atol=1e-6)
    for n, other in enumerate((0, 1, 2)):
        np.testing.assert_allclose(a[2 + n], j_best.samples[3] / 127.5 - 1, atol=1e-6)
        np.testing.assert_allclose(b[2 + n], j_best.samples[other] / 127.5 - 1, atol=1e-6)
    assert a.min() >= -1 and a.max() <= 1
    pa, pb, pp = store.training_pairs(data="ring8")
    assert pa.shape == (1, 2) and pp.tolist() == [0.0]
    np.testing.assert_array_equal(pa[0], point_judgement("right").samples[0])
    with pytest.raises(PreferenceStoreError, match="different sample shapes"):
        store.training_pairs()
    ea, eb, ep = store.training_pairs(data="nothing")
    assert ea.shape == eb.shape == ep.shape == (0,)


# ---------------------------------------------------------------- undo, count, csv

def test_undo_last_and_count(store):
    store.add(image_judgement(judge="ann", choice="left"))
    store.add(image_judgement(judge="bob", choice="skip"))
    store.add(image_judgement(judge="ann", choice="skip"))
    store.add(image_judgement(judge="bob", choice="tie"))
    assert store.count() == 4 and store.count(usable_only=True) == 2
    assert store.count(judge="ann") == 2 and store.count(judge="ann", usable_only=True) == 1
    undone = store.undo_last(judge="ann")
    assert undone.judge == "ann" and undone.choice == "skip" and undone.id == 3
    assert store.count() == 3
    undone = store.undo_last()
    assert undone.judge == "bob" and undone.choice == "tie"
    assert [j.id for j in store.judgements()] == [1, 2]
    assert store.undo_last(judge="nobody") is None
    store.undo_last()
    store.undo_last()
    assert store.undo_last() is None and store.count() == 0


def test_csv_export(store):
    store.add(image_judgement(4, "best:1", channels=True))
    store.add(point_judgement("right", judge="=cmd()"))
    rows = list(csv.DictReader(io.StringIO(store.to_csv().decode("utf-8"))))
    assert len(rows) == 2
    assert {"id", "time", "judge", "data", "generator", "step", "choice", "k", "sample_shape"} <= set(rows[0])
    assert rows[0]["k"] == "4" and rows[0]["sample_shape"] == "1x8x8" and rows[0]["choice"] == "best:1"
    assert rows[1]["sample_shape"] == "2" and rows[1]["judge"].endswith("=cmd()")
    assert rows[0]["time"].startswith("20") and "T" in rows[0]["time"]
    assert not rows[1]["judge"].startswith("=")


# ---------------------------------------------------------------- validation

def bad(**changes) -> Judgement:
    j = image_judgement()
    fields = {f: getattr(j, f) for f in ("samples", "z", "choice", "judge", "generator", "step", "data")}
    fields.update(changes)
    return Judgement(**fields)


@pytest.mark.parametrize("field,judgement", [
    ("samples", bad(samples=np.zeros((2, 8, 8), np.float64))),
    ("samples", bad(samples=np.zeros((3, 8, 8), np.uint8), z=np.zeros((3, 16), np.float32))),
    ("samples", bad(samples=np.zeros((2, 8), np.uint8))),
    ("samples", bad(samples=[[0, 1], [2, 3]])),
    ("samples", bad(samples=np.array([[0, np.nan], [1, 2]], np.float32))),
    ("samples", bad(samples=np.zeros((2, 3), np.float32))),
    ("z", bad(z=np.zeros((3, 16), np.float32))),
    ("z", bad(z=np.zeros((2, 16), np.float64))),
    ("z", bad(z=np.full((2, 16), np.inf, np.float32))),
    ("choice", bad(choice="best:1")),
    ("choice", bad(choice="middle")),
    ("choice", bad(samples=np.zeros((4, 8, 8), np.uint8), z=np.zeros((4, 16), np.float32), choice="left")),
    ("choice", bad(samples=np.zeros((4, 8, 8), np.uint8), z=np.zeros((4, 16), np.float32), choice="best:4")),
    ("judge", bad(judge="")),
    ("judge", bad(judge="  ")),
    ("generator", bad(generator=None)),
    ("data", bad(data=3)),
    ("step", bad(step=-1)),
    ("step", bad(step=1.5)),
])
def test_bad_judgement_names_the_field(store, field, judgement):
    with pytest.raises(PreferenceStoreError, match=rf"\b{field}\b") as info:
        store.add(judgement)
    assert "\n" not in str(info.value)
    assert store.count() == 0


def test_add_many_is_all_or_nothing(store):
    with pytest.raises(PreferenceStoreError, match="judge"):
        store.add_many([image_judgement(), bad(judge="")])
    assert store.count() == 0


# ---------------------------------------------------------------- foreign and broken files

def refuses_untouched(path: Path, match: str) -> None:
    before = path.read_bytes()
    listing = sorted(os.listdir(path.parent))
    with pytest.raises(PreferenceStoreError, match=match) as info:
        PreferenceStore(path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == listing


def test_corrupt_file_untouched(tmp_path):
    path = tmp_path / "random.sqlite"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    refuses_untouched(path, "not an SQLite file")
    short = tmp_path / "short.sqlite"
    short.write_bytes(b"SQLite format 3\x00")
    refuses_untouched(short, "not an SQLite file")


@pytest.mark.parametrize("wal", [False, True])
def test_foreign_sqlite_untouched(tmp_path, wal):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("CREATE TABLE orders (n INTEGER)")
    conn.execute("INSERT INTO users VALUES ('x')")
    conn.commit()
    conn.close()
    refuses_untouched(path, "not a GAN RL Lab preference database .*orders, users.*choose another file")


def test_newer_schema_untouched(tmp_path):
    path = tmp_path / "prefs.sqlite"
    with PreferenceStore(path) as s:
        s.add(image_judgement())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    refuses_untouched(path, f"newer .*schema {SCHEMA_VERSION + 1}")


def test_unusable_paths(tmp_path):
    with pytest.raises(PreferenceStoreError, match="folder"):
        PreferenceStore(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PreferenceStoreError, match="Not a directory|cannot create"):
        PreferenceStore(blocker / "prefs.sqlite")
    assert blocker.read_text() == "x"


def test_empty_file_becomes_a_store(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    with PreferenceStore(path) as s:
        s.add(point_judgement())
        assert s.count() == 1


def test_closed_store_and_default_path(tmp_path, monkeypatch):
    s = PreferenceStore(tmp_path / "p.sqlite")
    s.close()
    s.close()
    with pytest.raises(PreferenceStoreError, match="closed"):
        s.count()
    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path / "ck"))
    assert default_path() == tmp_path / "ck" / "preferences.sqlite"
    monkeypatch.delenv("GANLAB_CHECKPOINT_DIR")
    assert default_path() == Path("checkpoints") / "preferences.sqlite"


def test_core_does_not_import_streamlit():
    code = "import sys, core.feedback.preferences; sys.exit('streamlit' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# ---------------------------------------------------------------- crash safety and threads

WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from core.feedback.preferences import Judgement, PreferenceStore
store = PreferenceStore(sys.argv[2])
rng = np.random.default_rng()
while True:
    j = Judgement(samples=rng.integers(0, 256, (4, 1, 16, 16), dtype=np.uint8),
                  z=rng.standard_normal((4, 32)).astype(np.float32), choice="best:0",
                  judge="oracle:crash", generator="g", step=1, data="mnist5k")
    print(store.add(j), flush=True)
"""


def run_and_kill(path: Path, at_least: int = 20) -> list[int]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = []
    deadline = time.monotonic() + 30
    try:
        while len(printed) < at_least and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=30)
    printed += [int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]
    assert len(printed) >= at_least, err
    return printed


def test_sigkill_loses_no_committed_row(tmp_path):
    path = tmp_path / "crash.sqlite"
    printed = []
    for _ in range(3):
        printed += run_and_kill(path)
        with PreferenceStore(path) as s:
            ids = {j.id for j in s.judgements()}
            assert set(printed) <= ids
            assert s.count() >= len(printed)
            a, b, p = s.training_pairs()
            assert len(p) == 3 * s.count()


def test_two_threads_add_concurrently(store):
    errors = []

    def worker(name):
        try:
            for i in range(50):
                store.add(point_judgement(judge=name, seed=i))
        except Exception as e:   # surface in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.count() == 100
    assert store.count(judge="t0") == store.count(judge="t1") == 50
