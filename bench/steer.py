"""Steering a pretrained digit generator toward one digit, judged by judges of other kinds.

Per seed: pretrain with bce (mnist5k); an oracle (default digit:7@panel, the median
of the judge panel) judges 400 pairs of the generator's samples with noise set to 80%
agreement with its exact self; reward models with each feature kind are fit on the
same pairs; then one arena from the pretrained weights trains each arm in lockstep.
Scored on 2,500 fixed z by every judge of core/quality/judges.py: the share each calls
the digit, the share a majority of the independent judges call it (those that are not
the reward model's feature network), the median pixel distance to the nearest real
training image, and the classes present (a diversity check). Seed 0's 8x8 fixed-z grids
are written to --grids (look at them).

    python bench/steer.py [--seeds 3] [--steps 1500] [--arms latent,rlhf] [--grids docs/steer]
    python bench/steer.py --speed    # ms per step: bce, rlhf, latent on one generator
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from ema import mean_se  # noqa: E402  (bench/ema.py)
from feedback import labels, noise_for, pairs  # noqa: E402  (bench/feedback.py)

from core.engine.config import preset  # noqa: E402
from core.engine.samples import grid_png  # noqa: E402
from core.engine.trainer import Trainer  # noqa: E402
from core.feedback.oracles import make_oracle  # noqa: E402
from core.feedback.reward_model import agreement, train_reward_model  # noqa: E402
from core.io.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from core.quality.evaluate import EVAL_SAMPLES, generate  # noqa: E402
from core.quality.judges import JUDGES, get_judge, majority_share, nearest_neighbours  # noqa: E402

DIGIT = 7
PAIRS = 400
FEATURE_NET = {"multi": "cnn", "robust": "robust"}   # the judge a feature kind is built on


def pretrain(steps: int, seed: int, keep: str) -> Trainer:
    """bce from scratch, or the generator kept in `keep` by an earlier run of the bench."""
    path = Path(keep) / f"base-{steps}-{seed}.safetensors" if keep else None
    if path and path.is_file():
        return Trainer.from_checkpoint(load_checkpoint(path))
    trainer = Trainer(preset("recommended", data="mnist5k", seed=seed, eval_every=0,
                             device="cpu"))
    for _ in range(steps):
        trainer.step()
    if path:
        save_checkpoint(trainer.state_dict(), path)
    return trainer


def reward_models(trainer: Trainer, oracle_spec: str, features: list[str], seed: int,
                  folder: Path) -> dict[str, str]:
    G, data = trainer.nets.G.eval(), trainer.data
    oracle = make_oracle(oracle_spec, data)
    probe_a, probe_b = pairs(G, 4000, torch.Generator().manual_seed(99))
    noise = noise_for(oracle, probe_a, probe_b, 0.8)
    gen = torch.Generator().manual_seed(seed)
    a, b = pairs(G, PAIRS, gen)
    p = labels(oracle, a, b, noise, gen)
    out = {}
    fresh_a, fresh_b = pairs(G, 1000, torch.Generator().manual_seed(1000 + seed))
    exact = oracle.prob_left(fresh_a, fresh_b, 0.0)
    for kind in features:
        model = train_reward_model(a, b, p, data, features=kind, seed=seed)
        with torch.no_grad():
            diff = model.score(fresh_a) - model.score(fresh_b)
        print(f"  reward model {kind}: held-out accuracy {model.metrics['held_out_acc']:.3f} "
              f"(noisy labels), {agreement(diff, exact):.3f} on 1,000 fresh pairs (exact "
              "oracle)", file=sys.stderr)
        out[kind] = str(model.save(folder / f"rm-{kind}-{seed}.pt"))
    return out


@torch.no_grad()
def score(G, data, feature_net: str) -> dict[str, float]:
    x = generate(G, EVAL_SAMPLES)
    calls = {name: get_judge(name, data).calls(x) for name in JUDGES}
    row = {f"{name} (%)": 100 * float((c == DIGIT).double().mean()) for name, c in calls.items()}
    independent = {n: c for n, c in calls.items() if n != feature_net}
    row["majority indep. (%)"] = 100 * majority_share(independent, DIGIT)
    row["unanimous (%)"] = 100 * float(
        torch.stack([c == DIGIT for c in calls.values()]).all(0).double().mean())
    dist, _ = nearest_neighbours(data).nearest(x)
    row["NN dist (median)"] = float(dist.median())
    # variety among the target digits: median pairwise distance of the samples the
    # independent majority calls the digit, over that of real ones (1 = as varied)
    votes = torch.stack([c == DIGIT for c in independent.values()]).sum(0)
    chosen = x[votes * 2 > len(independent)][:300]
    real = data.x[data.labels == DIGIT][:300]
    row["7s variety vs real"] = (float(torch.pdist(chosen).median() / torch.pdist(real).median())
                                 if len(chosen) >= 10 else float("nan"))
    row.update(stroke(x, data.image_shape))
    counts = torch.bincount(calls["robust"], minlength=10)
    row["classes"] = float((counts >= 0.02 * len(x)).sum())
    return row


def feature_kind(arm: str) -> str:
    """'latent/robust:realism=0.3' -> 'robust' (the reward model's features)."""
    return arm.partition(":")[0].partition("/")[2] or "multi"


def stroke(x: torch.Tensor, shape: tuple) -> dict[str, float]:
    """Ink measures for the 'thick' preference: isolated ink pixels per image (speckle;
    no ink among their 8 neighbours), and the stroke width of the denoised image (those
    removed) as 2 x area / perimeter, in pixels."""
    ink = (x.reshape(-1, 1, *shape[1:]) > 0).float()
    neighbours = F.conv2d(F.pad(ink, (1, 1, 1, 1)), torch.ones(1, 1, 3, 3)) - ink
    isolated = ink * (neighbours == 0)
    clean = ink - isolated
    edges = ((clean[..., 1:, :] != clean[..., :-1, :]).sum((1, 2, 3))
             + (clean[..., :, 1:] != clean[..., :, :-1]).sum((1, 2, 3))).float()
    width = 2 * clean.sum((1, 2, 3)) / edges.clamp_min(1)
    return {"isolated px": float(isolated.sum((1, 2, 3)).mean()),
            "stroke width": float(width.mean())}


def arm_spec(arm: str, paths: dict[str, str]) -> tuple[str, dict]:
    """'latent/robust:realism=0.3' -> (rule, options) with the reward model of that kind."""
    head, _, rest = arm.partition(":")
    rule = head.partition("/")[0]
    opts = {f"{rule}.reward_model": paths[feature_kind(arm)]}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        opts[f"{rule}.{key}"] = float(value)
    return rule, opts


def speed(base: Trainer, reward_model: str, steps: int = 60, repeats: int = 2) -> None:
    """ms per training step of bce and of each fine-tune rule on the same generator,
    alternating, one thread: the fine-tune's cost against a plain GAN step."""
    state = base.state_dict()
    rules = {"bce": {}, **{r: {f"{r}.reward_model": reward_model} for r in ("rlhf", "latent")}}
    best: dict[str, float] = {}
    for _ in range(repeats):
        for rule, opts in rules.items():
            trainer = Trainer.from_checkpoint(state, rule=rule, eval_every=0,
                                              sample_every=10**9, **opts)
            for _ in range(5):
                trainer.step()
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step()
            ms = 1000 * (time.perf_counter() - start) / steps
            best[rule] = min(best.get(rule, ms), ms)
    print("ms per step (best of %d): " % repeats + ", ".join(
        f"{r} {ms:.1f} ({ms / best['bce']:.1f}x bce)" for r, ms in best.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--oracle", default=f"digit:{DIGIT}@panel")
    parser.add_argument("--arms", default="rlhf/multi,rlhf/robust:realism=0.3,"
                                          "latent/multi,latent/robust")
    parser.add_argument("--grids", default="", help="folder for seed 0's 8x8 PNG grids")
    parser.add_argument("--keep", default="", help="folder to keep (and reuse) the "
                        "pretrained generators in")
    parser.add_argument("--speed", action="store_true", help="only time a step of bce, "
                        "rlhf and latent on seed 0's generator")
    args = parser.parse_args()
    torch.set_num_threads(1)
    arms = args.arms.split(",")
    features = sorted({feature_kind(a) for a in arms})
    table: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.speed:
            base = pretrain(args.pretrain, 0, args.keep)
            speed(base, reward_models(base, args.oracle, ["multi"], 0, Path(tmp))["multi"])
            return
        for seed in range(args.seeds):
            start = time.perf_counter()
            base = pretrain(args.pretrain, seed, args.keep)
            paths = reward_models(base, args.oracle, features, seed, Path(tmp))
            data = base.data
            table.setdefault("pretrained", []).append(score(base.nets.G, data, "none"))
            for arm in arms:
                rule, opts = arm_spec(arm, paths)
                tuned = Trainer.from_checkpoint(base.state_dict(), rule=rule, eval_every=0,
                                                sample_every=10**9, **opts)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    tuned.step()
                G = tuned.nets.G
                row = score(G, data, FEATURE_NET[feature_kind(arm)])
                row["s/1k steps"] = 1000 * (time.perf_counter() - t0) / args.steps
                table.setdefault(arm, []).append(row)
                if seed == 0 and args.grids:
                    folder = Path(args.grids)
                    folder.mkdir(parents=True, exist_ok=True)
                    z = torch.randn(64, tuned.cfg.latent_dim, generator=torch.Generator().manual_seed(7))
                    for name, g in (("pretrained", base.nets.G), (arm, G)):
                        with torch.no_grad():
                            png = grid_png(g(z), data.image_shape, nrow=8)
                        (folder / f"{name.replace('/', '-').replace(':', '_')}.png").write_bytes(png)
            print(f"seed {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    metrics = list(dict.fromkeys(m for rows in table.values() for row in rows for m in row))
    print(f"\nmnist5k, oracle {args.oracle} ({PAIRS} pairs, 80% agreement), "
          f"{args.pretrain} bce steps, then {args.steps} steps per arm; {args.seeds} seeds, "
          "mean ± s.e.; 'indep.' = judges other than the reward model's feature network")
    print(f"{'arm':<34}" + "".join(f"{m:<22}" for m in metrics))
    for arm, rows in table.items():
        print(f"{arm:<34}" + "".join(f"{mean_se([r[m] for r in rows if m in r]):<22}"
                                     for m in metrics), flush=True)


if __name__ == "__main__":
    main()
