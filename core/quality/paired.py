"""The paired verdict over seeds: does one arm beat another on a quality metric?

Every arm of a seed starts from the same weights and sees the same batches, so seeds
pair the arms: per seed, the difference of the two arms' final values. Over the seeds
we count who wins and bootstrap a 95% confidence interval of the mean difference (a
fixed rng seed: the same seeds give the same interval). An interval that contains 0
is "within noise". Only metrics with a better direction (METRICS `better`) are judged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.engine.metric_info import METRICS
from core.quality import metrics as _registers_quality_metrics  # noqa: F401  (q_* entries)

BOOTSTRAP = 10_000
RNG_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Paired:
    """arm vs base on one metric. diff = arm - base, in the metric's units."""
    metric: str
    arm: str
    base: str
    n: int                 # seeds where both arms have a finite value
    wins: int              # seeds where arm is better (in the metric's direction)
    losses: int            # seeds where base is better
    mean: float            # mean of diff (nan without seeds)
    lo: float              # bootstrap CI of the mean diff (nan with fewer than 2 seeds)
    hi: float

    @property
    def ties(self) -> int:
        return self.n - self.wins - self.losses

    @property
    def within_noise(self) -> bool:
        return not (self.lo > 0 or self.hi < 0)    # nan bounds: no evidence either way

    @property
    def leader(self) -> str | None:
        """The arm the interval says is better, or None (within noise)."""
        if self.within_noise:
            return None
        up = self.lo > 0
        return self.arm if up == (METRICS.entry(self.metric).better == "higher") else self.base


def bootstrap_ci(diffs, n_boot: int = BOOTSTRAP, level: float = LEVEL,
                 seed: int = RNG_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of diffs (nan, nan with fewer than 2)."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def judged_metrics(finals: dict[int, dict[str, dict]]) -> list[str]:
    """Quality metrics with a better direction that some seed's arms logged, in the
    registry's order."""
    present = {m for by_arm in finals.values() for f in by_arm.values() for m in f}
    return [m for m in METRICS if m in present and m.startswith("q_")
            and METRICS.entry(m).better]


def pair(finals: dict[int, dict[str, dict]], metric: str, arm: str, base: str) -> Paired:
    """finals: seed -> arm -> final values (core.jobs.multi_seed.final_values)."""
    a, b = [], []
    for seed in sorted(finals):
        va = finals[seed].get(arm, {}).get(metric, math.nan)
        vb = finals[seed].get(base, {}).get(metric, math.nan)
        if math.isfinite(va) and math.isfinite(vb):
            a.append(va)
            b.append(vb)
    diff = np.array(a) - np.array(b)
    sign = 1 if METRICS.entry(metric).better == "higher" else -1
    lo, hi = bootstrap_ci(diff)
    return Paired(metric, arm, base, n=len(diff), wins=int((sign * diff > 0).sum()),
                  losses=int((sign * diff < 0).sum()),
                  mean=float(diff.mean()) if len(diff) else math.nan, lo=lo, hi=hi)


def verdicts(finals: dict[int, dict[str, dict]], arms: list[str]) -> list[Paired]:
    """Every later arm against the first (the baseline), on every judged metric but
    those equal for the two arms on every seed (the FD floor is the data's own: equal by
    construction, it says nothing about the rules)."""
    base, others = arms[0], arms[1:]
    results = [pair(finals, m, arm, base) for arm in others for m in judged_metrics(finals)]
    return [p for p in results if p.wins or p.losses or p.n == 0]


def _signed(x: float) -> str:
    return f"{x:+.3g}"


def sentence(p: Paired) -> str:
    """'reinforce is better on modes covered in 5 of 5 seeds (+1.2, 95% CI +0.4..+2.0
    vs bce)' or 'modes covered: within noise (...)'."""
    title = METRICS.entry(p.metric).title
    if p.n == 0:
        return f"{title}: no seed has both arms"
    ci = (f"95% CI {_signed(p.lo)}..{_signed(p.hi)}" if p.n > 1 else "one seed, no interval")
    numbers = f"{p.arm} − {p.base} {_signed(p.mean)}, {ci}"
    leader = p.leader
    if leader is None:
        return (f"{title}: within noise ({p.arm} better in {p.wins}, {p.base} in {p.losses} "
                f"of {p.n} seeds; {numbers})")
    wins = p.wins if leader == p.arm else p.losses
    return f"{leader} is better on {title} in {wins} of {p.n} seeds ({numbers})"


def summary_line(results: list[Paired]) -> str:
    return "; ".join(sentence(p) for p in results)


def table_rows(results: list[Paired]) -> list[dict]:
    """One row per (arm, metric) for a table."""
    return [{"metric": METRICS.entry(p.metric).title, "arm": p.arm, "vs": p.base,
             "better": METRICS.entry(p.metric).better, "seeds": p.n,
             "wins": p.wins, "losses": p.losses, "ties": p.ties,
             "mean diff": p.mean, "CI low": p.lo, "CI high": p.hi,
             "verdict": p.leader or "within noise"} for p in results]
