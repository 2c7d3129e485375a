"""Quality metrics: mode coverage on the 2-D toys, classifier-based scores on images.

GAN losses say little about sample quality, so runs are also scored here. Every metric logged into a MetricLog starts with "q_" (the dashboard draws
a "Quality" chart group for every q_* column):

2-D (ring8, grid25), as in the PacGAN / VEEGAN benchmarks, on n = 2,500 samples of
the generator's mean output G(z) (never the policy noise of the reinforce rule):
    q_high_quality  % of samples within 3 std of their nearest mode
    q_modes         modes with at least one high-quality sample
    q_reverse_kl    KL(q || p) in nats: q = histogram of the high-quality samples over
                    the modes, p = uniform. "Reverse" = generated distribution first, the
                    convention of PacGAN's tables; one-mode collapse scores log M (log 8 =
                    2.079, log 25 = 3.219), empty bins of q contribute 0 (0 log 0 = 0).
                    NaN when no sample is high quality (the histogram is empty).

Images with labels (mnist5k, mnist, fashion-mnist): a small CNN classifier, trained
once per data set on a seeded split and cached under checkpoints/classifiers/, used
frozen on n generated images:
    q_classes       classes covered: classes that get at least COVER_SHARE (20%) of a
                    uniform share (n / K) of the confident predictions (max softmax >=
                    CONFIDENT, 0.9); stray misclassifications do not count as coverage
    q_class_kl      KL(q || uniform) of the argmax class histogram of all samples (same
                    convention as q_reverse_kl; one class scores log 10 = 2.303)
    q_confidence    mean max-softmax probability
    q_fd            classifier FD: Frechet distance between the classifier's penultimate
                    features of the generated and of the held-out real images. Not FID
                    (that needs Inception weights); only comparable within a data set.
    q_fd_floor      the same distance between n real training images and the held-out
                    images: what a perfect generator would score at this n
    q_accuracy      the classifier's held-out accuracy (%), so a reader can judge it

Folder data has no labels, so no classifier: its evaluator reports the metrics as
unavailable (with the reason) instead of zeros.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import math
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import write_atomic
from .data import DataSet
from .metric_info import METRICS, quality_names
from .rules import RULES

TOY_METRICS = quality_names("toy")       # declared with their labels in metric_info
IMAGE_METRICS = quality_names("image")
QUALITY_METRICS = TOY_METRICS + IMAGE_METRICS
EVAL_SAMPLES = 2500        # the PacGAN / VEEGAN sample size
EVAL_SEED = 4242           # fixed z: successive evaluations differ only by the weights
FIRST_EVAL = 100           # the first quality point comes this early in a run
HQ_STDS = 3.0              # "high quality": within 3 std of the nearest mode
CONFIDENT = 0.9            # max-softmax above which a prediction counts for coverage
COVER_SHARE = 0.2          # a class is covered with >= 20% of a uniform share


# -- 2-D mode coverage (pure functions on point tensors) ---------------------------------
def kl_to_uniform(counts) -> float:
    """KL(q || uniform) in nats of a histogram; NaN for an empty histogram."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    q = counts / total
    nz = q > 0                       # 0 log 0 = 0: empty bins need no epsilon
    return float(np.sum(q[nz] * np.log(q[nz] * len(q))))


def nearest_mode(points: torch.Tensor, modes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of each point's nearest mode and the distance to it."""
    dist = torch.cdist(points.double(), modes.double())
    d, idx = dist.min(dim=1)
    return idx, d


def toy_quality(points: torch.Tensor, modes: torch.Tensor, std: float) -> dict[str, float]:
    """PacGAN / VEEGAN scores of 2-D points against a Gaussian mixture's modes."""
    idx, dist = nearest_mode(points, modes)
    high = dist <= HQ_STDS * std
    counts = torch.bincount(idx[high], minlength=len(modes)).numpy()
    return {
        "q_high_quality": 100.0 * float(high.double().mean()) if len(points) else float("nan"),
        "q_modes": float((counts > 0).sum()),
        "q_reverse_kl": kl_to_uniform(counts),
    }


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


# -- the image classifier ------------------------------------------------------------------
ARCH_VERSION = 1           # bump when the CNN or its training changes: caches retrain
SPLIT_SEED = 0
TEST_FRACTION = 0.2
MAX_TEST = 10_000
MAX_FLOOR = 10_000         # training images kept for the FD floor
CLASSIFIER_DIR = Path("checkpoints") / "classifiers"


class SmallCNN(nn.Module):
    """conv16 - pool - conv32 - pool - fc128 (the features) - fc K."""

    def __init__(self, image_shape: tuple, classes: int, width: int = 128) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape = tuple(image_shape)
        self.conv1 = nn.Conv2d(c, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * (h // 4) * (w // 4), width)
        self.fc2 = nn.Linear(width, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, *self.image_shape)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def _init_(model: nn.Module, gen: torch.Generator) -> None:
    """PyTorch's default init, U(-1/sqrt(fan_in), +), drawn from a private generator:
    the classifier may train in a background thread, where seeding the global RNG
    would race with other threads."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                module.weight.uniform_(-bound, bound, generator=gen)
                module.bias.uniform_(-bound, bound, generator=gen)


def split_indices(n: int, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train / held-out split of a data set's rows."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = min(MAX_TEST, max(1, int(n * TEST_FRACTION)))
    return perm[n_test:], perm[:n_test]


def data_fingerprint(data: DataSet, seed: int = 0, split_seed: int = SPLIT_SEED) -> str:
    """Hash of the images, labels, split, seed and architecture: a changed data set
    retrains."""
    h = hashlib.sha256()
    h.update(f"arch{ARCH_VERSION}-split{split_seed}-{TEST_FRACTION}-{data.image_shape}".encode())
    if seed:
        h.update(f"-seed{seed}".encode())
    h.update(data.x.detach().cpu().contiguous().numpy().tobytes())
    h.update(data.labels.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_classifier(x: torch.Tensor, y: torch.Tensor, image_shape: tuple, classes: int,
                     seed: int = 0, epochs: int = 15, max_steps: int = 3000,
                     batch: int = 64) -> SmallCNN:
    """Adam on cross-entropy with +-2 pixel random shifts (cheap augmentation)."""
    gen = torch.Generator().manual_seed(seed)
    model = SmallCNN(image_shape, classes)
    _init_(model, gen)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = min(max_steps, epochs * math.ceil(len(x) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=gen)
        images = _shift(x[idx].reshape(-1, *image_shape), gen)
        loss = F.cross_entropy(model(images), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model


def _shift(images: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """One random translation per batch (the background is -1, so pad with -1)."""
    dx, dy = (torch.randint(-max_shift, max_shift + 1, (2,), generator=gen)).tolist()
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    h, w = images.shape[-2:]
    return padded[..., max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]


@torch.no_grad()
def classify(model: SmallCNN, x: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and penultimate features (float64 features)."""
    probs, feats = [], []
    for part in x.split(chunk):
        f = model.features(part.float())
        probs.append(torch.softmax(model.fc2(f), dim=1))
        feats.append(f.double())
    return torch.cat(probs), torch.cat(feats)


def frechet_distance(a, b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows = samples).

    tr sqrt(S1 S2) is computed as the sum of sqrt(eigenvalues) of the symmetric PSD
    matrix sqrt(S1) S2 sqrt(S1), in float64: no non-symmetric sqrtm, no complex parts.
    Torch, not numpy: numpy's BLAS threads ignore one_thread() and took 0.5 s instead
    of 10 ms for 128 features on the busy 2-core CPU.
    """
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    s1, s2 = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))
    w, v = torch.linalg.eigh(s1)
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T
    middle = root1 @ s2 @ root1
    tr_cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = ((a.mean(0) - b.mean(0)) ** 2).sum() + s1.trace() + s2.trace() - 2 * tr_cross
    return max(float(fd), 0.0)  # rounding can give -1e-6 for identical sets


def class_scores(probs: torch.Tensor) -> dict[str, float]:
    """Coverage, class-histogram KL and confidence of classifier outputs."""
    n, k = probs.shape
    conf, pred = probs.max(dim=1)
    confident = torch.bincount(pred[conf >= CONFIDENT], minlength=k).numpy()
    return {
        "q_classes": float((confident >= COVER_SHARE * n / k).sum()),
        "q_class_kl": kl_to_uniform(torch.bincount(pred, minlength=k).numpy()),
        "q_confidence": float(conf.double().mean()),
    }


class Classifier:
    """A trained classifier with its held-out set, accuracy and cached feature stats."""

    def __init__(self, model: SmallCNN, test_x: torch.Tensor, train_x: torch.Tensor,
                 accuracy: float, train_seconds: float, fingerprint: str) -> None:
        self.model, self.test_x, self.train_x = model, test_x, train_x
        self.accuracy, self.train_seconds, self.fingerprint = accuracy, train_seconds, fingerprint
        self._test_feats = classify(model, test_x)[1]
        self._floors: dict[int, float] = {}

    def fd_to_test(self, x: torch.Tensor) -> float:
        return frechet_distance(classify(self.model, x)[1], self._test_feats)

    def fd_floor(self, n: int) -> float:
        """FD of n real training images vs the held-out images, at the generated sample
        size because FD is biased by n (train_x is already in a random order)."""
        n = min(n, len(self.train_x))
        if n not in self._floors:
            self._floors[n] = self.fd_to_test(self.train_x[:n])
        return self._floors[n]

    def scores(self, x: torch.Tensor) -> dict[str, float]:
        probs, feats = classify(self.model, x)
        out = class_scores(probs)
        out["q_fd"] = frechet_distance(feats, self._test_feats)
        out["q_fd_floor"] = self.fd_floor(len(x))
        out["q_accuracy"] = self.accuracy
        return out


def cache_path(data: DataSet, fingerprint: str, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or CLASSIFIER_DIR) / f"{data.name}-{fingerprint}.pt"


def load_or_train_classifier(data: DataSet, cache_dir: str | Path | None = None,
                             log=None, seed: int = 0,
                             split_seed: int = SPLIT_SEED) -> Classifier:
    """The data set's classifier: from the cache when the fingerprint matches, else
    trained (seeded) and cached. Loaded with weights_only=True. Another seed and split
    give an independent classifier (the preference oracles use one, so that the
    quality metrics never judge with the model that labelled the preferences)."""
    if data.labels is None or not data.is_image:
        raise ValueError(f"{data.name}: a classifier needs labelled images")
    fingerprint = data_fingerprint(data, seed, split_seed)
    path = cache_path(data, fingerprint, cache_dir)
    x, y = data.x.detach().cpu(), data.labels.detach().cpu()
    train_idx, test_idx = split_indices(len(x), split_seed)
    classes = int(y.max()) + 1
    model = SmallCNN(data.image_shape, classes)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        model.eval()
        accuracy, seconds = float(state["accuracy"]), float(state["train_seconds"])
    except Exception:  # no cache yet, or an unreadable one: (re)train and overwrite it
        if log:
            log(f"training the {data.name} classifier once (cached in {path.parent}) ...")
        start = time.perf_counter()
        with one_thread():
            model = train_classifier(x[train_idx], y[train_idx], data.image_shape, classes,
                                     seed=seed)
        seconds = time.perf_counter() - start
        probs, _ = classify(model, x[test_idx])
        accuracy = 100.0 * float((probs.argmax(1) == y[test_idx]).double().mean())
        _save_atomic({"model": model.state_dict(), "accuracy": accuracy,
                      "train_seconds": seconds, "fingerprint": fingerprint,
                      "arch_version": ARCH_VERSION, "data": data.name}, path)
    # FD floors need at most a few thousand training images: keep a bounded random subset
    floor_x = x[train_idx[:MAX_FLOOR]]
    return Classifier(model, x[test_idx], floor_x, accuracy, seconds, fingerprint)


@contextlib.contextmanager
def one_thread():
    """One intra-op thread for this OS thread only (the OpenMP setting is per thread).

    Next to other work on a small CPU, more threads are slower (OpenMP spin-waits when
    cores are oversubscribed; bench/eval_cost.py measures it), and a training run in
    another thread keeps its own setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _save_atomic(obj: dict, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(buf.getvalue(), path)


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
        return TOY_METRICS if self.data.modes is not None else IMAGE_METRICS

    @property
    def ready(self) -> bool:
        return self.unavailable is None and (self.data.modes is not None
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
        samples = generate(G, n, lock=lock)
        if self.data.modes is not None:
            return toy_quality(samples, self.data.modes, self.data.mode_std)
        with one_thread():  # see one_thread: faster than 2 threads on a busy 2-core CPU
            return self.classifier.scores(samples)


def _unavailable_reason(data: DataSet) -> str | None:
    if data.modes is not None:
        return None
    if not data.is_image:
        return f"{data.name}: no quality metrics for this kind of data"
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


def generator_from_state(state: dict, ema: bool = False) -> tuple[nn.Module, DataSet]:
    """The generator of a run state (a checkpoint or one arena arm), on the CPU; with
    `ema`, its EMA weights (a checkpoint saved before EMA existed has none: an error)."""
    from .checkpoint import CheckpointError, config_of  # lazy: checkpoint imports data
    from .data import load_dataset
    from .models import build_models

    cfg = config_of(state)
    data = load_dataset(cfg)
    G, _ = build_models(cfg, data.dim, data.is_image)
    if ema and "generator_ema" not in state:
        raise CheckpointError("this checkpoint holds no EMA weights (saved before EMA "
                              "existed); leave out --ema")
    G.load_state_dict(state["generator_ema" if ema else "generator"])
    return G.eval(), data


def evaluate_state(state: dict, n: int = EVAL_SAMPLES, log=None, ema: bool = False) -> dict:
    """Scores of a run state's generator, with its step and data set; metrics that do
    not exist for the data set are named under "unavailable"."""
    G, data = generator_from_state(state, ema)
    ev = evaluator_for(data)
    out: dict = {"step": int(state["step"]), "data": data.name, "n": n}
    if ev.unavailable:
        out["unavailable"] = ev.unavailable
        return out
    ev.prepare(log)
    out.update(ev(G, n))
    return out


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
               or step == getattr(run, "rule_start", 0) + first)
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
        extra = getattr(RULES[run.cfg.rule], "quality", None)   # a rule's own metrics
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
        start, log = getattr(run, "rule_start", 0), run.log
        if not (getattr(run, "uses_reference", False) and run.step_count > start):
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


# -- text output (CLI) --------------------------------------------------------------------
def json_safe(obj):
    """NaN (e.g. reverse KL with no high-quality sample) -> None, for strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def describe(result: dict) -> str:
    """A metrics dict from evaluate_state as aligned text lines."""
    head = f"{result.get('data')} at step {result.get('step')}, n = {result.get('n')}"
    if "unavailable" in result:
        return f"{head}\nunavailable: {result['unavailable']}"
    lines = [head]
    for key in QUALITY_METRICS:
        if key in result:
            entry = METRICS.entry(key)
            label = entry.title + (f" ({entry.unit})" if entry.unit else "")
            lines.append(f"  {label:<30} {result[key]:.4g}  ({key})")
    return "\n".join(lines)
