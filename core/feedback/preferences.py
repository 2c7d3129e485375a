"""Preference store: human (or oracle) judgements of generated samples, in one SQLite file.

Why SQLite in WAL mode with a commit per add: a click must never be lost, even if the
Streamlit server is killed mid-write, and the UI, simulated oracles and the reward-model
trainer all read the same single file. Why BLOB + dtype + shape columns: arrays come back
byte-exact and a shared or downloaded file can never run code (no pickle).

Why the careful open: the path is user-chosen, so a wrong file (random bytes, another
program's SQLite database, a newer schema) is refused with a one-line error and never
written to. Our files carry PRAGMA application_id = APPLICATION_ID and
PRAGMA user_version = SCHEMA_VERSION.

Why reads check every row: the file may have been edited by hand or by another tool, so
each row read is checked by the very rules add() applies (validate, validate_blind). A
damaged row is left out and described ("row 17: z must be finite ..."), never raised:
a few bad rows must not make the good ones unusable, and no NaN reaches a reward model.

Schema 1: one table
    judgements(id, time, judge, generator, step, data, choice, k,
               samples, samples_dtype, samples_shape, z, z_dtype, z_shape)
Schema 2 adds
    blind_tests(id, time, judge, data, base, base_generator, base_step, new,
                new_generator, new_step, new_side, choice, reward_model, model_choice,
                samples, samples_dtype, samples_shape)
a person's blind test of a fine-tuned generator against its base, kept apart from
judgements so it never becomes reward-model training data. Schema 3 adds
    judgements.round (0 for everything judged before a fine-tune; round r judges the
    samples of the generator fine-tuned r times, so the reward model sees its exploits)
An older file is upgraded in place (one transaction) the first time it is opened.
Arrays are stored little-endian; shapes as JSON lists.
"""
from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import sqlite3
import tempfile
import threading
import time as _time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from core.base.files import plain_cell

SCHEMA_VERSION = 4
APPLICATION_ID = 0x474C5046          # "GLPF": GAN Lab PreFerences
CHOICES = ("left", "right", "tie", "skip")
BEST_CHOICES = tuple(f"best:{i}" for i in range(4)) + ("skip",)
PAIR_P = {"left": 1.0, "right": 0.0, "tie": 0.5}

_MAGIC = b"SQLite format 3\x00"
_TABLE = "judgements"
_BLIND = "blind_tests"
_TABLES = {1: [_TABLE], **{v: sorted([_TABLE, _BLIND]) for v in (2, 3, 4)}}
_DTYPES = {"uint8": np.dtype("<u1"), "float32": np.dtype("<f4")}
_META = ("id", "time", "judge", "generator", "step", "data", "choice", "k", "round",
         "criterion")
_BLOBS = ("samples", "samples_dtype", "samples_shape", "z", "z_dtype", "z_shape")
_COLUMNS = _META + _BLOBS
_ADDED_IN = {"round": 3, "criterion": 4}   # columns a file of an older schema lacks until its upgrade
_CREATE = f"""CREATE TABLE {_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    judge TEXT NOT NULL,
    generator TEXT NOT NULL,
    step INTEGER NOT NULL,
    data TEXT NOT NULL,
    choice TEXT NOT NULL,
    k INTEGER NOT NULL,
    samples BLOB NOT NULL,
    samples_dtype TEXT NOT NULL,
    samples_shape TEXT NOT NULL,
    z BLOB NOT NULL,
    z_dtype TEXT NOT NULL,
    z_shape TEXT NOT NULL,
    round INTEGER NOT NULL DEFAULT 0,
    criterion TEXT NOT NULL DEFAULT '')"""
_BLIND_META = ("id", "time", "judge", "data", "base", "base_generator", "base_step", "new",
               "new_generator", "new_step", "new_side", "choice", "reward_model",
               "model_choice")
_BLIND_COLUMNS = _BLIND_META + ("samples", "samples_dtype", "samples_shape")
_CREATE_BLIND = f"""CREATE TABLE IF NOT EXISTS {_BLIND} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    judge TEXT NOT NULL,
    data TEXT NOT NULL,
    base TEXT NOT NULL,
    base_generator TEXT NOT NULL,
    base_step INTEGER NOT NULL,
    new TEXT NOT NULL,
    new_generator TEXT NOT NULL,
    new_step INTEGER NOT NULL,
    new_side TEXT NOT NULL,
    choice TEXT NOT NULL,
    reward_model TEXT NOT NULL,
    model_choice TEXT,
    samples BLOB NOT NULL,
    samples_dtype TEXT NOT NULL,
    samples_shape TEXT NOT NULL)"""
_INSERT_BLIND = (f"INSERT INTO {_BLIND} ({', '.join(_BLIND_COLUMNS[1:])}) "
                 f"VALUES ({', '.join('?' * (len(_BLIND_COLUMNS) - 1))})")
_INSERT = (f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS[1:])}) "
           f"VALUES ({', '.join('?' * (len(_COLUMNS) - 1))})")
_CSV_HEADER = ("id", "time", "judge", "data", "generator", "step", "choice", "k",
               "sample_shape", "latent_dim", "round", "criterion")
MAX_TEXT = 1000           # characters in a name or label: real ones are far shorter
MAX_CRITERION = 200       # characters of a criterion: one question, shown above the pair
MAX_STEP = 10**12         # training steps: beyond any run, well inside SQLite's integers
MAX_TIME = 32503680000.0  # 3000-01-01 UTC: a later time is a damaged clock or row
BUSY_TIMEOUT_S = 10.0     # how long a write waits for another program's lock


class PreferenceStoreError(ValueError):
    """One-line message: what is wrong and how to fix it (the UI shows it as is)."""


def default_path() -> Path:
    """Next to the checkpoints, so one folder holds everything a lab session made."""
    return Path(os.environ.get("GANLAB_CHECKPOINT_DIR", "checkpoints")) / "preferences.sqlite"


def choices_for(k: int) -> tuple[str, ...]:
    """Valid choices for k shown samples (empty for an unsupported k)."""
    return {2: CHOICES, 4: BEST_CHOICES}.get(k, ())


@dataclass(frozen=True, eq=False)   # eq=False: arrays have no truth value; identity equality
class Judgement:
    """One comparison exactly as the judge saw it; the reward model learns from pairs()."""
    samples: np.ndarray   # uint8 (k, H, W) / (k, C, H, W) images, or float32 (k, 2) points
    z: np.ndarray         # (k, latent_dim) float32
    choice: str           # k == 2: left/right/tie/skip; k == 4: best:<i>/skip
    judge: str            # "person", a user name, or "oracle:<name>"
    generator: str        # generator fingerprint
    step: int             # generator training step
    data: str             # data set name
    time: float = 0.0     # unix time; 0 -> set by add()
    id: int | None = None # row id once stored
    round: int = 0        # feedback round (0: before any fine-tune on this feedback)
    criterion: str = ""   # what the judge was asked ("Which looks more like a 7?")

    def pairs(self) -> list[tuple[int, int, float]]:
        """(i, j, p): p = probability that sample i beats sample j (Bradley-Terry targets)."""
        if self.choice in PAIR_P:
            return [(0, 1, PAIR_P[self.choice])]
        if self.choice == "skip":
            return []
        best = _best_index(self.choice)
        if best is None:
            raise _invalid("choice", f"{self.choice!r} is not a valid choice")
        return [(best, j, 1.0) for j in range(int(self.samples.shape[0])) if j != best]


@dataclass(frozen=True, eq=False)
class BlindJudgement:
    """One blind-test comparison: a sample of the base and of the new (fine-tuned)
    generator, on independent z, shown left/right in random order. The person never sees
    which is which; `new_side` records it."""
    samples: np.ndarray   # (2, ...) as shown: [left, right]; same dtypes as Judgement
    new_side: str         # "left" / "right": where the new generator's sample was
    choice: str           # left/right/tie/skip, as for a pair
    judge: str
    data: str
    base: str             # the generators as the page labels them ("file run/step_9.pt")
    base_generator: str   # fingerprints of their weights
    base_step: int
    new: str
    new_generator: str
    new_step: int
    reward_model: str = ""          # fingerprint of the reward model loaded, "" if none
    model_choice: str | None = None # the side that model scored higher
    time: float = 0.0
    id: int | None = None

    @property
    def outcome(self) -> str:
        return blind_outcome(self.choice, self.new_side)


def blind_outcome(choice: str, new_side: str) -> str:
    """For the new generator: win / loss / tie / skip."""
    if choice in ("tie", "skip"):
        return choice
    return "win" if choice == new_side else "loss"


# ---------------------------------------------------------------- validation

_INVALID = "invalid judgement: "


def _invalid(field: str, problem: str) -> PreferenceStoreError:
    return PreferenceStoreError(f"{_INVALID}{field} {problem}")


def _shown(value) -> str:
    """A value for an error line: its repr, cut short (a damaged row may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _best_index(choice: str) -> int | None:
    if isinstance(choice, str) and choice in BEST_CHOICES[:-1]:
        return int(choice[5:])
    return None


def validate(j: Judgement) -> None:
    """Refuse bad data at the door: the reward model must never train on a malformed row."""
    if not isinstance(j, Judgement):
        raise PreferenceStoreError(f"invalid judgement: expected a Judgement, got {type(j).__name__}")
    k = _check_samples(j.samples)
    _check_z(j.z, k)
    _check_choice(j.choice, k)
    for field in ("judge", "generator", "data"):
        _check_text(field, getattr(j, field))
    _check_step(j.step)
    _check_time(j.time)
    if not _is_int(j.round) or not 0 <= j.round <= 1000:
        raise _invalid("round", f"must be an integer from 0 to 1000, got {_shown(j.round)}")
    if not isinstance(j.criterion, str) or len(j.criterion) > MAX_CRITERION:
        raise _invalid("criterion", f"must be text of at most {MAX_CRITERION} characters, "
                                    f"got {_shown(j.criterion)}")


def validate_blind(j: BlindJudgement) -> None:
    if not isinstance(j, BlindJudgement):
        raise PreferenceStoreError(f"invalid blind judgement: expected a BlindJudgement, "
                                   f"got {type(j).__name__}")
    if _check_samples(j.samples) != 2:
        raise _invalid("samples", "of a blind test must hold 2 samples")
    _check_choice(j.choice, 2)
    if j.new_side not in ("left", "right"):
        raise _invalid("new_side", f"must be 'left' or 'right', got {_shown(j.new_side)}")
    for field in ("judge", "data", "base", "base_generator", "new", "new_generator"):
        _check_text(field, getattr(j, field))
    _check_step(j.base_step, "base_step")
    _check_step(j.new_step, "new_step")
    if not isinstance(j.reward_model, str) or len(j.reward_model) > MAX_TEXT:
        raise _invalid("reward_model", f"must be a string of at most {MAX_TEXT} characters, "
                                       f"got {_shown(j.reward_model)}")
    allowed = (None, "left", "right") if j.reward_model else (None,)
    if j.model_choice not in allowed:
        raise _invalid("model_choice", f"must be one of {allowed} with reward_model "
                                       f"{_shown(j.reward_model)}, got {_shown(j.model_choice)}")
    _check_time(j.time)


def _check_samples(s) -> int:
    if not isinstance(s, np.ndarray):
        raise _invalid("samples", f"must be a numpy array, got {type(s).__name__}")
    if s.dtype == np.uint8:
        if s.ndim not in (3, 4):
            raise _invalid("samples", f"uint8 images must be (k, H, W) or (k, C, H, W), got shape {s.shape}")
    elif s.dtype == np.float32:
        if s.ndim != 2 or s.shape[1] != 2:
            raise _invalid("samples", f"float32 points must have shape (k, 2), got {s.shape}")
        if not np.isfinite(s).all():
            raise _invalid("samples", "points must be finite (found NaN or inf)")
    else:
        raise _invalid("samples", f"dtype must be uint8 (images) or float32 (points), got {s.dtype}")
    if s.shape[0] not in (2, 4):
        raise _invalid("samples", f"must hold k = 2 or 4 samples, got k = {s.shape[0]}")
    if 0 in s.shape:
        raise _invalid("samples", f"has an empty dimension, shape {s.shape}")
    return int(s.shape[0])


def _check_z(z, k: int) -> None:
    if not isinstance(z, np.ndarray) or z.dtype != np.float32:
        got = z.dtype if isinstance(z, np.ndarray) else type(z).__name__
        raise _invalid("z", f"must be a float32 numpy array, got {got}")
    if z.ndim != 2 or z.shape[0] != k or z.shape[1] < 1:
        raise _invalid("z", f"must have shape ({k}, latent_dim) to match the {k} samples, got {z.shape}")
    if not np.isfinite(z).all():
        raise _invalid("z", "must be finite (found NaN or inf)")


def _check_choice(choice, k: int) -> None:
    if not isinstance(choice, str) or choice not in choices_for(k):
        raise _invalid("choice", f"{_shown(choice)} is not valid for k = {k}; use one of "
                                 f"{', '.join(choices_for(k))}")


def _check_text(field: str, value) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise _invalid(field, f"must be a non-empty string of at most {MAX_TEXT} characters, "
                              f"got {_shown(value)}")


def _is_int(n) -> bool:
    return isinstance(n, numbers.Integral) and not isinstance(n, bool)


def _check_step(step, field: str = "step") -> None:
    if not _is_int(step) or not 0 <= step <= MAX_STEP:
        raise _invalid(field, f"must be an integer from 0 to {MAX_STEP:,}, got {_shown(step)}")


def _check_time(t) -> None:
    if (not isinstance(t, numbers.Real) or isinstance(t, bool) or not math.isfinite(t)
            or not 0 <= t <= MAX_TIME):
        raise _invalid("time", f"must be a unix time from 0 (= now) to {MAX_TIME:.0f} "
                               f"(year 3000), got {_shown(t)}")


# ---------------------------------------------------------------- array <-> row

def _encode(arr: np.ndarray) -> tuple[bytes, str, str]:
    name = "uint8" if arr.dtype == np.uint8 else "float32"
    blob = np.ascontiguousarray(arr, dtype=_DTYPES[name]).tobytes()
    return blob, name, json.dumps([int(n) for n in arr.shape])


def _decode(blob, dtype_name, shape_text, field) -> np.ndarray:
    """Bytes back to an array, refusing a blob that disagrees with its dtype/shape."""
    dt = _DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    shape = _parse_shape(shape_text)
    if (dt is None or shape is None or not isinstance(blob, bytes)
            or math.prod(shape) * dt.itemsize != len(blob)):
        raise _invalid(field, "does not match its dtype and shape columns")
    return np.frombuffer(blob, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))


def _parse_shape(text) -> tuple[int, ...] | None:
    """A JSON list of 1 to 4 sizes, each at least 1 (samples are (k, C, H, W) at most,
    and never empty): the blob's length then bounds the array, and the text's length
    keeps a hand-written '[[[[...' from exhausting json's recursion."""
    if not isinstance(text, str) or len(text) > 100:
        return None
    try:
        shape = json.loads(text)
    except ValueError:
        return None
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 4
            or not all(type(n) is int and n >= 1 for n in shape)):
        return None
    return tuple(shape)


def _to_row(j: Judgement) -> tuple:
    return (float(j.time), j.judge, j.generator, int(j.step), j.data, j.choice,
            int(j.samples.shape[0]), int(j.round), j.criterion, *_encode(j.samples),
            *_encode(j.z))


def _from_row(row) -> Judgement:
    """A stored row back to a Judgement, checked by validate() as an add is: a row
    edited by hand must not bring a wrong type or a NaN past the store."""
    id_, t, judge, generator, step, data, choice, k, round_, criterion, *blobs = row
    s, sd, ss, z, zd, zs = blobs
    j = Judgement(samples=_decode(s, sd, ss, "samples"), z=_decode(z, zd, zs, "z"),
                  choice=choice, judge=judge, generator=generator, step=step, data=data,
                  time=t, id=id_, round=round_, criterion=criterion)
    validate(j)
    if k != len(j.samples):
        raise _invalid("k", f"is {_shown(k)} but the row holds {len(j.samples)} samples")
    return j


def _stamped(j: Judgement) -> Judgement:
    validate(j)
    return replace(j, time=_time.time()) if j.time == 0 else j


def _blind_row(j: BlindJudgement) -> tuple:
    validate_blind(j)
    t = _time.time() if j.time == 0 else float(j.time)
    return (t, j.judge, j.data, j.base, j.base_generator, int(j.base_step), j.new,
            j.new_generator, int(j.new_step), j.new_side, j.choice, j.reward_model,
            j.model_choice, *_encode(j.samples))


def _from_blind_row(row) -> BlindJudgement:
    """As _from_row, checked by validate_blind()."""
    (id_, t, judge, data, base, base_g, base_step, new, new_g, new_step, new_side, choice,
     model, model_choice, s, sd, ss) = row
    j = BlindJudgement(samples=_decode(s, sd, ss, "samples"), new_side=new_side,
                       choice=choice, judge=judge, data=data, base=base,
                       base_generator=base_g, base_step=base_step, new=new,
                       new_generator=new_g, new_step=new_step, reward_model=model,
                       model_choice=model_choice, time=t, id=id_)
    validate_blind(j)
    return j


def _sound(rows, from_row, skipped: list[str] | None, what: str = "row"):
    """The rows that pass validation, lazily; each other one is left out and described
    as 'row 17: z must be finite ...' in skipped: a few bad rows must not make the good
    ones unusable."""
    for row in rows:
        try:
            j = from_row(row)
        except PreferenceStoreError as e:
            if skipped is not None:
                skipped.append(f"{what} {row[0]}: {str(e).removeprefix(_INVALID)}")
            continue
        yield j


def skipped_line(skipped: list[str], shown: int = 3) -> str:
    """One line for a caller to report: '2 damaged rows skipped: row 17: ...; row 18:
    ...' (each row once, the first `shown` named); '' for none."""
    rows = list(dict.fromkeys(skipped))
    if not rows:
        return ""
    more = f"; and {len(rows) - shown} more" if len(rows) > shown else ""
    noun = "row" if len(rows) == 1 else "rows"
    return (f"{len(rows)} damaged {noun} skipped: {'; '.join(rows[:shown])}{more} "
            f"(delete {'it' if len(rows) == 1 else 'them'} or restore a backup)")


def _as_float(samples: np.ndarray) -> np.ndarray:
    """What the reward model sees: images in [-1, 1] like the generator's output."""
    if samples.dtype == np.uint8:
        return samples.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return samples.astype(np.float32)


def _where(usable_only=False, **equal) -> tuple[str, list]:
    """WHERE for column = value filters (None: any); column names are ours, never input."""
    parts, args = [], []
    for column, value in equal.items():
        if value is not None:
            parts.append(f"{column} = ?")
            args.append(value)
    if usable_only:
        parts.append("choice != 'skip'")
    return (" WHERE " + " AND ".join(parts) if parts else ""), args


# ---------------------------------------------------------------- opening safely

def _open(path: Path) -> sqlite3.Connection:
    """Create, or open only a file that is provably ours; never write to anyone else's."""
    _ensure_exists(path)
    _check_header(path)
    _check_schema(_connect_ro(path), path, close=True)
    conn = _connect_rw(path)
    try:
        version = _check_schema(conn, path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if version < SCHEMA_VERSION:
            _upgrade(conn, path)
    except sqlite3.Error as e:
        conn.close()
        raise _sqlite_error(path, e, f"cannot open {path} ({e}); check the path and its "
                                     "permissions") from e
    except BaseException:
        conn.close()
        raise
    return conn


def _ensure_exists(path: Path) -> None:
    if path.is_dir():
        raise PreferenceStoreError(f"{path} is a folder; choose a file path such as {path / 'preferences.sqlite'}")
    if path.exists() and not path.is_file():   # _create would os.replace the device itself
        raise PreferenceStoreError(f"{path} is not a regular file (a device or FIFO); choose "
                                   "a file path such as checkpoints/preferences.sqlite")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = None
    except OSError as e:
        raise PreferenceStoreError(f"cannot read {path} ({e.strerror or e}); check the path and its permissions") from e
    if not size:
        _create(path, replace_empty=size == 0)


def _create(path: Path, replace_empty: bool) -> None:
    """Build the database in a temp file and publish it atomically: no half-made file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".preferences-", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise PreferenceStoreError(f"cannot create {path} ({e.strerror or e}); choose another path") from e
    os.close(fd)
    try:
        _init_schema(tmp)
        _publish(tmp, path, replace_empty)
    except (OSError, sqlite3.Error) as e:
        raise PreferenceStoreError(f"cannot create {path} ({e}); choose another path") from e
    finally:
        for leftover in (tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def _init_schema(tmp: str) -> None:
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("BEGIN")
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute(_CREATE)
        conn.execute(_CREATE_BLIND)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def _publish(tmp: str, path: Path, replace_empty: bool) -> None:
    """Link, not rename, so a file another process created meanwhile is kept, not replaced."""
    if replace_empty:
        if path.stat().st_size == 0:
            os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        return
    except OSError:           # file system without hard links
        if not path.exists():
            os.replace(tmp, path)


def _check_header(path: Path) -> None:
    """Refuse non-SQLite and foreign files from their header bytes, before SQLite sees them."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as e:
        raise PreferenceStoreError(f"cannot read {path} ({e.strerror or e}); check the path and its permissions") from e
    if len(head) < 100 or not head.startswith(_MAGIC):
        raise PreferenceStoreError(f"{path} is not a GAN RL Lab preference database (it is not an SQLite file); "
                                   f"choose another file")
    app_id = int.from_bytes(head[68:72], "big")
    version = int.from_bytes(head[60:64], "big")
    if app_id != APPLICATION_ID:
        raise PreferenceStoreError(_foreign_message(path, _tables_immutable(path), version))
    if version > SCHEMA_VERSION:
        raise PreferenceStoreError(_newer_message(path, version))


def _tables_immutable(path: Path) -> list[str] | None:
    """Table names read with immutable=1, which creates no -wal/-shm and takes no locks."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            return _tables(conn)
        finally:
            conn.close()
    except (sqlite3.Error, ValueError, OSError):
        return None


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY name")
    return [r[0] for r in rows]


def _foreign_message(path: Path, tables: list[str] | None, version: int) -> str:
    if tables and _TABLE in tables and version > SCHEMA_VERSION:
        return _newer_message(path, version)
    has = ("its tables cannot be read" if tables is None
           else f"it has tables {', '.join(tables)}" if tables else "it has no tables")
    return f"{path} is not a GAN RL Lab preference database ({has}); choose another file"


def _newer_message(path: Path, version: int) -> str:
    return (f"{path} was written by a newer GAN RL Lab (preference schema {version}; this version "
            f"reads {SCHEMA_VERSION}); update the lab or choose another file")


def _connect_ro(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        raise _sqlite_error(path, e, f"cannot open {path} ({e}); check the path and its "
                                     "permissions") from e


def _connect_rw(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as e:
        raise _sqlite_error(path, e, f"cannot open {path} ({e}); check the path and its "
                                     "permissions") from e


# SQLite's primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF)
_BUSY, _LOCKED, _READONLY, _FULL = 5, 6, 8, 13


def _sqlite_error(path: Path, e: sqlite3.Error, otherwise: str) -> PreferenceStoreError:
    """One line for what SQLite refused: a lock, a read-only file or folder and a full
    disk each have their own fix, so `otherwise` (e.g. 'not a readable SQLite
    database') is said only when it is none of them."""
    code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (_BUSY, _LOCKED):
        return PreferenceStoreError(
            f"{path} is locked: another program holds a write lock on it ({e}); close that "
            f"program or wait until it is done, then retry")
    if code == _READONLY:
        return PreferenceStoreError(_read_only_message(path, e))
    if code == _FULL:
        return PreferenceStoreError(
            f"the disk holding {path} is full ({e}): this change was not saved, and nothing "
            f"saved before it was lost; free some space and retry")
    return PreferenceStoreError(otherwise)


def _read_only_message(path: Path, e: sqlite3.Error) -> str:
    """Say which is not writable: the file (reading still works), or its folder, where
    SQLite must create the -wal and -shm files it needs even to read."""
    folder = path.parent
    file_ro = not os.access(path, os.W_OK)
    if not os.access(folder, os.W_OK):
        which = "the file and its folder" if file_ro else "its folder"
        verb = "are" if file_ro else "is"
        return (f"{path} is read-only ({which} {folder} {verb} not writable, and SQLite keeps "
                f"its -wal and -shm files there): judgements cannot be saved to it; make the "
                f"folder writable or copy the file to a writable folder")
    why = "the file is not writable" if file_ro else f"SQLite cannot write it: {e}"
    return (f"{path} is read-only ({why}): judgements cannot be saved to it, though reading "
            f"it may still work; make it writable or choose another file")


def _check_schema(conn: sqlite3.Connection, path: Path, close: bool = False) -> int:
    """The header said ours; confirm through SQLite (which also sees the WAL). Returns
    the schema version (an older one is upgraded by _upgrade)."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = _tables(conn)
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({_TABLE})")}
        blind = {r[1] for r in conn.execute(f"PRAGMA table_info({_BLIND})")}
    except sqlite3.Error as e:
        raise _sqlite_error(path, e, f"{path} is not a readable SQLite database ({e}); "
                                     "choose another file") from e
    finally:
        if close:
            conn.close()
    if app_id != APPLICATION_ID:
        raise PreferenceStoreError(_foreign_message(path, tables, version))
    if version > SCHEMA_VERSION:
        raise PreferenceStoreError(_newer_message(path, version))
    needed = {c for c in _COLUMNS if _ADDED_IN.get(c, 0) <= version}
    if (tables != _TABLES.get(version) or not needed <= columns
            or (_BLIND in tables and not set(_BLIND_COLUMNS) <= blind)):
        raise PreferenceStoreError(f"{path} is a damaged GAN RL Lab preference database (schema {version}, "
                                   f"tables {', '.join(tables) or 'none'}); restore a backup or choose another file")
    return version


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Schema 1 -> 2: add the blind_tests table; 2 -> 3: add judgements.round; 3 -> 4:
    add judgements.criterion. One
    transaction, re-checked inside it, so two processes opening one old file upgrade it
    once."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 1:
                conn.execute(_CREATE_BLIND)
            if version < 3:
                conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN round INTEGER NOT NULL DEFAULT 0")
            if version < 4:
                conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN criterion TEXT NOT NULL "
                             "DEFAULT ''")
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as e:
        raise _sqlite_error(path, e, f"cannot upgrade {path} to preference schema "
                                     f"{SCHEMA_VERSION} ({e}); check that the file is "
                                     "writable") from e


# ---------------------------------------------------------------- the store

class PreferenceStore:
    """Judgements in one SQLite file. One connection shared under a lock, because Streamlit
    serves sessions from several threads; every add commits before returning."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = _open(self.path)

    def __enter__(self) -> "PreferenceStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PreferenceStore({str(self.path)!r})"

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise PreferenceStoreError(f"the preference store {self.path} is closed; open it again")
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise _sqlite_error(self.path, e, f"preference database {self.path} failed "
                                                  f"({e}); check the disk and retry") from e

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it is committed, or none of it (also when COMMIT
        itself fails, on a full disk say)."""
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def add(self, j: Judgement) -> int:
        """Store one click, committed before returning; returns the row id."""
        return self.add_many([j])[0]

    def add_many(self, js: Iterable[Judgement]) -> list[int]:
        """Many judgements in one transaction (fast for oracles); all validated first."""
        rows = [_to_row(_stamped(j)) for j in js]
        if not rows:
            return []
        with self._write() as conn:
            return [int(conn.execute(_INSERT, row).lastrowid) for row in rows]

    def undo_last(self, judge: str | None = None) -> Judgement | None:
        """Take back a mis-click: delete and return the newest row (of that judge)."""
        return self._delete_newest(_TABLE, _COLUMNS, _from_row, judge)

    def _delete_newest(self, table: str, columns, from_row, judge: str | None):
        """Damaged rows are passed over: a person's undo means their last sound click."""
        where, args = _where(judge=judge)
        with self._write() as conn:
            cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table}{where} "
                                  f"ORDER BY id DESC", args)
            j = next(_sound(cursor, from_row, None), None)
            cursor.close()
            if j is not None:
                conn.execute(f"DELETE FROM {table} WHERE id = ?", (j.id,))
        return j

    def count(self, judge: str | None = None, usable_only: bool = False) -> int:
        """usable_only: judgements that give training pairs (not skips). Counts rows as
        stored, damaged ones too (see damaged())."""
        where, args = _where(judge=judge, usable_only=usable_only)
        with self._locked() as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {_TABLE}{where}", args).fetchone()[0])

    def tally(self, judge: str | None = None, data: str | None = None,
              criterion: str | None = None) -> dict[str, int]:
        """What a counter should say: training pairs (a best-of-k click gives k - 1),
        skips apart, and rows; counted in SQL (rows as stored: see damaged())."""
        where, args = _where(judge=judge, data=data, criterion=criterion)
        with self._locked() as conn:
            pairs, skips, rows = conn.execute(
                "SELECT COALESCE(SUM(CASE WHEN choice IN ('left', 'right', 'tie') THEN 1 "
                "WHEN choice LIKE 'best:%' THEN MAX(k - 1, 0) ELSE 0 END), 0), "
                f"COALESCE(SUM(choice = 'skip'), 0), COUNT(*) FROM {_TABLE}{where}",
                args).fetchone()
        return {"pairs": int(pairs), "skips": int(skips), "rows": int(rows)}

    def judgements(self, judge: str | None = None, data: str | None = None,
                   skipped: list[str] | None = None,
                   criterion: str | None = None) -> list[Judgement]:
        """Oldest first (insertion order). Damaged rows are left out; each is described
        in `skipped` if given (skipped_line() makes the line to report)."""
        return self._select(skipped, judge=judge, data=data, criterion=criterion)

    def random_pair(self, judge: str, data: str, criterion: str) -> Judgement | None:
        """One earlier two-sample judgement of this judge, data set and criterion, at
        random (to show again, sides swapped: a consistency check); None if there is none."""
        where, args = _where(judge=judge, data=data, criterion=criterion, k=2,
                             usable_only=True)
        with self._locked() as conn:
            rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE}{where} "
                                "ORDER BY RANDOM() LIMIT 1", args).fetchall()
        return next(_sound(rows, _from_row, None), None)

    def criteria(self, data: str | None = None) -> dict[str, int]:
        """Each criterion judged (of a data set) with its number of rows, most first."""
        where, args = _where(data=data)
        with self._locked() as conn:
            rows = conn.execute(f"SELECT criterion, COUNT(*) FROM {_TABLE}{where} GROUP BY "
                                "criterion ORDER BY COUNT(*) DESC", args).fetchall()
        return {c: int(n) for c, n in rows if isinstance(c, str)}   # damaged rows: not one

    def _select(self, skipped: list[str] | None, **filters) -> list[Judgement]:
        where, args = _where(**filters)
        with self._locked() as conn:
            rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE}{where} ORDER BY id", args).fetchall()
        return list(_sound(rows, _from_row, skipped))

    def damaged(self) -> list[str]:
        """'row 17: z must be finite (found NaN or inf)' for each row that reads leave
        out, judgements and blind tests: what a page or command reports."""
        skipped: list[str] = []
        self.judgements(skipped=skipped)
        self.blind_judgements(skipped=skipped)
        return skipped

    def training_pairs(self, data: str | None = None, judge: str | None = None,
                       shape: tuple[int, ...] | None = None, skipped: list[str] | None = None,
                       criterion: str | None = None, exclude: tuple[str, ...] = ()
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a, b, p) for a Bradley-Terry reward model (of one judge's judgements, and one
        criterion's, if given); with no pairs, three empty (0,) arrays. shape: one
        sample's shape as the data set shows it; rows of another shape are skipped like
        damaged ones."""
        a, b, p = [], [], []
        for j in self._select(skipped, judge=judge, data=data, usable_only=True,
                              criterion=criterion):
            if j.judge in exclude:   # e.g. below a chosen self-agreement
                continue
            if shape is not None and j.samples.shape[1:] != tuple(shape):
                if skipped is not None:
                    skipped.append(f"row {j.id}: samples of shape {j.samples.shape[1:]} do not "
                                   f"fit {data} (its samples are {tuple(shape)})")
                continue
            x = _as_float(j.samples)
            for i, k, prob in j.pairs():
                a.append(x[i])
                b.append(x[k])
                p.append(prob)
        if not p:
            empty = np.zeros((0,), np.float32)
            return empty, empty.copy(), empty.copy()
        shapes = sorted({x.shape for x in a})
        if len(shapes) > 1:
            raise PreferenceStoreError(f"judgements have different sample shapes {shapes}; "
                                       f"pass data=<name> to train on one data set")
        return np.stack(a), np.stack(b), np.asarray(p, dtype=np.float32)

    # -- blind tests ------------------------------------------------------------------
    def add_blind(self, j: BlindJudgement) -> int:
        """Store one blind-test click, committed before returning; returns the row id."""
        row = _blind_row(j)
        with self._write() as conn:
            return int(conn.execute(_INSERT_BLIND, row).lastrowid)

    def blind_judgements(self, judge: str | None = None, base: str | None = None,
                         new: str | None = None, skipped: list[str] | None = None
                         ) -> list[BlindJudgement]:
        """Oldest first; filtered by judge and the two generators' labels. Damaged rows
        are left out, as by judgements()."""
        where, args = _where(judge=judge, base=base, new=new)
        with self._locked() as conn:
            rows = conn.execute(f"SELECT {', '.join(_BLIND_COLUMNS)} FROM {_BLIND}{where} "
                                f"ORDER BY id", args).fetchall()
        return list(_sound(rows, _from_blind_row, skipped, "blind test row"))

    def undo_last_blind(self, judge: str | None = None) -> BlindJudgement | None:
        """Take back a blind-test mis-click (of that judge); pairs are untouched."""
        return self._delete_newest(_BLIND, _BLIND_COLUMNS, _from_blind_row, judge)

    def to_csv(self) -> bytes:
        """A spreadsheet-friendly log (no pixels), UTF-8; damaged rows are left out
        (damaged() lists them)."""
        return _csv(_CSV_HEADER, [_csv_row(j) for j in self.judgements()])

    def blind_csv(self) -> bytes:
        """The blind tests as a spreadsheet-friendly log (no pixels), UTF-8, with each
        click's outcome for the fine-tuned generator (win / loss / tie / skip)."""
        return _csv(_BLIND_META + ("outcome",),
                    [[_iso(j.time) if c == "time" else getattr(j, c) for c in _BLIND_META]
                     + [j.outcome] for j in self.blind_judgements()])

    def close(self) -> None:
        """Idempotent; later calls raise PreferenceStoreError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _csv_row(j: Judgement) -> list:
    return [j.id, _iso(j.time), j.judge, j.data, j.generator, j.step, j.choice,
            len(j.samples), "x".join(str(n) for n in j.samples.shape[1:]), j.z.shape[1],
            j.round, j.criterion]


def _csv(header, rows) -> bytes:
    """UTF-8 CSV with every text cell made plain: a name typed as =cmd() must not run
    as a formula in a spreadsheet (numbers stay numbers)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([plain_cell(v) if isinstance(v, str) else v for v in row] for row in rows)
    return out.getvalue().encode("utf-8")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")
