"""Headless CLI: python -m core {train,sample,info,...} --help

Every failure a user can cause ends as one line on stderr, `error: ...`, exit status 2,
never a traceback (`python -m core --debug ...` re-raises to show it). A bug prints
`error: internal error: ...` and exits 1; Ctrl-C (and SIGTERM during train) exits 130.

Each group of commands has its own module, which also registers its subparsers:
train.py (train), checkpoints.py (sample, eval, extract, animate, info), compare.py
(compare, sweep), feedback.py (feedback simulate, reward train); args.py holds what
they share. A command's heavy modules load only when it runs.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from core.base.registry import ContractError
from core.cli import checkpoints, compare, feedback, train
from core.cli.args import _Parser
from core.cli.checks import UsageError, one_line
from core.data.datasets import DataError
from core.engine.config import ConfigError
from core.feedback.preferences import PreferenceStoreError
from core.feedback.reward_model import RewardModelError
from core.io.checkpoint import CheckpointError
from core.jobs.backends import RunnerError


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="GAN RL Lab headless engine")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    # the order of `python -m core --help`
    train.add_train(sub)
    checkpoints.add_sample(sub)
    checkpoints.add_eval(sub)
    compare.add_compare(sub)
    compare.add_sweep(sub)
    checkpoints.add_extract(sub)
    feedback.add_feedback(sub)
    feedback.add_reward(sub)
    feedback.add_rounds(sub)
    feedback.add_judges(sub)
    checkpoints.add_animate(sub)
    checkpoints.add_info(sub)
    return parser


# Failures a user can cause (bad arguments, files, settings): one line, exit status 2.
USER_ERRORS = (UsageError, ConfigError, CheckpointError, DataError, PreferenceStoreError,
               RewardModelError, RunnerError, ContractError)


def _wants_debug(argv: list[str] | None) -> bool:
    """--debug among the global options (before the subcommand), for errors that come
    before (or from) parsing."""
    for arg in sys.argv[1:] if argv is None else argv:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            return False
    return False


def os_error_message(exc: OSError) -> str:
    path = exc.filename if exc.filename is not None else ""
    what = exc.strerror or one_line(exc) or type(exc).__name__
    if path == "":
        return f"{what}"
    return f"{path}: {what}; check the path (is its folder writable? does it exist?)"


@contextlib.contextmanager
def _sigint_held():
    """Hold Ctrl-C while modules load (see _HELD), then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list = []
    before = signal.signal(signal.SIGINT, lambda *_: held.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before if before is not None
                      else signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    debug = _wants_debug(argv)
    try:
        args = make_parser().parse_args(argv)
        debug = args.debug
        with _sigint_held():
            import torch

            from core.engine.trainer import torch_threads
        torch.set_num_threads(torch_threads())  # deliberate: see torch_threads()
        code = args.func(args)
        sys.stdout.flush()   # a closed pipe fails here, inside this try, not at exit
        return code
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # `... | head` stopped reading: not an error of ours
        # stdout's buffer would fail again at exit: point it at /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141   # 128 + SIGPIPE, what a shell reports for this
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:   # writing outputs: a read-only place, /proc, a name too long
        if debug:
            raise
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: say so in one line; --debug shows the traceback
        if debug:
            raise
        print(f"error: internal error: {type(exc).__name__}: {one_line(exc)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
