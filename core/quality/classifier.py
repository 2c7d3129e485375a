"""The image classifier behind the image quality metrics and the digit oracles.

A small CNN trained once per data set on a seeded split and cached under
checkpoints/classifiers/ (loaded with weights_only=True), used frozen. Another seed and
split give an independent classifier (the oracles use one, so that the quality metrics
never judge with the model that labelled the preferences).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import math
import time
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from core.base.files import write_atomic
from core.data.datasets import DataSet
from core.quality.metrics import frechet_distance

ARCH_VERSION = 1           # bump when the CNN or its training changes: caches retrain
SPLIT_SEED = 0
TEST_FRACTION = 0.2
MAX_TEST = 10_000
MAX_FLOOR = 10_000         # training images kept for the FD floor
CLASSIFIER_DIR = Path("checkpoints") / "classifiers"


class SmallCNN(nn.Module):
    """conv - pool - conv - pool - fc (the features) - fc K. The defaults are the quality
    classifier's (3x3 convs of 16 and 32, fc 128); the robust judge is a wider one."""

    def __init__(self, image_shape: tuple, classes: int, width: int = 128,
                 channels: tuple = (16, 32), kernel: int = 3) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape = tuple(image_shape)
        self.conv1 = nn.Conv2d(c, channels[0], kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel, padding=kernel // 2)
        self.fc1 = nn.Linear(channels[1] * (h // 4) * (w // 4), width)
        self.fc2 = nn.Linear(width, classes)

    def convolve(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the pooled conv2 maps, the channel means of relu(conv1), of relu(conv2))."""
        x = x.reshape(-1, *self.image_shape)
        if self.conv1.weight.requires_grad or self.conv2.weight.requires_grad:   # training
            c1 = F.relu(self.conv1(x))
            c2 = F.relu(self.conv2(F.max_pool2d(c1, 2)))
            return F.max_pool2d(c2, 2), c1.mean((2, 3)), c2.mean((2, 3))
        return _FrozenConvs.apply(x, self)   # frozen: a reward's features, a judge

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc1(self.convolve(x)[0].flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """t in channels-last memory, its strides explicit even for one channel (where
    .contiguous(memory_format=...) keeps NCHW strides and a conv then stays NCHW)."""
    n, c, h, w = t.shape
    return torch.empty_strided(t.shape, (c * h * w, 1, w * c, c), dtype=t.dtype).copy_(t)


class _FrozenConvs(torch.autograd.Function):
    """SmallCNN.convolve for frozen weights, the same maths as autograd's up to float
    rounding, about twice as fast on a CPU: the maps are channels-last (max-pooling is
    ~8x faster on them than on NCHW ones), the backward (only the input's gradient) is
    written out so no step mixes memory formats (a mixed one is slow), and conv1's
    input gradient is one matmul and a fold (oneDNN is slow with one input channel)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, model: SmallCNN):
        conv1, conv2 = model.conv1, model.conv2
        w2 = _channels_last(conv2.weight)
        c1 = F.conv2d(x, _channels_last(conv1.weight), conv1.bias, padding=conv1.padding)
        p1, i1 = F.max_pool2d_with_indices(c1.relu_(), 2)
        c2 = F.conv2d(p1, w2, conv2.bias, padding=conv2.padding).relu_()
        p2, i2 = F.max_pool2d_with_indices(c2, 2)
        ctx.save_for_backward(c1, i1, p1, c2, i2, w2)
        ctx.model, ctx.size = model, x.shape[-2:]
        return p2, c1.mean((2, 3)), c2.mean((2, 3))

    @staticmethod
    @once_differentiable   # no second derivatives (a double backward raises, not lies)
    def backward(ctx, g_p2, g_m1, g_m2):
        c1, i1, p1, c2, i2, w2 = ctx.saved_tensors
        aten, conv1, conv2 = torch.ops.aten, ctx.model.conv1, ctx.model.conv2
        g_p2 = _channels_last(g_p2)   # it comes NCHW from flatten(1)
        g = aten.max_pool2d_with_indices_backward(g_p2, c2, [2, 2], [2, 2], [0, 0], [1, 1],
                                                  False, i2)
        g = aten.threshold_backward(g.add_(_per_pixel(g_m2, c2)), c2, 0)
        g = aten.convolution_backward(g, p1, w2, None, conv2.stride, conv2.padding,
                                      conv2.dilation, False, [0, 0], 1,
                                      [True, False, False])[0]
        g = aten.max_pool2d_with_indices_backward(g, c1, [2, 2], [2, 2], [0, 0], [1, 1],
                                                  False, i1)
        g = aten.threshold_backward(g.add_(_per_pixel(g_m1, c1)), c1, 0)
        w1 = conv1.weight
        cols = w1.flatten(1).t() @ g.reshape(*g.shape[:2], -1)   # (n, c k k, h w)
        return F.fold(cols, ctx.size, w1.shape[-2:], padding=conv1.padding), None


def _per_pixel(g_mean: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """The gradient of a channel mean, spread over its pixels (broadcastable)."""
    return (g_mean / (maps.shape[2] * maps.shape[3]))[:, :, None, None]


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

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(softmax probabilities, penultimate features) of x."""
        return classify(self.model, x)

    def fd_of_features(self, feats: torch.Tensor) -> float:
        return frechet_distance(feats, self._test_feats)


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


