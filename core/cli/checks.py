"""Checks of command-line input before anything runs: config JSON, numbers, paths.

Each failure is a UsageError with one line saying what is wrong and how to fix it;
the CLI prints it and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


# Limits on JSON read from --config and --set: a config is shallow and its numbers small.
JSON_MAX_DEPTH = 16
JSON_MAX_INT = 10**18


CONFIG_MAX_BYTES = 2**20   # a config is a few hundred bytes


def _config_text(path: str) -> str:
    """The file's text; a FIFO or device (reading it could block or never end) or an
    oversized file is refused before it is opened."""
    if os.path.exists(path) and not os.path.isdir(path):
        if not os.path.isfile(path):
            raise UsageError(f"--config {path}: not a regular file; give a JSON config file")
        if os.path.getsize(path) > CONFIG_MAX_BYTES:
            raise UsageError(f"--config {path}: over {CONFIG_MAX_BYTES // 2**20} MB, too "
                             "big for a config; give a JSON config (TrainConfig.to_dict())")
    return Path(path).read_text()


def read_config_file(path: str) -> dict:
    """The JSON object of a --config file, or a UsageError saying what is wrong."""
    try:
        raw = json.loads(_config_text(path))
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not a text file; give a JSON config "
                         "(TrainConfig.to_dict())") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config {path}: not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    except (RecursionError, ValueError) as exc:  # deep nesting; integers of > 4300 digits
        raise UsageError(f"--config {path}: not a usable JSON config ("
                         f"{one_line(exc) or type(exc).__name__})") from None
    problem = json_problem(raw)
    if problem:
        raise UsageError(f"--config {path}: {problem}")
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: a config must be a JSON object, "
                         f"got {type(raw).__name__}")
    if "rule_options" in raw:
        raise UsageError(f"--config {path}: unknown config field rule_options; give rule "
                         "options under the rule's name, e.g. \"reinforce\": {...}")
    return raw


def json_problem(value) -> str | None:
    """Why a parsed JSON value is no config value (too deep, a huge number), or None."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > JSON_MAX_DEPTH:
            return f"nested more than {JSON_MAX_DEPTH} levels deep"
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) > JSON_MAX_INT:
            return f"a number with {len(str(abs(item)))} digits is too large"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- command-line value types: one-line errors from argparse, sizes that fit ----------
SEED_MAX = 2**31 - 1
INT_MAX = 10**18     # larger than any count the engine takes; keeps floats finite


def as_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # not a number, or more than 4300 digits
        raise argparse.ArgumentTypeError(f"invalid int value: {short(text)!r}") from None
    if abs(value) > INT_MAX:
        raise argparse.ArgumentTypeError(f"{short(text)} is too large; use at most "
                                         f"{INT_MAX:.0e} in size")
    return value


def as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {short(text)!r}") from None


def as_seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {short(text)!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{short(text)} is out of range; use an integer "
                                         f"in [0, {SEED_MAX}]")
    return value


# -- output paths, checked before anything runs ----------------------------------------
def _existing_ancestor(path: Path) -> Path:
    for parent in (path, *path.parents):
        if os.path.lexists(parent):
            return parent
    return Path(".")


def _check_creatable(flag: str, path: Path, shown: str | None = None) -> None:
    """The folders up to `path` can be created: the nearest existing one is a writable
    folder and every new name fits the file system. `shown`: the path as given."""
    base = _existing_ancestor(path)
    path = shown if shown is not None else path
    if not os.path.isdir(base):
        raise UsageError(f"{flag} {path}: {base} is not a directory, so nothing can be "
                         "created under it; choose another path")
    try:
        fs = os.statvfs(base)
    except OSError:
        fs = None
    if fs is not None and fs.f_flag & os.ST_RDONLY:
        raise UsageError(f"{flag} {path}: {base} is on a read-only file system; choose "
                         "another path")
    if (fs is not None and fs.f_blocks == 0
            and os.path.realpath(base).startswith(("/proc", "/sys"))):  # no new files there
        raise UsageError(f"{flag} {path}: {base} is on a virtual file system (like /proc "
                         "or /sys) where no files can be written; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {base} is not writable; choose another path")
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
        path_max = os.pathconf(base, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    if any(len(os.fsencode(part)) > name_max for part in Path(path).parts):
        raise UsageError(f"{flag}: a name in {short(str(path))} is longer than "
                         f"{name_max} bytes; choose a shorter one")
    if len(os.fsencode(os.path.abspath(path))) >= path_max:
        raise UsageError(f"{flag}: {short(str(path))} is longer than {path_max} bytes")


def check_out_dir(flag: str, text: str) -> Path:
    """A run folder: an existing writable directory, or one that can be created."""
    if not text.strip():
        raise UsageError(f"{flag} is empty; name a run folder, e.g. {flag} runs/ring8")
    path = Path(text)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {text}: exists and is not a directory; name a run folder")
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {text}: the directory is not writable; choose another")
    _check_creatable(flag, path)
    return path


def check_out_file(flag: str, text: str) -> Path:
    """A file to write: not a directory, and its folder exists or can be created."""
    if not text.strip():
        raise UsageError(f"{flag} is empty; name the file to write")
    path = Path(text)
    if os.path.isdir(path) or text.endswith("/"):
        raise UsageError(f"{flag} {text}: is a directory; name a file in it instead")
    if os.path.exists(path) and not os.path.isfile(path):   # an atomic save would replace
        raise UsageError(f"{flag} {text}: not a regular file (a device or FIFO); name a "
                         "file to write")                    # the device itself (as root)
    _check_creatable(flag, path.parent, shown=text)
    try:
        name_max = os.pathconf(_existing_ancestor(path.parent), "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) > name_max:
        raise UsageError(f"{flag}: the file name is longer than {name_max} bytes; "
                         "choose a shorter one")
    return path
