"""Quality metrics pinned to known answers.

The image classifier is trained once per test session into a temporary cache (about
15 s on 2 cores), so these tests also check that training from scratch reaches the
accuracy the metrics rely on.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from core.cli.main import main
from core.data.datasets import (
    GRID25_STD,
    RING8_STD,
    DataSet,
    grid25_modes,
    load_by_name,
    ring8_modes,
    sample_mixture,
)
from core.engine.config import TrainConfig
from core.engine.metric_log import MetricLog
from core.engine.trainer import Trainer
from core.quality import classifier as classifier_module
from core.quality import metrics as quality_metrics
from core.quality.classifier import load_or_train_classifier, split_indices
from core.quality.evaluate import Evaluator, QualityHook, evaluator_for
from core.quality.metrics import (
    IMAGE_METRICS,
    EvalSamples,
    class_scores,
    compute_all,
    frechet_distance,
    kl_to_uniform,
    toy_quality,
)

TOYS = [("ring8", ring8_modes, RING8_STD), ("grid25", grid25_modes, GRID25_STD)]
P_WITHIN_3_STD = 1 - math.exp(-4.5)   # 2-D Gaussian: P(|x - mu| <= 3 std) = 98.89%


# -- 2-D -----------------------------------------------------------------------------------
def test_kl_to_uniform_known_values():
    assert kl_to_uniform([5, 5, 5, 5]) == pytest.approx(0.0)
    assert kl_to_uniform([7, 0, 0, 0]) == pytest.approx(math.log(4))
    assert kl_to_uniform([1, 1, 0, 0]) == pytest.approx(math.log(2))
    assert math.isnan(kl_to_uniform([0, 0, 0]))


@pytest.mark.parametrize("name,modes_fn,std", TOYS)
def test_real_toy_samples_score_perfectly(name, modes_fn, std):
    modes = modes_fn()
    points, _ = sample_mixture(modes, std, 2500, seed=5)
    q = toy_quality(points, modes, std)
    assert q["q_modes"] == len(modes)
    assert q["q_high_quality"] == pytest.approx(100 * P_WITHIN_3_STD, abs=0.8)
    assert q["q_reverse_kl"] < 0.02


@pytest.mark.parametrize("name,modes_fn,std", TOYS)
def test_single_mode_scores_one_mode_and_log_m(name, modes_fn, std):
    modes = modes_fn()
    points = modes[3] + std * torch.randn(2500, 2, generator=torch.Generator().manual_seed(0))
    q = toy_quality(points, modes, std)
    assert q["q_modes"] == 1
    assert q["q_reverse_kl"] == pytest.approx(math.log(len(modes)))   # log 8, log 25


@pytest.mark.parametrize("name,modes_fn,std", TOYS)
def test_far_points_score_zero_high_quality(name, modes_fn, std):
    points = torch.full((2500, 2), 100.0)
    q = toy_quality(points, modes_fn(), std)
    assert q["q_high_quality"] == 0 and q["q_modes"] == 0
    assert math.isnan(q["q_reverse_kl"])   # no high-quality sample: no histogram


def test_toy_evaluator_scores_the_generators_mean_output():
    data = load_by_name("ring8")

    collapsed = torch.nn.Linear(4, 2)    # every z to mode 2
    with torch.no_grad():
        collapsed.weight.zero_()
        collapsed.bias.copy_(data.modes[2])
    q = evaluator_for(data)(collapsed, n=500)
    assert q == {"q_high_quality": 100.0, "q_modes": 1.0,
                 "q_reverse_kl": pytest.approx(math.log(8))}


# -- Frechet distance --------------------------------------------------------------------------
def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + [3.0, 0.0, 4.0]) == pytest.approx(25.0, rel=1e-9)
    # means m and 2 m, covariances S and 4 S: |m|^2 + tr(S + 4 S - 2 * 2 S) = |m|^2 + tr(S)
    expected = (a.mean(0) ** 2).sum() + np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 0.5
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = linalg.sqrtm(s1 @ s2).real
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * cross)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


# -- images ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mnist5k():
    return load_by_name("mnist5k")


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("classifiers")


@pytest.fixture(scope="session")
def classifier(mnist5k, classifier_dir):
    start = time.perf_counter()
    clf = load_or_train_classifier(mnist5k, classifier_dir)
    print(f"mnist5k classifier: {clf.accuracy:.1f}% held out, "
          f"trained in {time.perf_counter() - start:.1f} s")
    return clf


def held_out(data):
    _, test_idx = split_indices(len(data))
    return data.x[test_idx], data.labels[test_idx]


def image_scores(classifier, data, x) -> dict:
    """Every image metric, through the registry's compute functions."""
    return compute_all(IMAGE_METRICS, EvalSamples(x, data, classifier))


def test_classifier_accuracy_on_mnist5k(classifier):
    assert classifier.accuracy >= 95.0
    assert classifier.train_seconds < 90


def test_real_held_out_images_cover_all_classes(classifier, mnist5k):
    x, _ = held_out(mnist5k)
    q = image_scores(classifier, mnist5k, x)
    assert q["q_classes"] == 10
    assert q["q_class_kl"] < 0.05
    assert q["q_confidence"] > 0.9
    assert q["q_fd"] == pytest.approx(0.0, abs=1e-6)   # the held-out set against itself


def test_one_digit_covers_one_class(classifier, mnist5k):
    x, y = held_out(mnist5k)
    q = image_scores(classifier, mnist5k, x[y == 3])
    assert q["q_classes"] == 1
    assert q["q_class_kl"] > 0.8 * math.log(10)


def test_classifier_fd_real_is_far_below_noise(classifier, mnist5k):
    noise = torch.rand(1000, mnist5k.dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    floor = classifier.fd_floor(1000)
    assert floor < 0.05 * image_scores(classifier, mnist5k, noise)["q_fd"]
    assert floor > 0    # train vs held-out images differ a little


def test_class_scores_definitions():
    confident = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.05, 0.95], [0.6, 0.4]])
    q = class_scores(confident)
    assert q["q_classes"] == 2          # each class has >= 20% of a uniform share
    assert q["q_class_kl"] == pytest.approx(kl_to_uniform([3, 1]))
    assert q["q_confidence"] == pytest.approx((0.95 * 3 + 0.6) / 4)


def test_classifier_cache_is_reused_and_keyed_by_the_data(classifier, mnist5k, classifier_dir):
    files = list(classifier_dir.glob("mnist5k-*.pt"))
    assert len(files) == 1
    start = time.perf_counter()
    again = load_or_train_classifier(mnist5k, classifier_dir)
    assert time.perf_counter() - start < 10      # loaded, not retrained
    assert again.accuracy == classifier.accuracy
    changed = DataSet("mnist5k", mnist5k.x[:100].clone(), mnist5k.labels[:100].clone(),
                      mnist5k.image_shape)
    assert classifier_module.data_fingerprint(changed) != classifier.fingerprint
    state = torch.load(files[0], weights_only=True)
    assert state["fingerprint"] == classifier.fingerprint


def test_unlabelled_images_say_metrics_are_unavailable():
    data = DataSet("folder", torch.zeros(4, 784), None, (1, 28, 28))
    ev = Evaluator(data)
    assert ev.unavailable and "no labels" in ev.unavailable
    assert ev.metrics == () and not ev.ready
    G = torch.nn.Linear(3, 784)
    assert ev(G) == {}


# -- trainer and CLI ---------------------------------------------------------------------------
def test_trainer_with_eval_every_logs_quality_columns():
    cfg = TrainConfig(data="ring8", latent_dim=8, g_hidden=(32,), d_hidden=(32,),
                      steps=40, eval_every=20, device="cpu")
    trainer = Trainer(cfg)
    trainer.start()
    trainer._thread.join(30)
    assert trainer.status.state == "finished"
    frame = trainer.log.to_frame()
    rows = frame.dropna(subset=["q_modes"])
    assert list(rows["step"]) == [20, 40]
    assert set(quality_metrics.TOY_METRICS) <= set(frame.columns)
    assert b"q_high_quality" in trainer.log.to_csv()


def test_hook_skips_until_the_classifier_is_ready():
    class NotReady:
        unavailable = error = None
        ready = False
        asked = 0

        def prepare_async(self):
            self.asked += 1

    hook = QualityHook(data=None)
    hook.evaluator = NotReady()

    class FakeTrainer:
        cfg = TrainConfig(eval_every=5)
        step_count = 10

    hook(FakeTrainer())
    assert hook.evaluator.asked == 1 and hook.skipped == 1


def test_image_trainer_logs_classifier_metrics(mnist5k, classifier):
    cfg = TrainConfig(data="mnist5k", g_hidden=(32,), d_hidden=(32,), steps=4, eval_every=2,
                      device="cpu")
    trainer = Trainer(cfg)
    evaluator_for(trainer.data).classifier = classifier   # as if built in the background
    for _ in range(4):
        trainer.step_once()   # a step and its hooks
    latest = trainer.log.latest()
    assert set(quality_metrics.IMAGE_METRICS) <= set(latest)
    assert latest["q_accuracy"] == classifier.accuracy


def test_cli_eval_prints_metrics_and_rejects_bad_input(tmp_path, capsys):
    cfg = TrainConfig(data="grid25", latent_dim=8, g_hidden=(16,), d_hidden=(16,), device="cpu")
    trainer = Trainer(cfg)
    trainer.step()
    path = trainer.save_checkpoint(tmp_path / "g.pt")
    assert main(["eval", str(path), "--n", "500", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 1 and result["n"] == 500
    assert set(quality_metrics.TOY_METRICS) <= set(result)
    assert main(["eval", str(path)]) == 0
    assert "modes covered" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "missing.pt")]) == 2
    assert main(["eval", str(path), "--n", "1"]) == 2


def test_changed_or_corrupt_cache_retrains(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, 784, generator=gen) * 2 - 1
    data = DataSet("tiny", x, torch.arange(200) % 10, (1, 28, 28))
    first = load_or_train_classifier(data, tmp_path)
    path = classifier_module.cache_path(data, first.fingerprint, tmp_path)
    path.write_bytes(b"not a checkpoint")
    again = load_or_train_classifier(data, tmp_path)       # retrained, file rewritten
    assert torch.load(path, weights_only=True)["fingerprint"] == first.fingerprint
    assert again.accuracy == first.accuracy                 # seeded: the same classifier
    changed = DataSet("tiny", -x, data.labels, (1, 28, 28))
    load_or_train_classifier(changed, tmp_path)
    assert len(list(tmp_path.glob("tiny-*.pt"))) == 2


def test_first_quality_point_comes_early_and_a_late_classifier_catches_up():
    """eval_every 1000: the first point is at step 100, not 1000. An evaluation that
    falls due while the classifier is still building happens once it is ready."""
    from core.quality.evaluate import FIRST_EVAL

    trainer = Trainer(TrainConfig(data="ring8", latent_dim=2, eval_every=1000))
    for _ in range(FIRST_EVAL + 1):
        trainer.step_once()
    assert list(trainer.log.to_frame().dropna(subset=["q_modes"]).step) == [FIRST_EVAL]

    class Late:
        unavailable, error, ready = None, None, False

        def prepare_async(self):
            pass

        def __call__(self, G, lock=None):
            return {"q_modes": 3.0}

    hook = QualityHook(data=None)
    hook.evaluator = Late()

    class FakeRun:
        cfg = TrainConfig(eval_every=5)
        step_count = 5
        rule_start = 0
        uses_reference = False
        lock = None
        shown_G = None
        log = MetricLog()

    run = FakeRun()
    hook(run)                              # due at 5, classifier not ready: pending
    assert hook.pending and hook.skipped == 1
    run.step_count, hook.evaluator.ready = 7, True
    run.log.append(7, {"d_loss": 1.0})
    hook(run)                              # ready at 7: evaluated now, not at 10
    assert hook.last_step == 7 and run.log.latest()["q_modes"] == 3.0
