"""Files written whole or not at all, and untrusted files read with a bound."""
from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path


def write_atomic(data: bytes, path: str | Path) -> Path:
    """Temp file in the same folder, fsync, os.replace: a half-written file never
    replaces a good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_bounded(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most max_bytes, else OSError with one line: a
    FIFO would block, /dev/zero would never end, and a huge file would take the memory
    of every run in the process before any check could look at it."""
    # open first, then check what was opened (no race); O_NONBLOCK: opening a FIFO
    # with no writer would otherwise wait forever (regular files ignore the flag)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file (a device, FIFO or socket); "
                          f"choose a {what} file")
        if info.st_size > max_bytes:
            raise OSError(f"{path} is {info.st_size:,} bytes, more than a {what} can be "
                          f"({max_bytes:,})")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:   # grew while being read
        raise OSError(f"{path} is more than {max_bytes:,} bytes")
    return data


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def plain_cell(text: str) -> str:
    """Text a spreadsheet shows as text: a leading = + - @ (or tab, CR) would make it a
    formula (CSV injection), so such a cell gets a leading apostrophe."""
    return "'" + text if text[:1] in FORMULA_STARTS else text


def csv_bytes(frame) -> bytes:
    """A pandas frame as UTF-8 CSV with every text cell and column name made plain
    (numbers stay numbers: -1.5 is not a formula)."""
    frame = frame.rename(columns=lambda c: plain_cell(str(c)))
    text_cols = [c for c in frame.columns if frame[c].dtype == object]
    if text_cols:
        frame = frame.assign(**{c: frame[c].map(lambda v: plain_cell(v) if isinstance(v, str)
                                                else v) for c in text_cols})
    return frame.to_csv(index=False).encode()


def folder_name(text: str, limit: int = 120) -> str:
    """A file or folder name made from a value (an arm's options, a grid point): only
    letters, digits and . _ = , + - (no separators, so `../../x` stays inside), no
    leading dot, at most `limit` characters; when anything had to change, a short hash
    of the whole text keeps two different values from sharing one folder."""
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text).lstrip(".") or "_"
    if safe == text and len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{safe[:limit - 9]}-{digest}"
