"""Files written whole or not at all, and untrusted files read with a bound."""
from __future__ import annotations

import os
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
