"""RLHF fine-tuning against its alternatives, from the same pretrained generator.

Per seed: pretrain with bce; an oracle judges 400 pairs of the generator's samples
with noise set to 80% agreement with its exact self; a reward model is fit on them;
then one arena, from the pretrained weights, trains in lockstep: bce continued,
reinforce (D as reward), rlhf (REINFORCE estimator) and rlhf (pathwise estimator).
Reported (mean ± s.e. over seeds) on 2,500 fixed z, plus the blind win rate against
the pretrained generator (the exact oracle judges 1,000 pairs in random order):
  mnist5k, oracle digit:7: share of samples that the quality classifier (trained
      apart from the oracle's) calls 7, their mean confidence, classifier FD;
  ring8, oracle upper: share of high-quality samples in the upper four modes, and
      % high quality.
--overopt: one rlhf run per KL weight (0 and the default) with the digit:7 oracle
as gold: proxy and gold scores against sqrt(KL) at every evaluation.

    python bench/rlhf.py [--data mnist5k,ring8] [--seeds 3] [--steps 2000] [--overopt]
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

from core.arena import Arena  # noqa: E402
from core.config import preset  # noqa: E402
from core.evaluate import EVAL_SAMPLES, classify, evaluator_for, generate  # noqa: E402
from core.feedback import blind_win_rate  # noqa: E402
from core.oracles import make_oracle  # noqa: E402
from core.reward_model import train_reward_model  # noqa: E402
from core.trainer import Trainer  # noqa: E402
from ema import mean_se  # noqa: E402  (bench/ema.py)
from feedback import labels, noise_for, pairs  # noqa: E402  (bench/feedback.py)

SETUPS = {"mnist5k": {"oracle": "digit:7", "pretrain": 3000},
          "ring8": {"oracle": "upper", "pretrain": 5000}}
ARMS = ["bce", "reinforce", "rlhf", "rlhf:estimator=pathwise"]


def pretrain(data: str, steps: int, seed: int) -> Trainer:
    trainer = Trainer(preset("recommended", data=data, seed=seed, eval_every=0, device="cpu"))
    for _ in range(steps):
        trainer.step()
    return trainer


def reward_model(trainer: Trainer, spec: str, seed: int, folder: Path) -> tuple[str, object]:
    G, data = trainer.nets.G.eval(), trainer.data
    oracle = make_oracle(spec, data)
    probe_a, probe_b = pairs(G, 4000, torch.Generator().manual_seed(99))
    noise = noise_for(oracle, probe_a, probe_b, 0.8)
    gen = torch.Generator().manual_seed(seed)
    a, b = pairs(G, 400, gen)
    model = train_reward_model(a, b, labels(oracle, a, b, noise, gen), data, seed=seed)
    return str(model.save(folder / f"rm-{data.name}-{seed}.pt")), model


def scores(G, data) -> dict[str, float]:
    x = generate(G, EVAL_SAMPLES)
    ev = evaluator_for(data).prepare()
    if data.is_image:
        probs, _ = classify(ev.classifier.model, x)
        conf, pred = probs.max(1)
        sevens = pred == 7
        return {"share 7 (%)": 100 * float(sevens.float().mean()),
                "confidence of 7s": float(conf[sevens].mean()) if sevens.any() else math.nan,
                "classifier FD": ev(G)["q_fd"]}
    q = ev(G)
    from core.evaluate import nearest_mode
    idx, dist = nearest_mode(x, data.modes)
    high = dist <= 3 * data.mode_std
    upper = (data.modes[idx[high], 1] > 0.05).float().mean() if high.any() else torch.tensor(0.)
    return {"upper modes (% of HQ)": 100 * float(upper), "high quality (%)": q["q_high_quality"]}


def compare(data: str, seeds: int, steps: int, folder: Path) -> None:
    setup = SETUPS[data]
    table: dict[str, dict[str, list]] = {}
    for seed in range(seeds):
        start = time.perf_counter()
        base = pretrain(data, setup["pretrain"], seed)
        path, _ = reward_model(base, setup["oracle"], seed, folder)
        table.setdefault("pretrained", {})
        for k, v in {**scores(base.nets.G, base.data), "blind win rate vs start": 0.5}.items():
            table["pretrained"].setdefault(k, []).append(v)
        cfg = base.cfg.replace(steps=steps, eval_every=0, sample_every=10**9,
                               **{"rlhf.reward_model": path})
        arena = Arena(cfg, ARMS, init_state=base.state_dict())
        arena.run_here()
        oracle = make_oracle(setup["oracle"], arena.data)
        for name, arm in arena.arms.items():
            row = scores(arm.nets.G, arena.data)
            row["blind win rate vs start"] = blind_win_rate(arm.nets.G, base.nets.G, oracle)
            for k, v in row.items():
                table.setdefault(name, {}).setdefault(k, []).append(v)
        print(f"{data} seed {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr,
              flush=True)
    metrics = list(next(iter(table.values())))
    print(f"\n{data}, oracle {setup['oracle']}, {setup['pretrain']} bce steps, then {steps} "
          f"steps per arm; {seeds} seeds, mean ± s.e.")
    print(f"{'arm':<26}" + "".join(f"{m:<24}" for m in metrics))
    for name, row in table.items():
        print(f"{name:<26}" + "".join(f"{mean_se(row[m]):<24}" for m in metrics), flush=True)


def overopt(steps: int, folder: Path) -> None:
    base = pretrain("mnist5k", SETUPS["mnist5k"]["pretrain"], 0)
    path, _ = reward_model(base, "digit:7", 0, folder)
    state = base.state_dict()
    for kl in (0.0, 0.01):
        trainer = Trainer.from_checkpoint(state, rule="rlhf", eval_every=max(1, steps // 10),
                                          **{"rlhf.reward_model": path, "rlhf.kl": kl,
                                             "rlhf.gold_oracle": "digit:7"})
        evaluator_for(trainer.data).prepare()
        for _ in range(steps):
            trainer.step_once()
        frame = trainer.log.to_frame().dropna(subset=["q_gold"])
        print(f"\nrlhf kl = {kl}: step, sqrt KL, proxy (reward model), gold (digit-7 oracle)")
        for row in frame.itertuples():
            print(f"  {row.step:>6} {row.q_sqrt_kl:8.2f} {row.q_rm:8.3f} {row.q_gold:8.3f}")
        print(f"  gold peak at step {int(frame.step[frame.q_gold.idxmax()]):,}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k,ring8")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--overopt", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.overopt:
            overopt(args.steps, Path(tmp))
            return
        for data in args.data.split(","):
            compare(data, args.seeds, args.steps, Path(tmp))


if __name__ == "__main__":
    main()
