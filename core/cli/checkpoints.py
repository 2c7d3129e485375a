"""The commands that read a checkpoint: sample (a grid or scatter), eval (quality
metrics), extract (one arm of an arena), animate (a GIF of the snapshots), info (JSON)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli.args import load_checkpoint
from core.cli.checks import UsageError, as_float, as_int, as_seed, check_out_file
from core.io.checkpoint import checkpoint_summary, config_of


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


def cmd_animate(args: argparse.Namespace) -> int:
    from core.io.animate import gif_snapshots, latest_checkpoint, progression_gif, snapshots_of

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
    if cfg.is_2d:   # toy sets are generated in memory, user points saved in the file
        from core.io.saved_points import dataset_of
        real = dataset_of(state).x[:1000].float().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(progression_gif(snaps, fps=args.fps, real=real))
    shown = len(gif_snapshots(snaps))   # what the GIF holds: every k-th when they are many
    thinned = "" if shown == len(snaps) else f" of the {len(snaps)} kept snapshots"
    print(f"wrote {out}: {shown} frames{thinned}, steps {snaps[0].step:,} to "
          f"{snaps[-1].step:,} (from {source})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(checkpoint_summary(load_checkpoint(args.checkpoint)), indent=2))
    return 0


def add_sample(sub: argparse._SubParsersAction) -> None:
    """Register `sample`."""
    sample = sub.add_parser("sample", help="write a sample grid (or scatter) from a checkpoint")
    sample.add_argument("checkpoint")
    sample.add_argument("--n", type=as_int, default=64)
    sample.add_argument("--seed", type=as_seed, default=0)
    sample.add_argument("--ema", action="store_true", help="use G's EMA weights")
    sample.add_argument("--out", required=True)
    sample.set_defaults(func=cmd_sample)


def add_eval(sub: argparse._SubParsersAction) -> None:
    """Register `eval`."""
    evaluate = sub.add_parser("eval", help="print the quality metrics of a checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--n", type=as_int, default=2500, help="generated samples (2500)")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument("--ema", action="store_true", help="evaluate G's EMA weights")
    evaluate.set_defaults(func=cmd_eval)


def add_extract(sub: argparse._SubParsersAction) -> None:
    """Register `extract`."""
    extract = sub.add_parser("extract", help="write one arm of an arena checkpoint as a "
                             "single-run checkpoint (for train --resume and sample)")
    extract.add_argument("checkpoint")
    extract.add_argument("--arm", required=True)
    extract.add_argument("--out", required=True)
    extract.set_defaults(func=cmd_extract)


def add_animate(sub: argparse._SubParsersAction) -> None:
    """Register `animate`."""
    animate = sub.add_parser("animate", help="write an animated GIF of a run's sample "
                             "snapshots, one frame per snapshot")
    animate.add_argument("source", metavar="RUN_DIR_OR_CKPT",
                         help="a checkpoint, or a run folder (its latest step_* file)")
    animate.add_argument("--out", required=True, help="GIF file to write")
    animate.add_argument("--fps", type=as_float, default=4.0, help="frames per second (4)")
    animate.set_defaults(func=cmd_animate)


def add_info(sub: argparse._SubParsersAction) -> None:
    """Register `info`."""
    info = sub.add_parser("info", help="print what a checkpoint holds, as JSON")
    info.add_argument("checkpoint")
    info.set_defaults(func=cmd_info)
