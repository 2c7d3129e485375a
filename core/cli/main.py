"""Headless CLI: python -m core {train,sample,info,...} --help

Every failure a user can cause ends as one line on stderr, `error: ...`, exit status 2,
never a traceback (`python -m core --debug ...` re-raises to show it). A bug prints
`error: internal error: ...` and exits 1; Ctrl-C (and SIGTERM during train) exits 130.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from core.base.options import kind_of, option_fields
from core.base.registry import ContractError
from core.cli.checks import (
    SEED_MAX,
    UsageError,
    as_float,
    as_int,
    as_seed,
    check_out_dir,
    check_out_file,
    json_problem,
    one_line,
    read_config_file,
    short,
)
from core.data.datasets import DATASETS, DataError
from core.engine.config import DEVICE_NAMES, PRESETS, ConfigError, TrainConfig, preset
from core.engine.rules import RULES
from core.feedback.preferences import PreferenceStoreError
from core.feedback.reward_model import RewardModelError
from core.io.checkpoint import (
    CheckpointError,
    checkpoint_summary,
    config_of,
    load_with_format,
    old_format_note,
)
from core.jobs.backends import RunnerError


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
        "keep_checkpoints": args.keep_checkpoints,
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
    return _configured(lambda: Trainer.from_checkpoint(
        state, rule=rule, run_id=Path(os.path.abspath(out)).name, run_dir=out, **changes))


def write_run_outputs(trainer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.csv").write_bytes(trainer.log.to_csv())
    (out / "config.json").write_text(json.dumps(trainer.cfg.to_dict(), indent=2))
    snap = trainer.take_snapshot()
    if snap.png is not None:
        (out / "samples.png").write_bytes(snap.png)
    else:
        (out / "samples.png").write_bytes(scatter_png(trainer.data, snap.points))


def scatter_png(data, points) -> bytes:
    """Generated points (red) over real samples (grey) and the modes (black x)."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    real = data.x[:2000].numpy()
    ax.scatter(real[:, 0], real[:, 1], s=4, c="0.6", label="real")
    ax.scatter(points[:, 0], points[:, 1], s=4, c="tab:red", alpha=0.6, label="generated")
    if data.modes is not None:
        modes = data.modes.numpy()
        ax.scatter(modes[:, 0], modes[:, 1], marker="x", c="k", s=40, label="modes")
    x0, x1, y0, y1 = data.extent(margin=1.0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


SAMPLE_MAX = 100_000


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from core.engine.samples import grid_png
    from core.quality.offline import generator_from_state

    if not 1 <= args.n <= SAMPLE_MAX:
        raise UsageError(f"--n {args.n}: use between 1 and {SAMPLE_MAX} samples")
    out_path = check_out_file("--out", args.out)
    state = load_checkpoint(args.checkpoint)
    if state.get("kind") == "arena":
        raise UsageError(f"{args.checkpoint} is an arena checkpoint; extract an arm first")
    G, data = generator_from_state(state, ema=args.ema)
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.n, G.layers[0].in_features, generator=gen)
    with torch.no_grad():
        out = G(z)
    png = (grid_png(out, data.image_shape) if data.is_image
           else scatter_png(data, out.numpy()))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(png)
    print(f"wrote {args.out} ({args.n} samples from step {state['step']})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from core.cli.report import describe, json_safe
    from core.quality.offline import evaluate_state

    if not 2 <= args.n <= 100_000:
        raise UsageError(f"--n {args.n}: use between 2 and 100000 samples")
    state = load_checkpoint(args.checkpoint)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if state.get("kind") == "arena":
        result = {name: evaluate_state(arm, args.n, say, ema=args.ema)
                  for name, arm in state["arms"].items()}
        text = "\n".join(f"arm {name}: {describe(r)}" for name, r in result.items())
    else:
        result = evaluate_state(state, args.n, say, ema=args.ema)
        text = describe(result)
    print(json.dumps(json_safe(result), indent=2) if args.json else text)
    return 0


def _arenas_to_run(args: argparse.Namespace, steps_are: str) -> tuple:
    """What compare and sweep share: (out, cfg, arms, seeds, warm-up steps), checked."""
    from core.jobs.multi_seed import DEFAULT_IMAGE_WARMUP

    out = check_out_dir("--out", args.out)
    cfg = build_config(args)
    if not cfg.steps:
        raise UsageError(f"--steps must be a positive number of {steps_are}")
    arms = _parse_arms(args.rules)
    for arm in arms:   # a bad arm option is refused here, before the run folder is made
        _configured(lambda arm=arm: arm.config(cfg))
    if not 1 <= args.seeds <= 100:
        raise UsageError(f"--seeds {args.seeds}: use between 1 and 100")
    if cfg.seed + args.seeds - 1 > SEED_MAX:
        raise UsageError(f"--seed {cfg.seed} with --seeds {args.seeds} goes past the largest "
                         f"seed, {SEED_MAX}")
    warmup = args.warmup_steps
    if warmup is None:  # images compare from a bce warm-up unless told otherwise
        warmup = 0 if cfg.is_2d else DEFAULT_IMAGE_WARMUP
    if warmup < 0:
        raise UsageError(f"--warmup-steps {warmup}: use 0 or more")
    return out, cfg, arms, [cfg.seed + i for i in range(args.seeds)], warmup


def cmd_compare(args: argparse.Namespace) -> int:
    from core.jobs.multi_seed import run_compare

    out, cfg, arms, seeds, warmup = _arenas_to_run(args, "compared steps")
    table = run_compare(cfg, arms, seeds, out, warmup_steps=warmup,
                        **_backend_options(args))
    print((out / "summary.md").read_text())
    print(f"wrote {args.out}/summary.csv, summary.md, seed_*/<arm>/metrics.csv, "
          f"seed_*/samples.png, seed_*/arena.safetensors ({len(table)} arms)")
    return _failed(table.attrs.get("failures", []), len(seeds), "seed")


def _backend_options(args: argparse.Namespace) -> dict:
    """--backend, --workers, --address, checked (Ray's presence included) before a run."""
    from core.jobs.backends import import_ray
    if args.workers is not None and not 1 <= args.workers <= 4096:
        raise UsageError(f"--workers {args.workers}: use between 1 and 4096")
    if args.address is not None and args.backend != "ray":
        raise UsageError("--address is for --backend ray")
    if args.address is not None and not args.address.strip():
        raise UsageError("--address is empty: use auto or HOST:PORT")
    if args.backend == "ray":
        import_ray()
    return {"backend": args.backend, "workers": args.workers, "address": args.address}


def _failed(failures: list, total: int, what: str) -> int:
    """Exit status 1 where some tasks failed twice (their results are missing)."""
    if not failures:
        return 0
    print(f"error: {len(failures)} of {total} {what}s failed twice and are missing from the "
          f"summary: " + "; ".join(f"{f.task.key}: {f.error}" for f in failures),
          file=sys.stderr)
    return 1


def cmd_sweep(args: argparse.Namespace) -> int:
    from core.jobs.sweep import parse_grid, run_sweep

    out, cfg, arms, seeds, warmup = _arenas_to_run(args, "steps")
    try:
        grid = parse_grid(args.grid or [], cfg)
    except ValueError as exc:
        raise UsageError(f"--grid: {one_line(exc)}") from None
    result = run_sweep(cfg, arms, grid, seeds, out, warmup_steps=warmup,
                       **_backend_options(args))
    print((out / "sweep.md").read_text())
    print(f"wrote {args.out}/sweep.csv, sweep.md, "
          + "".join(f"{p.name}, " for p in result.heatmaps)
          + f"<point>/seed_*/ ({len(result.points)} grid points x {len(seeds)} seeds)")
    return _failed(result.failures, len(result.points) * len(seeds), "task")


def _parse_arms(text: str) -> list:
    from core.engine.arena import ArmSpec
    try:
        arms = [ArmSpec.parse(item) for item in text.split(",") if item.strip()]
    except ValueError as exc:
        raise UsageError(f"--rules: {exc}") from None
    if len(arms) < 2 or any(a.rule not in RULES for a in arms):
        raise UsageError(f"--rules {text!r}: give two or more of {', '.join(RULES)}, "
                         "comma-separated (options as reinforce:sigma_start=0.05)")
    return arms


def cmd_extract(args: argparse.Namespace) -> int:
    from core.engine.arena import extract_arm
    from core.io.checkpoint import save_checkpoint

    out = check_out_file("--out", args.out)
    state = load_checkpoint(args.checkpoint)
    if state.get("kind") != "arena":
        raise UsageError(f"{args.checkpoint} is a single-run checkpoint, not an arena")
    try:
        arm = extract_arm(state, args.arm)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    print(f"wrote {save_checkpoint(arm, out)} (arm {args.arm}, step {arm['step']})")
    return 0


def cmd_feedback_simulate(args: argparse.Namespace) -> int:
    from core.feedback.loop import simulate
    from core.feedback.oracles import make_oracle
    from core.feedback.preferences import PreferenceStore, default_path
    from core.quality.offline import generator_from_state

    if not 1 <= args.pairs <= 100_000:
        raise UsageError(f"--pairs {args.pairs}: use between 1 and 100000")
    if not 0 <= args.noise <= 100:
        raise UsageError(f"--noise {args.noise}: use 0 (always the better sample) to 100")
    state = load_checkpoint(args.source)
    if state.get("kind") == "arena":
        raise UsageError(f"{args.source} is an arena checkpoint; extract an arm first")
    G, data = generator_from_state(state, ema=args.ema)
    oracle = make_oracle(args.oracle, data)
    store = PreferenceStore(args.db or default_path())
    try:
        n = simulate(store, G, data, oracle, n=args.pairs, noise=args.noise, seed=args.seed,
                     step=int(state["step"]), k=args.best_of)
        print(f"stored {n} judgements by oracle:{args.oracle} of {data.name} samples in "
              f"{store.path} ({store.count()} in all)")
    finally:
        store.close()
    return 0


def cmd_reward_train(args: argparse.Namespace) -> int:
    from core.data.datasets import load_by_name
    from core.feedback.loop import train_from_store
    from core.feedback.preferences import PreferenceStore, default_path

    out = check_out_file("--out", args.out)
    db = Path(args.db or default_path())
    if not db.exists():   # opening would create an empty database only to refuse it
        raise UsageError(f"{db}: no preference database there yet: judge on the Feedback "
                         "page or run python -m core feedback simulate")
    store = PreferenceStore(db)
    try:
        names = sorted({j.data for j in store.judgements(judge=args.judge)})
        if args.data is None and len(names) != 1:
            raise UsageError(f"{store.path} holds judgements of {', '.join(names) or 'nothing'}"
                             "; choose one with --data" if names else
                             f"{store.path} holds no judgements yet: judge on the Feedback "
                             "page or run python -m core feedback simulate")
        data = load_by_name(args.data or names[0])
        model = train_from_store(store, data, judge=args.judge, features=args.features,
                                 seed=args.seed)
    finally:
        store.close()
    path = model.save(out)
    m = model.metrics
    print(f"wrote {path}: {m['pairs']} pairs ({m['held_out_pairs']} held out), features "
          f"{m['features']}, held-out accuracy {m['held_out_acc']:.3f}, "
          f"held-out BT loss {m['held_out_loss']:.3f}")
    return 0


def cmd_animate(args: argparse.Namespace) -> int:
    from core.io.animate import latest_checkpoint, progression_gif, snapshots_of

    out = check_out_file("--out", args.out)
    if out.suffix.lower() != ".gif":
        raise UsageError(f"--out {args.out}: the animation is a GIF; name a .gif file")
    if not 0.1 <= args.fps <= 50:   # below 0.1 a frame's delay overflows the GIF format
        raise UsageError(f"--fps {args.fps:g}: use a rate from 0.1 to 50 frames per second")
    source = Path(args.source)
    if source.is_dir():
        try:
            source = latest_checkpoint(source)
        except FileNotFoundError as exc:
            raise UsageError(f"{exc}; give a run folder of `train --out` or a checkpoint") from None
    state = load_checkpoint(source)
    if state.get("kind") == "arena":
        raise UsageError(f"{source} is an arena checkpoint; extract an arm first")
    snaps = snapshots_of(state)
    if not snaps:
        raise UsageError(f"{source} holds no sample snapshots to animate")
    cfg = config_of(state)
    real = None
    if cfg.is_2d:   # the toy sets are generated in memory: cheap to draw the real points
        from core.data.datasets import load_by_name
        real = load_by_name(cfg.data).x[:1000].float().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(progression_gif(snaps, fps=args.fps, real=real))
    print(f"wrote {out}: {len(snaps)} frames, steps {snaps[0].step:,} to "
          f"{snaps[-1].step:,} (from {source})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(checkpoint_summary(load_checkpoint(args.checkpoint)), indent=2))
    return 0


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by train and compare."""
    p.add_argument("--data", choices=list(DATASETS), help="data set (default mnist5k)")
    p.add_argument("--data-root", help="root folder for mnist / fashion-mnist / folder data")
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
    for rule, flag, option, help_text in rule_flags():   # each rule's own flags
        kind = kind_of(next(f for f in option_fields(RULES[rule].Options) if f.name == option))
        p.add_argument(flag, dest=_dest(flag), help=help_text,
                       type={int: as_int, float: as_float}.get(kind, str))
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any config field, e.g. --set reinforce.sigma_start=0.05 "
                        "(repeatable; rule options are <rule>.<option>)")
    p.add_argument("--out", required=True, help="run folder for metrics, samples, checkpoints")


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """Where compare's and sweep's tasks run (core/jobs/backends.py)."""
    p.add_argument("--backend", choices=["serial", "local", "ray"], default="local",
                   help="serial: in this process; local: a process pool on this machine "
                        "(default); ray: a Ray cluster")
    p.add_argument("--workers", type=as_int, help="parallel tasks (default: one per CPU "
                   "core); with --backend ray and no --address, the local Ray's CPUs")
    p.add_argument("--address", help="ray: auto or HOST:PORT of a running cluster (ray "
                   "start --head); default: start a local Ray instance")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="GAN RL Lab headless engine")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one run")
    add_run_options(train)
    train.add_argument("--rule", choices=list(RULES))
    train.add_argument("--resume", help="continue from this checkpoint")
    train.set_defaults(func=cmd_train)

    sample = sub.add_parser("sample", help="write a sample grid (or scatter) from a checkpoint")
    sample.add_argument("checkpoint")
    sample.add_argument("--n", type=as_int, default=64)
    sample.add_argument("--seed", type=as_seed, default=0)
    sample.add_argument("--ema", action="store_true", help="use G's EMA weights")
    sample.add_argument("--out", required=True)
    sample.set_defaults(func=cmd_sample)

    evaluate = sub.add_parser("eval", help="print the quality metrics of a checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--n", type=as_int, default=2500, help="generated samples (2500)")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument("--ema", action="store_true", help="evaluate G's EMA weights")
    evaluate.set_defaults(func=cmd_eval)

    compare = sub.add_parser("compare", help="compare update rules in lockstep over seeds")
    add_run_options(compare)
    compare.set_defaults(preset="recommended", func=cmd_compare, rule=None)
    compare.add_argument("--rules", default="bce,reinforce",
                         help="arms, comma-separated: bce,reinforce or reinforce:reward=d")
    compare.add_argument("--seeds", type=as_int, default=1,
                         help="repeat over this many seeds (from --seed, default 0)")
    compare.add_argument("--warmup-steps", type=as_int, help="train bce this many steps, then "
                         "fork the arms from it (default: 0 on 2-D data, "
                         "3000 on images)")
    add_backend_options(compare)

    sweep = sub.add_parser("sweep", help="compare update rules over a grid of settings "
                           "and seeds")
    add_run_options(sweep)
    sweep.set_defaults(preset="recommended", func=cmd_sweep, rule=None)
    sweep.add_argument("--rules", default="bce,reinforce",
                       help="arms, comma-separated: bce,reinforce or reinforce:reward=d")
    sweep.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                       help="values of a config field (as in --set; lr = both learning "
                            "rates), e.g. lr=1e-4,3e-4,1e-3; several keys separated by ';' "
                            "or by repeating --grid; every combination is a grid point")
    sweep.add_argument("--seeds", type=as_int, default=3,
                       help="seeds per grid point (default 3), counting from --seed")
    sweep.add_argument("--warmup-steps", type=as_int, help="train bce this many steps, then "
                       "fork the arms (default: 0 on 2-D data, 3000 on images)")
    add_backend_options(sweep)

    extract = sub.add_parser("extract", help="write one arm of an arena checkpoint as a "
                             "single-run checkpoint (for train --resume and sample)")
    extract.add_argument("checkpoint")
    extract.add_argument("--arm", required=True)
    extract.add_argument("--out", required=True)
    extract.set_defaults(func=cmd_extract)

    feedback = sub.add_parser("feedback", help="preference judgements (see the Feedback page)")
    fsub = feedback.add_subparsers(dest="feedback_command", required=True, parser_class=_Parser)
    sim = fsub.add_parser("simulate", help="let a synthetic oracle judge a generator's samples")
    sim.add_argument("--from", dest="source", required=True, help="a run checkpoint")
    sim.add_argument("--oracle", required=True,
                     help="thick, centred, digit:K (images); upper, angle:DEG (2-D)")
    sim.add_argument("--pairs", type=as_int, default=400, help="comparisons to judge (400)")
    sim.add_argument("--noise", type=as_float, default=0.0,
                     help="Bradley-Terry temperature in units of the oracle's spread on real "
                          "data: 0 = always the better sample")
    sim.add_argument("--best-of", type=as_int, choices=[2, 4], default=2,
                     help="2: pairs; 4: pick the best of 4 (3 pairs per judgement)")
    sim.add_argument("--db", help="preference database (default checkpoints/preferences.sqlite)")
    sim.add_argument("--seed", type=as_seed, default=0)
    sim.add_argument("--ema", action="store_true", help="judge G's EMA weights")
    sim.set_defaults(func=cmd_feedback_simulate)

    reward = sub.add_parser("reward", help="reward models learnt from preferences")
    rsub = reward.add_subparsers(dest="reward_command", required=True, parser_class=_Parser)
    rtrain = rsub.add_parser("train", help="fit a Bradley-Terry ensemble on a preference store")
    rtrain.add_argument("--db", help="preference database (default checkpoints/preferences.sqlite)")
    rtrain.add_argument("--out", required=True, help="reward model file to write (.pt)")
    rtrain.add_argument("--data", choices=list(DATASETS), help="data set of the judgements")
    rtrain.add_argument("--judge", help="only this judge's judgements (e.g. oracle:thick)")
    rtrain.add_argument("--features", help="frozen features: multi (images, default), "
                        "classifier, pixels; raw (2-D)")
    rtrain.add_argument("--seed", type=as_seed, default=0)
    rtrain.set_defaults(func=cmd_reward_train)

    animate = sub.add_parser("animate", help="write an animated GIF of a run's sample "
                             "snapshots, one frame per snapshot")
    animate.add_argument("source", metavar="RUN_DIR_OR_CKPT",
                         help="a checkpoint, or a run folder (its latest step_* file)")
    animate.add_argument("--out", required=True, help="GIF file to write")
    animate.add_argument("--fps", type=as_float, default=4.0, help="frames per second (4)")
    animate.set_defaults(func=cmd_animate)

    info = sub.add_parser("info", help="print what a checkpoint holds, as JSON")
    info.add_argument("checkpoint")
    info.set_defaults(func=cmd_info)
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
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
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

