"""`python -m core train`: one run in this process, with a progress line on stderr;
Ctrl-C or SIGTERM stops it, saves a checkpoint and exits 130; --resume continues a
checkpoint's run."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from core.cli.args import _configured, add_run_options, build_config, load_checkpoint, overrides
from core.cli.checkpoints import scatter_png
from core.cli.checks import UsageError, check_out_dir
from core.engine.rules import RULES
from core.io.checkpoint import config_of
from core.io.saved_points import resume_note


class Progress:
    """A one-line progress bar with steps/s and the latest losses (stderr)."""

    def __init__(self, total: int) -> None:
        self.total, self.start, self.last = total, time.perf_counter(), 0.0
        self.tty = sys.stderr.isatty()

    def update(self, step: int, values: dict, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        frac = step / self.total if self.total else 0.0
        bar = "#" * int(frac * 30)
        rate = values.get("steps_per_s", float("nan"))
        line = (f"[{bar:<30}] {step}/{self.total} {rate:7.0f} steps/s  "
                f"d_loss {values['d_loss']:.3f}  g_loss {values['g_loss']:.3f}")
        print(("\r" if self.tty else "") + line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from core.engine.trainer import Trainer

    out = check_out_dir("--out", args.out)
    if args.resume:
        trainer = _trainer_from_checkpoint(args.resume, args, out)
    else:
        cfg = build_config(args)
        if not cfg.steps:
            raise UsageError("--steps must be a positive number of steps")
        trainer = Trainer(cfg, run_id=Path(os.path.abspath(out)).name, run_dir=out)
        trainer.take_snapshot()
    cfg = trainer.cfg
    if trainer.data.skipped:
        print(f"skipped {trainer.data.skipped} file(s) of {cfg.data_root}: "
              f"{', '.join(trainer.data.skipped_names[:10])}", file=sys.stderr)
    if trainer.data.note:   # user points: how they were scaled
        print(f"data: {trainer.data.note}", file=sys.stderr)
    interrupted = []
    # Ctrl-C and SIGTERM (a scheduler, `kill`) both stop the loop, save and exit 130
    previous = {sig: signal.signal(sig, lambda *_: interrupted.append(True))
                for sig in STOP_SIGNALS}
    try:
        out.mkdir(parents=True, exist_ok=True)  # after the handler: Ctrl-C from here saves
    except BaseException:
        _restore(previous)
        raise
    every = cfg.eval_every
    if every and trainer.step_count < cfg.steps:  # no UI waits: build the classifier now
        trainer.quality.prepare(log=lambda msg: print(msg, file=sys.stderr, flush=True))
    progress = Progress(cfg.steps)
    last: dict = {}

    def on_step(values: dict) -> None:
        last.update(values)
        progress.update(trainer.step_count, values)

    try:
        trainer.run_here(on_step=on_step, should_stop=lambda: bool(interrupted) or (
            trainer.status.state == "diverged"))
        if last:
            progress.update(trainer.step_count, last, force=True)
    finally:
        _restore(previous)
        progress.close()
    diverged = trainer.status.state == "diverged"
    if diverged:
        print(trainer.status.message, file=sys.stderr)
    write_run_outputs(trainer, out)
    path = trainer.save_checkpoint()
    print(f"{'interrupted; ' if interrupted else ''}{'diverged; ' if diverged else ''}"
          f"saved {path}")
    saved_best = trainer.save_best(out)
    if saved_best:
        print(saved_best)
    return 130 if interrupted else (1 if diverged else 0)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


# On --resume the checkpoint's data stream and weights continue, so these cannot change.
FIXED_ON_RESUME = ("data", "data_root", "seed")


def _trainer_from_checkpoint(path: str, args, out: Path):
    from core.engine.trainer import Trainer

    if args.config:
        raise UsageError("--config and --resume do not mix: a resumed run keeps its "
                         "checkpoint's config; change single settings with flags or --set")
    changes = overrides(args)
    if not changes.get("steps"):
        raise UsageError("--steps must be a positive number of steps")
    state = load_checkpoint(path)
    if state.get("kind") == "arena":
        raise UsageError(f"{path} is an arena checkpoint; extract an arm first")
    at = int(state["step"])
    if changes["steps"] <= at:   # --steps is the total: 2000 from step 3000 trains nothing
        raise UsageError(f"--steps is the run's total budget and {path} is already at step "
                         f"{at:,}: use --steps {at + changes['steps']} to train "
                         f"{changes['steps']:,} more steps")
    saved = config_of(state)
    fixed = [f"--{k.replace('_', '-')} {changes[k]!r} (the checkpoint has "
             f"{getattr(saved, k)!r})" for k in FIXED_ON_RESUME
             if k in changes and changes[k] != getattr(saved, k)]
    if fixed:
        raise UsageError(f"--resume continues the checkpoint's run, so its data and seed "
                         f"cannot change: {'; '.join(fixed)}. Leave the flag out, or start a "
                         "new run without --resume")
    for key in FIXED_ON_RESUME:
        changes.pop(key, None)
    rule = changes.pop("rule", None)
    trainer = _configured(lambda: Trainer.from_checkpoint(
        state, rule=rule, run_id=Path(os.path.abspath(out)).name, run_dir=out, **changes))
    if note := resume_note(state):   # the CSV moved or changed: its saved points are used
        print(note, file=sys.stderr)
    return trainer


def write_run_outputs(trainer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.csv").write_bytes(trainer.log.to_csv())
    (out / "config.json").write_text(json.dumps(trainer.cfg.to_dict(), indent=2))
    snap = trainer.take_snapshot()
    if snap.png is not None:
        (out / "samples.png").write_bytes(snap.png)
    else:
        (out / "samples.png").write_bytes(scatter_png(trainer.data, snap.points))


def add_train(sub: argparse._SubParsersAction) -> None:
    """Register `train`."""
    train = sub.add_parser("train", help="train one run")
    add_run_options(train)
    train.add_argument("--rule", choices=list(RULES))
    train.add_argument("--resume", help="continue from this checkpoint")
    train.set_defaults(func=cmd_train)
