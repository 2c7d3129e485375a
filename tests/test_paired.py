"""The paired verdict over seeds (core/quality/paired.py), against hand-computed cases."""
from __future__ import annotations

import math

import pytest

from core.quality.paired import bootstrap_ci, judged_metrics, pair, sentence, summary_line, verdicts


def finals(rows):
    """rows: seed -> (bce value, reinforce value) of q_modes (higher is better) and
    q_reverse_kl (lower is better, the same numbers)."""
    return {seed: {"bce": {"q_modes": b, "q_reverse_kl": b, "d_loss": 1.0},
                   "reinforce": {"q_modes": r, "q_reverse_kl": r, "d_loss": 2.0}}
            for seed, (b, r) in rows.items()}


def test_bootstrap_of_two_diffs_spans_their_range():
    # resampled means of [0, 2] are 0, 1, 2 with odds 1/4, 1/2, 1/4: 2.5% -> 0, 97.5% -> 2
    assert bootstrap_ci([0.0, 2.0]) == (0.0, 2.0)
    assert bootstrap_ci([1.5, 1.5, 1.5]) == (1.5, 1.5)     # no spread: a point
    assert all(math.isnan(x) for x in bootstrap_ci([1.0]))
    assert bootstrap_ci([0.0, 1.0, 5.0]) == bootstrap_ci([0.0, 1.0, 5.0])   # fixed rng


def test_wins_mean_and_interval_of_a_clear_winner():
    # differences reinforce - bce: 1, 2, 1, 2, 1 -> mean 1.4, every seed a win
    f = finals({0: (5, 6), 1: (5, 7), 2: (6, 7), 3: (4, 6), 4: (7, 8)})
    p = pair(f, "q_modes", "reinforce", "bce")
    assert (p.n, p.wins, p.losses, p.ties) == (5, 5, 0, 0)
    assert p.mean == pytest.approx(1.4)
    assert 1.0 <= p.lo < p.mean < p.hi <= 2.0
    assert p.leader == "reinforce" and not p.within_noise
    text = sentence(p)
    assert text.startswith("reinforce is better on modes covered in 5 of 5 seeds")
    assert "+1.4" in text and "95% CI +" in text
    # the same numbers on a lower-is-better metric: bce wins every seed
    q = pair(f, "q_reverse_kl", "reinforce", "bce")
    assert (q.wins, q.losses, q.leader) == (0, 5, "bce")
    assert sentence(q).startswith("bce is better on reverse KL to uniform in 5 of 5 seeds")


def test_mixed_results_are_within_noise_and_missing_values_are_unpaired():
    f = finals({0: (5, 6), 1: (6, 5), 2: (5, 5), 3: (5, float("nan"))})
    p = pair(f, "q_modes", "reinforce", "bce")
    assert (p.n, p.wins, p.losses, p.ties) == (3, 1, 1, 1)
    assert p.mean == 0 and p.lo < 0 < p.hi and p.leader is None
    assert sentence(p).startswith("modes covered: within noise (reinforce better in 1, "
                                  "bce in 1 of 3 seeds")


def test_only_quality_metrics_with_a_direction_are_judged():
    f = finals({0: (5, 6), 1: (5, 7)})
    f[0]["bce"]["q_accuracy"] = f[0]["reinforce"]["q_accuracy"] = 90.0   # no direction
    assert judged_metrics(f) == ["q_modes", "q_reverse_kl"]
    results = verdicts(f, ["bce", "reinforce"])
    assert [(p.arm, p.base, p.metric) for p in results] == [
        ("reinforce", "bce", "q_modes"), ("reinforce", "bce", "q_reverse_kl")]
    assert summary_line(results).count(";") == 1
    for seed in f.values():   # equal for both arms on every seed: left out
        seed["bce"]["q_fd_floor"] = seed["reinforce"]["q_fd_floor"] = 12.5
    assert "q_fd_floor" not in {p.metric for p in verdicts(f, ["bce", "reinforce"])}
    one = pair({0: f[0]}, "q_modes", "reinforce", "bce")
    assert one.n == 1 and "one seed, no interval" in sentence(one)
