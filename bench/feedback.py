"""How many preference judgements a reward model needs, and what one costs a person.

Learning curves: a generator (mnist5k, "recommended", --gen-steps of bce) supplies
the samples; an oracle judges n pairs of them (exactly, and with Bradley-Terry noise
set so that its answers agree with the exact oracle on `--agreement` of pairs, about
what people achieve with each other); a reward model is fit on them; its accuracy is
measured against the exact oracle on 2,000 fresh pairs of the same generator
(exactly tied pairs left out). Mean ± s.e. over seeds.

--page: seconds per judgement on the Feedback page in chromium with automated
clicks, a lower bound on a person's cost (tests/browser.py drives it).

    python bench/feedback.py [--sizes 25,100,200,400,1600] [--seeds 3] [--page]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from core.engine.config import preset  # noqa: E402
from core.engine.trainer import Trainer  # noqa: E402
from core.feedback.oracles import make_oracle  # noqa: E402
from core.feedback.reward_model import agreement, train_reward_model  # noqa: E402

FRESH = 2000


def noise_for(oracle, a, b, target: float) -> float:
    """The noise at which the oracle agrees with its exact self on `target` of pairs
    (expected agreement, by bisection on the temperature)."""
    exact = oracle.prob_left(a, b, 0.0)
    decided = exact != 0.5
    lo, hi = 1e-3, 100.0
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        p = oracle.prob_left(a, b, mid)[decided]
        agree = float(torch.where(exact[decided] > 0.5, p, 1 - p).mean())
        lo, hi = (mid, hi) if agree > target else (lo, mid)
    return math.sqrt(lo * hi)


def pairs(G, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        x = G(torch.randn(2 * n, G.layers[0].in_features, generator=gen))
    return x[:n], x[n:]


def labels(oracle, a, b, noise: float, gen: torch.Generator) -> torch.Tensor:
    p = oracle.prob_left(a, b, noise)
    return p if noise <= 0 else (torch.rand(p.shape, generator=gen) < p).float()


def curves(args) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(preset("recommended", data="mnist5k", eval_every=0, device="cpu"))
    start = time.perf_counter()
    for _ in range(args.gen_steps):
        trainer.step()
    G, data = trainer.nets.G.eval(), trainer.data
    print(f"generator: {args.gen_steps} bce steps in {time.perf_counter() - start:.0f} s",
          flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    for spec in args.oracles.split(","):
        oracle = make_oracle(spec, data)
        probe_a, probe_b = pairs(G, 4000, torch.Generator().manual_seed(99))
        noise = noise_for(oracle, probe_a, probe_b, args.agreement)
        print(f"\noracle {spec}: noise {noise:.3g} gives {args.agreement:.0%} agreement "
              f"with the exact oracle", flush=True)
        print(f"{'pairs':>6} {'exact labels':>16} {'noisy labels':>16} {'fit s':>7}")
        for n in sizes:
            row = {}
            seconds = []
            for label, level in (("exact", 0.0), ("noisy", noise)):
                accs = []
                for seed in range(args.seeds):
                    gen = torch.Generator().manual_seed(1000 * seed + n)
                    a, b = pairs(G, n, gen)
                    t0 = time.perf_counter()
                    model = train_reward_model(a, b, labels(oracle, a, b, level, gen), data,
                                               seed=seed)
                    seconds.append(time.perf_counter() - t0)
                    fa, fb = pairs(G, FRESH, gen)
                    with torch.no_grad():
                        accs.append(agreement(model.score(fa) - model.score(fb),
                                              oracle.prob_left(fa, fb, 0.0)))
                se = statistics.stdev(accs) / math.sqrt(len(accs)) if len(accs) > 1 else 0.0
                row[label] = f"{statistics.mean(accs):.3f} ± {se:.3f}"
            print(f"{n:>6} {row['exact']:>16} {row['noisy']:>16} "
                  f"{statistics.mean(seconds):>7.1f}", flush=True)


def page_cost(clicks: int = 30) -> None:
    import browser as b
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trainer = Trainer(preset("recommended", data="mnist5k", eval_every=0))
        trainer.step()
        trainer.save_checkpoint(root / "ck" / "run" / "step_1.pt")
        with b.streamlit_server(root / "ck") as url, \
                b.chromium_browser(b.chromium_or_skip()) as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/feedback")
            page.locator(".st-key-fb_left button").wait_for()
            start = time.perf_counter()
            for i in range(clicks):
                page.keyboard.press("ArrowLeft" if i % 2 else "ArrowRight")
                page.wait_for_function(
                    "n => document.querySelector(\"[data-testid='stProgress']\")"
                    ".innerText.includes('person: ' + n + ' judgements')", arg=i + 1)
            per = (time.perf_counter() - start) / clicks
    print(f"Feedback page: {per:.2f} s per judgement ({clicks} automated key presses, each "
          "waiting for the count to update): a lower bound on a person's cost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25,100,200,400,1600")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--oracles", default="digit:7,thick")
    parser.add_argument("--agreement", type=float, default=0.8)
    parser.add_argument("--gen-steps", type=int, default=3000)
    parser.add_argument("--page", action="store_true", help="only the page's cost")
    args = parser.parse_args()
    if args.page:
        page_cost()
    else:
        curves(args)


if __name__ == "__main__":
    main()
