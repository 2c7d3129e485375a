"""Evaluating a generator: one Evaluator per data set, and the training run's quality hook.

The metrics themselves (and their definitions) are in core/quality/metrics.py; the
image classifier in core/quality/classifier.py.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from pathlib import Path

import torch
from torch import nn

from core.data.datasets import DataSet
from core.engine.rules import RULES
from core.quality.classifier import Classifier, load_or_train_classifier, one_thread
from core.quality.metrics import (
    IMAGE_METRICS,
    POINT_METRICS,
    TOY_METRICS,
    EvalSamples,
    compute_all,
)

EVAL_SAMPLES = 2500        # the PacGAN / VEEGAN sample size
EVAL_SEED = 4242           # fixed z: successive evaluations differ only by the weights
FIRST_EVAL = 100           # the first quality point comes this early in a run


# -- generator output --------------------------------------------------------------------
def eval_noise(n: int, latent_dim: int, seed: int = EVAL_SEED) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, latent_dim, generator=gen)


def generate(G: nn.Module, n: int, seed: int = EVAL_SEED, lock=None) -> torch.Tensor:
    """n samples of the generator's mean output G(z), on the CPU, in float32."""
    first = next(G.parameters())
    latent = G.layers[0].in_features if hasattr(G, "layers") else first.shape[1]
    z = eval_noise(n, latent, seed).to(device=first.device, dtype=first.dtype)
    with torch.no_grad(), (lock if lock is not None else contextlib.nullcontext()):
        out = torch.cat([G(chunk) for chunk in z.split(1024)])
    return out.float().cpu()



# -- evaluators: one per data set, shared by the trainer, the arena and the CLI ------------
class Evaluator:
    """callable(G) -> {q_*: float} for one data set.

    Image evaluators need the classifier: `prepare()` builds it (blocking; seconds from
    the cache, much longer the first time, when it trains), `prepare_async()` builds it in a daemon
    thread. `ready` says whether a call will return scores now; the trainer skips
    evaluations until it is. `unavailable` holds the reason where no scores exist.
    """

    def __init__(self, data: DataSet, cache_dir: str | Path | None = None) -> None:
        self.data = data
        self.cache_dir = cache_dir
        self.classifier: Classifier | None = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.unavailable = _unavailable_reason(data)

    @property
    def metrics(self) -> tuple[str, ...]:
        if self.unavailable:
            return ()
        if self.data.modes is not None:
            return TOY_METRICS
        return IMAGE_METRICS if self.data.is_image else POINT_METRICS

    @property
    def ready(self) -> bool:
        # only images wait for a classifier; 2-D points are scored as they are
        return self.unavailable is None and (not self.data.is_image
                                             or self.classifier is not None)

    def prepare(self, log=None) -> "Evaluator":
        with self._lock:
            if not self.ready and not self.unavailable and self.error is None:
                try:
                    clf = load_or_train_classifier(self.data, self.cache_dir, log)
                    with one_thread():
                        clf.fd_floor(EVAL_SAMPLES)  # the default floor, off the training path
                    self.classifier = clf
                except Exception as exc:  # QualityHook.status shows it; hooks never raise
                    self.error = f"{type(exc).__name__}: {exc}"
                    raise
        return self

    def prepare_async(self) -> None:
        if self.ready or self.unavailable or (self._thread and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._prepare_quietly, daemon=True,
                                        name=f"classifier-{self.data.name}")
        self._thread.start()

    def _prepare_quietly(self) -> None:
        try:
            self.prepare()
        except Exception:
            pass  # kept in self.error

    def __call__(self, G: nn.Module, n: int = EVAL_SAMPLES, lock=None) -> dict[str, float]:
        """Scores of n samples of G's mean output; {} when the metrics are unavailable."""
        if self.unavailable:
            return {}
        if not self.ready:
            self.prepare()
        samples = EvalSamples(generate(G, n, lock=lock), self.data, self.classifier)
        with one_thread():  # see one_thread: faster than 2 threads on a busy 2-core CPU
            return compute_all(self.metrics, samples)


def _unavailable_reason(data: DataSet) -> str | None:
    if data.modes is not None or not data.is_image:
        return None   # 2-D: mode counts, or k-NN precision and coverage without modes
    if data.labels is None:
        return (f"{data.name}: no labels, so no classifier: class coverage, class KL, "
                "confidence and classifier FD are unavailable")
    return None


_EVALUATORS: dict[int, tuple[DataSet, Evaluator]] = {}
_EVALUATORS_LOCK = threading.Lock()


def evaluator_for(data: DataSet) -> Evaluator:
    """The process-wide evaluator of a data set (one classifier per loaded data set)."""
    with _EVALUATORS_LOCK:
        entry = _EVALUATORS.get(id(data))
        if entry is None or entry[0] is not data:
            entry = (data, Evaluator(data))
            _EVALUATORS[id(data)] = entry
        return entry[1]


# -- trainer integration -----------------------------------------------------------------
class QualityHook:
    """A Run's step hook: log the q_* metrics at step min(eval_every, FIRST_EVAL) (a
    first point early in a run, and as early after a rule switch or fork: a fine-tune
    changes fastest at its start), then every cfg.eval_every steps. Runs in the training
    thread, so the UI never waits; an image run whose classifier is not built yet
    builds it in another thread (from the run's start, see warm_up) and evaluates as
    soon as it is ready (the run never freezes)."""

    def __init__(self, data: DataSet) -> None:
        self.data = data
        self.evaluator: Evaluator | None = None
        self.skipped = 0
        self.pending = False        # an evaluation fell due while the classifier was building
        self.last_step = -1         # the step last evaluated (never twice)
        self.seconds = 0.0          # total time spent evaluating (for cost reports)

    def prepare(self, log=None) -> None:
        """Build the classifier now (blocking): for the CLI, where nothing waits on it."""
        if self.evaluator is None:
            self.evaluator = evaluator_for(self.data)
        if not self.evaluator.unavailable:
            self.evaluator.prepare(log)

    def warm_up(self, run) -> None:
        """Start building the classifier in the background when a run starts, so the
        first quality point does not wait for it."""
        if run.cfg.eval_every:
            if self.evaluator is None:
                self.evaluator = evaluator_for(self.data)
            if not self.evaluator.unavailable:
                self.evaluator.prepare_async()

    def __call__(self, run, final: bool = False) -> None:
        """Evaluate run.shown_G when due (see the class), and at the final step when
        `final` (so a budget that is not a multiple of eval_every ends evaluated)."""
        every = run.cfg.eval_every
        step = run.step_count
        if not every or step == self.last_step:
            return
        first = min(every, FIRST_EVAL)   # early points: in a run, and after a rule switch
        due = (final or step % every == 0 or step == first
               or step == run.rule_start + first)
        if not (due or (self.pending and self.evaluator is not None
                        and self.evaluator.ready)):
            return
        if self.evaluator is None:
            self.evaluator = evaluator_for(self.data)
        ev = self.evaluator
        if ev.unavailable or ev.error:
            return
        if not ev.ready:
            ev.prepare_async()
            self.skipped += 1
            self.pending = True
            return
        self.pending = False
        start = time.perf_counter()
        rule = RULES[run.cfg.rule]
        extra = rule.quality if rule.has_quality else None   # a rule's own metrics
        z = eval_noise(EVAL_SAMPLES, run.cfg.latent_dim) if extra is not None else None
        try:
            values = ev(run.shown_G, lock=run.lock)
            own = list(values)   # the evaluator's metrics, not the rule's
            if extra is not None:
                with run.lock:
                    values.update(extra(run, z, run.shown_G))
        except Exception as exc:  # a broken metric must not kill the training run
            ev.error = f"{type(exc).__name__}: {exc}"
            run.log.add_event(step, f"quality metrics failed: {ev.error}")
            return
        self.seconds += time.perf_counter() - start
        self.last_step = step
        run.log.set_at_step(step, values)
        self._score_the_start(run, own, [k for k in values if k not in own], extra, z)

    def _score_the_start(self, run, own: list, rule_names: list, extra, z) -> None:
        """A fine-tune anchored to where it started (rlhf): its first evaluation also
        scores the start (the reference G, sqrt KL 0) where that step's row lacks the
        evaluator's or the rule's metrics, so every curve of the over-optimisation panel
        has its origin (Gao et al.'s plots)."""
        start, log = run.rule_start, run.log
        if not (run.uses_reference and run.step_count > start):
            return

        def unscored(names: list) -> bool:
            logged = log.value_at(start, names[0]) if names else None
            return logged is not None and math.isnan(logged)

        row: dict = {}
        try:
            if unscored(own):
                row.update(self.evaluator(run.G_ref, lock=run.lock))
            if unscored(rule_names):
                with run.lock:
                    row.update(extra(run, z, run.G_ref))
        except Exception as exc:  # as above: the training run goes on
            log.add_event(run.step_count, f"quality metrics of the start failed: {exc}")
        if row:
            log.set_at_step(start, row)

    @property
    def status(self) -> str:
        """A short line for the UI / CLI: ready, building, unavailable or failed."""
        ev = self.evaluator
        if ev is None:
            return "quality metrics: not started"
        if ev.unavailable:
            return f"quality metrics unavailable: {ev.unavailable}"
        if ev.error:
            return f"quality metrics failed: {ev.error}"
        if not ev.ready:
            return f"quality metrics: building the {self.data.name} classifier (skipped {self.skipped})"
        return "quality metrics: on"
