"""What several commands share: the parser class (argparse errors as one-line
UsageErrors), the run options of train, compare and sweep, the TrainConfig they build
(preset or --config, then flags and --set), and loading a checkpoint for a command."""
from __future__ import annotations

import argparse
import json
import sys

from core.base.options import kind_of, option_fields
from core.cli.checks import (
    UsageError,
    as_float,
    as_int,
    as_seed,
    json_problem,
    one_line,
    read_config_file,
    short,
)
from core.data.datasets import DATASETS
from core.engine.config import DEVICE_NAMES, PRESETS, ConfigError, TrainConfig, preset
from core.engine.rules import RULES
from core.engine.schedule import LR_SCHEDULES
from core.io.checkpoint import load_with_format, old_format_note


def load_checkpoint(source):
    """checkpoint.load_checkpoint; an old .pt file also prints one note (on stderr, so
    `info` and `eval --json` stay parseable) that re-saving writes the new format."""
    state, old_format = load_with_format(source)
    if old_format:
        print(f"note: {old_format_note(str(source))}", file=sys.stderr)
    return state


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2 (argparse's default prints usage)
        raise UsageError(message)


def build_config(args: argparse.Namespace) -> TrainConfig:
    """Preset or --config file, then the explicit command-line overrides."""
    if args.config:
        raw = read_config_file(args.config)
        try:
            cfg = TrainConfig.from_dict(raw)
        except ConfigError:
            raise
        except (RecursionError, ValueError, OverflowError) as exc:  # bad values in the file
            raise UsageError(f"--config {args.config}: {one_line(exc)}") from None
        changes = overrides(args)
        return _configured(lambda: cfg.replace(**changes)) if changes else cfg
    changes = overrides(args)
    changes.setdefault("data", "mnist5k")
    return _configured(lambda: preset(args.preset, **changes))


def _configured(make) -> TrainConfig:
    try:
        return make()
    except ConfigError:
        raise
    except (RecursionError, ValueError, OverflowError) as exc:
        raise UsageError(f"bad setting: {one_line(exc)}") from None


def rule_flags() -> list[tuple[str, str, str, str]]:
    """(rule, --flag, option, help) of the flags rules declare (Rule.cli_flags)."""
    return [(name, flag, option, help_text) for name in RULES
            for flag, (option, help_text) in RULES[name].cli_flags.items()]


def _dest(flag: str) -> str:
    return "rule_flag_" + flag.lstrip("-").replace("-", "_")


def overrides(args: argparse.Namespace) -> dict:
    """The config changes given on the command line (flags and --set KEY=VALUE)."""
    out = {k: v for k, v in {
        "data": args.data, "rule": getattr(args, "rule", None), "seed": args.seed,
        "batch_size": args.batch_size, "device": args.device, "steps": args.steps,
        "data_root": args.data_root, "sample_every": args.sample_every,
        "checkpoint_every": args.checkpoint_every, "eval_every": args.eval_every,
        "grad_clip": args.grad_clip, "d_sees": args.d_sees, "g_ema": args.g_ema,
        "keep_checkpoints": args.keep_checkpoints, "lr_schedule": args.lr_schedule,
        "r1": args.r1, "pac": args.pac,
    }.items() if v is not None}
    if args.ema_samples:
        out["ema_samples"] = True
    if args.lr is not None:
        out.update({"g_opt.lr": args.lr, "d_opt.lr": args.lr})
    for rule, flag, option, _ in rule_flags():
        value = getattr(args, _dest(flag), None)
        if value is not None:
            out[f"{rule}.{option}"] = value
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {short(item)!r} must look like KEY=VALUE, e.g. "
                             "--set reinforce.sigma_start=0.05")
        if key.strip() == "rule_options":
            raise UsageError("--set rule_options: set one rule option at a time, as "
                             "--set <rule>.<option>=VALUE")
        out[key.strip()] = _value(key.strip(), value.strip())
    return out


def _value(key: str, text: str):
    """A --set value as JSON where it parses (numbers, true/false), else a string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    except (RecursionError, ValueError):  # deep nesting; integers of > 4300 digits
        raise UsageError(f"--set {key}: the value is not a usable number or JSON "
                         "value") from None
    problem = json_problem(value)
    if problem:
        raise UsageError(f"--set {key}: {problem}")
    return value


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by train and compare."""
    p.add_argument("--data", choices=list(DATASETS), help="data set (default mnist5k)")
    p.add_argument("--data-root", help="root folder for mnist / fashion-mnist / folder data; "
                                      "for points, a CSV file of x,y rows")
    p.add_argument("--preset", choices=list(PRESETS), default="source")
    p.add_argument("--config", help="JSON file with a full config (TrainConfig.to_dict())")
    p.add_argument("--steps", type=as_int, help="number of training steps")
    p.add_argument("--seed", type=as_seed)
    p.add_argument("--batch-size", type=as_int)
    p.add_argument("--lr", type=as_float, help="learning rate of both G and D")
    p.add_argument("--device", choices=DEVICE_NAMES)
    p.add_argument("--sample-every", type=as_int)
    p.add_argument("--checkpoint-every", type=as_int)
    p.add_argument("--keep-checkpoints", type=as_int,
                   help="with --checkpoint-every: keep only the newest N of those files")
    p.add_argument("--eval-every", type=as_int, help="quality metrics interval in steps; 0 = off")
    p.add_argument("--grad-clip", type=as_float, help="G gradient-norm clip, every rule alike; "
                   "0 = off (default)")
    p.add_argument("--d-sees", choices=["sample", "mean"], help="D's fake batch: what G "
                   "emitted (default) or G's mean output")
    p.add_argument("--g-ema", type=as_float, help="decay of the EMA of G's weights (default "
                   "0.995); 0 = off")
    p.add_argument("--ema-samples", action="store_true",
                   help="snapshots and quality metrics from G's EMA weights")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="both learning rates over "
                   "the step budget (--steps): constant (default), or decayed to 0")
    p.add_argument("--r1", type=as_float, help="R1 penalty weight on real data, every rule "
                   "alike; 0 = off (default)")
    p.add_argument("--pac", type=as_int, help="PacGAN packing: D scores packs of this many "
                   "samples, every rule alike (1 to 8; 1 = off, default); must divide the "
                   "batch size")
    for rule, flag, option, help_text in rule_flags():   # each rule's own flags
        kind = kind_of(next(f for f in option_fields(RULES[rule].Options) if f.name == option))
        p.add_argument(flag, dest=_dest(flag), help=help_text,
                       type={int: as_int, float: as_float}.get(kind, str))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any config field, e.g. --set reinforce.sigma_start=0.05 "
                        "(repeatable; rule options are <rule>.<option>)")
    p.add_argument("--out", required=True, help="run folder for metrics, samples, checkpoints")
