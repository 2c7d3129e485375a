"""RLHF fine-tuning against its alternatives, from the same pretrained generator.

Per seed: pretrain with bce (the recommended preset; the fine-tune's config comes from
core.engine.fine_tune, which drops R1 where realism reads D); an oracle judges 400 pairs of the generator's samples
with noise set to 80% agreement with its exact self; a reward model is fit on them;
then one arena, from the pretrained weights, trains in lockstep: bce continued,
reinforce (D as reward), rlhf with its default (pathwise) estimator and rlhf with the
REINFORCE estimator, on the same reward model. Reported (mean ± s.e. over seeds) on
2,500 fixed z at a few points of the fine-tune, plus the blind win rate against the
pretrained generator at the end (the exact oracle judges 1,000 pairs in random order):
  mnist5k, oracle digit:7: share of samples called 7 by each judge of
      core/quality/judges.py (cnn, robust, knn, hog) and by the majority of the judges
      other than the reward model's feature network (cnn), the FD of the 7s to real 7s,
      and the classes present (>= 2% of samples, by the robust judge);
  ring8, oracle upper: share of high-quality samples in the upper modes (y > 0),
      % high quality, modes covered.
Seed 0's fixed-z samples are printed at the end (digits as text art, 2-D as counts
per mode).
--overopt: mnist5k, one rlhf run per anchor setting (KL weight 0 or default, the
uncertainty penalty 0 or default), the digit:7 oracle as gold: proxy and gold scores
against sqrt(KL) at every evaluation, with diversity and realism, the gold peak, and
the samples at the end.

    python bench/rlhf.py [--data mnist5k,ring8] [--seeds 3] [--steps N] [--overopt]
        [--arms rlhf,rlhf:kl_weight=0.0001] [--set g_opt.lr=1e-3]

--arms picks the arms (rule[:option=value...], as `python -m core compare --rules`;
default the four above); --set changes the fine-tune's config for every arm (pilots).
"""
from __future__ import annotations

import argparse
import math
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

from core.base.options import resolved  # noqa: E402
from core.engine.arena import Arena, number_or_text  # noqa: E402
from core.engine.config import preset  # noqa: E402
from core.engine.fine_tune import fine_tune_config  # noqa: E402
from core.engine.rules.rlhf import RlhfOptions  # noqa: E402
from core.engine.trainer import Trainer  # noqa: E402
from core.feedback.loop import blind_win_rate  # noqa: E402
from core.feedback.oracles import make_oracle  # noqa: E402
from core.feedback.reward_model import cached_reward_model, train_reward_model  # noqa: E402
from core.quality.classifier import classify  # noqa: E402
from core.quality.evaluate import EVAL_SAMPLES, evaluator_for, generate  # noqa: E402
from core.quality.judges import JUDGES, get_judge, majority_share  # noqa: E402
from core.quality.metrics import frechet_distance, nearest_mode  # noqa: E402

SETUPS = {"mnist5k": {"oracle": "digit:7", "pretrain": 3000, "steps": 2000},
          "ring8": {"oracle": "upper", "pretrain": 5000, "steps": 10000}}
ARMS = ["bce", "reinforce", "rlhf", "rlhf:estimator=reinforce"]
DIGIT = 7
SHOWN = 8                        # fixed-z samples printed per generator
INK = " .:-=+*#%@"


def pretrain(data: str, steps: int, seed: int) -> Trainer:
    trainer = Trainer(preset("recommended", data=data, seed=seed, eval_every=0, device="cpu"))
    for _ in range(steps):
        trainer.step()
    return trainer


def reward_model(trainer: Trainer, spec: str, seed: int, folder: Path) -> str:
    G, data = trainer.nets.G.eval(), trainer.data
    oracle = make_oracle(spec, data)
    probe_a, probe_b = pairs(G, 4000, torch.Generator().manual_seed(99))
    noise = noise_for(oracle, probe_a, probe_b, 0.8)
    gen = torch.Generator().manual_seed(seed)
    a, b = pairs(G, 400, gen)
    model = train_reward_model(a, b, labels(oracle, a, b, noise, gen), data, seed=seed)
    return str(model.save(folder / f"rm-{data.name}-{seed}.pt"))


class Scorer:
    """The bench's measurements of a generator on EVAL_SAMPLES fixed z."""

    def __init__(self, data) -> None:
        self.data = data
        if data.is_image:
            self.quality = evaluator_for(data).prepare().classifier
            real = data.x[data.labels == DIGIT][:2000]
            self.real_feats = classify(self.quality.model, real)[1]

    @torch.no_grad()
    def __call__(self, G) -> dict[str, float]:
        x = generate(G, EVAL_SAMPLES)
        if not self.data.is_image:
            q = evaluator_for(self.data)(G)
            idx, dist = nearest_mode(x, self.data.modes)
            high = dist <= 3 * self.data.mode_std
            upper = self.data.modes[idx[high], 1] > 0.05
            return {"upper modes (% of HQ)": 100 * float(upper.float().mean()) if high.any()
                    else math.nan,
                    "high quality (%)": q["q_high_quality"], "modes": q["q_modes"]}
        # one gold line per judge of core/quality/judges.py (the reward model's features
        # are the quality classifier's, the `cnn` judge: the others are of other kinds)
        calls = {name: get_judge(name, self.data).calls(x) for name in JUDGES}
        row = {f"{DIGIT}s, {name} (%)": 100 * float((c == DIGIT).double().mean())
               for name, c in calls.items()}
        independent = {n: c for n, c in calls.items() if n != "cnn"}
        row[f"{DIGIT}s, majority of others (%)"] = 100 * majority_share(independent, DIGIT)
        q_probs, q_feats = classify(self.quality.model, x)
        q_sevens = q_probs.argmax(1) == DIGIT
        counts = torch.bincount(calls["robust"], minlength=q_probs.shape[1])
        row[f"FD {DIGIT}s to real {DIGIT}s"] = (frechet_distance(q_feats[q_sevens],
                                                                  self.real_feats)
                                                 if q_sevens.sum() > 20 else math.nan)
        row["classes"] = float((counts >= 0.02 * len(x)).sum())
        return row


def text_art(G, data) -> str:
    """SHOWN fixed-z samples: digits as 14 x 14 text art side by side; 2-D points as
    the count per mode (angle 0, 45, ... degrees) and off-mode."""
    x = generate(G, SHOWN if data.is_image else EVAL_SAMPLES)
    if not data.is_image:
        idx, dist = nearest_mode(x, data.modes)
        high = dist <= 3 * data.mode_std
        counts = torch.bincount(idx[high], minlength=len(data.modes)).tolist()
        return ("  per mode (0°, 45°, ... 315°): " + " ".join(f"{c:4d}" for c in counts)
                + f"   off-mode: {int((~high).sum())}")
    c, h, w = data.image_shape
    ink = F.avg_pool2d((x.view(-1, c, h, w).mean(1, keepdim=True) + 1) / 2, 2).squeeze(1)
    rows = []
    for r in range(ink.shape[1]):
        rows.append("  " + "  ".join("".join(INK[min(len(INK) - 1, int(v * len(INK)))]
                                             for v in img[r].tolist()) for img in ink))
    return "\n".join(rows)


def record(table: dict, arm: str, step: int, row: dict) -> None:
    for k, v in row.items():
        table.setdefault((arm, step), {}).setdefault(k, []).append(v)


def compare(data: str, seeds: int, steps: int, folder: Path, arms: list[str] = ARMS,
            changes: dict | None = None) -> None:
    setup = SETUPS[data]
    changes = changes or {}
    checkpoints = sorted({steps // 4, steps // 2, steps})
    table: dict = {}
    art: dict[str, str] = {}
    for seed in range(seeds):
        start = time.perf_counter()
        base = pretrain(data, setup["pretrain"], seed)
        path = reward_model(base, setup["oracle"], seed, folder)
        scorer = Scorer(base.data)
        record(table, "pretrained", 0, {**scorer(base.nets.G), "blind win rate vs start": 0.5})
        cfg, note = fine_tune_config(base.cfg, arms)   # as the Feedback page's fine-tune
        cfg = cfg.replace(steps=steps, eval_every=0, sample_every=10**9,
                          **{"rlhf.reward_model": path, **changes})
        arena = Arena(cfg, arms, init_state=base.state_dict())
        if seed == 0:
            art["pretrained"] = text_art(base.nets.G, arena.data)
        oracle = make_oracle(setup["oracle"], arena.data)
        for step in range(1, steps + 1):
            arena.step()
            if step in checkpoints:
                for name, arm in arena.arms.items():
                    row = scorer(arm.nets.G)
                    if step == steps:
                        row["blind win rate vs start"] = blind_win_rate(arm.nets.G, base.nets.G,
                                                                        oracle)
                    record(table, name, step, row)
        if seed == 0:
            art.update({name: text_art(arm.nets.G, arena.data)
                        for name, arm in arena.arms.items()})
        print(f"{data} seed {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr,
              flush=True)
    opts, is_2d = RlhfOptions(), not arena.data.is_image
    metrics = list(table[("pretrained", 0)])
    print(f"\n{data}, oracle {setup['oracle']}, {setup['pretrain']:,} bce steps, then "
          f"{steps:,} steps per arm; {seeds} seeds, mean ± s.e. rlhf defaults here: kl "
          f"{resolved(opts, 'kl_weight', is_2d)}, sigma {resolved(opts, 'sigma', is_2d)}, uncertainty "
          f"{opts.uncertainty}, realism {resolved(opts, 'realism', is_2d)}, score clip "
          f"{opts.score_clip}" + (f"; {note}" if note else "")
          + "".join(f"; fine-tune {k} {v}" for k, v in changes.items()))
    print(f"{'arm':<26}{'step':>6}  " + "".join(f"{m:<25}" for m in metrics))
    for (name, step), row in table.items():
        print(f"{name:<26}{step:>6}  " + "".join(f"{mean_se(row.get(m, [])):<25}"
                                                 for m in metrics), flush=True)
    print(f"\nseed 0, the first {SHOWN} fixed-z samples:" if arena.data.is_image
          else "\nseed 0, samples per mode:")
    for name, text in art.items():
        print(f"{name}:\n{text}")


OVEROPT = {"kl 0, uncertainty 0": {"rlhf.kl_weight": 0.0, "rlhf.uncertainty": 0.0},
           "default kl, uncertainty 0": {"rlhf.uncertainty": 0.0},
           "kl 0, default uncertainty": {"rlhf.kl_weight": 0.0},
           "defaults": {}}


def overopt(steps: int, folder: Path) -> None:
    base = pretrain("mnist5k", SETUPS["mnist5k"]["pretrain"], 0)
    path = reward_model(base, "digit:7", 0, folder)
    scorer, model = Scorer(base.data), cached_reward_model(path)
    state = base.state_dict()
    every = max(1, steps // 12)
    for label, changes in OVEROPT.items():
        trainer = Trainer.from_checkpoint(state, rule="rlhf", eval_every=every,
                                          **{"rlhf.reward_model": path,
                                             "rlhf.gold_oracle": "digit:7", **changes})
        opts = trainer.cfg.options()
        evaluator_for(trainer.data).prepare()
        print(f"\nrlhf, {label} (kl {resolved(opts, 'kl_weight', False)}, uncertainty {opts.uncertainty}):\n"
              f"  {'step':>6} {'sqrt KL':>8} {'proxy':>8} {'gold':>8} {'7s robust %':>12} "
              f"{'7s 5-NN %':>10} {'FD 7s':>7} {'classes':>8}")
        golds = {}
        for step in range(1, steps + 1):
            trainer.step_once()
            if step % every:
                continue
            row = trainer.log.last_row(["q_sqrt_kl", "q_rm", "q_gold"])
            with torch.no_grad():   # the proxy's median: a few extreme scores drive the mean
                proxy = float(model.score(generate(trainer.nets.G, EVAL_SAMPLES)).median())
            s = scorer(trainer.nets.G)
            golds[step] = row["q_gold"]
            print(f"  {step:>6} {row['q_sqrt_kl']:8.2f} {proxy:8.2f} {row['q_gold']:8.3f} "
                  f"{s['7s, robust (%)']:12.1f} {s['7s, knn (%)']:10.1f} "
                  f"{s['FD 7s to real 7s']:7.0f} "
                  f"{s['classes']:8.0f}", flush=True)
        peak = max(golds, key=golds.get)
        print(f"  gold peak at step {peak:,} ({golds[peak]:.3f}); at the end "
              f"{golds[steps // every * every]:.3f}; the first {SHOWN} fixed-z samples at "
              f"the end:\n{text_art(trainer.nets.G, trainer.data)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k,ring8")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0,
                        help="0 = per data set (mnist5k 2,000, ring8 10,000)")
    parser.add_argument("--overopt", action="store_true")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help="comma-separated arms, rule[:option=value...]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fine-tune config change for every arm (e.g. g_opt.lr=1e-3)")
    args = parser.parse_args()
    changes = {k: number_or_text(v) for k, _, v in (c.partition("=") for c in args.set)}
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.overopt:
            overopt(args.steps or 3000, Path(tmp))
            return
        for data in args.data.split(","):
            compare(data, args.seeds, args.steps or SETUPS[data]["steps"], Path(tmp),
                    args.arms.split(","), changes)


if __name__ == "__main__":
    main()
