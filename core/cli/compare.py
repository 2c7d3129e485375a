"""`python -m core compare` (update rules in lockstep over seeds) and `sweep` (the
same over a grid of settings), and where their tasks run (--backend)."""
from __future__ import annotations

import argparse
import sys

from core.cli.args import _configured, add_run_options, build_config
from core.cli.checks import SEED_MAX, UsageError, as_int, check_out_dir, one_line
from core.engine.rules import RULES


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


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """Where compare's and sweep's tasks run (core/jobs/backends.py)."""
    p.add_argument("--backend", choices=["serial", "local", "ray"], default="local",
                   help="serial: in this process; local: a process pool on this machine "
                        "(default); ray: a Ray cluster")
    p.add_argument("--workers", type=as_int, help="parallel tasks (default: one per CPU "
                   "core); with --backend ray and no --address, the local Ray's CPUs")
    p.add_argument("--address", help="ray: auto or HOST:PORT of a running cluster (ray "
                   "start --head); default: start a local Ray instance")


def add_compare(sub: argparse._SubParsersAction) -> None:
    """Register `compare`."""
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


def add_sweep(sub: argparse._SubParsersAction) -> None:
    """Register `sweep`."""
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
