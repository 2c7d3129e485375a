"""Fixed-noise sample snapshots: PNG grids for images, point sets for 2-D data.

Each snapshot is encoded once when it is taken, so the dashboard only forwards
bytes. The store is bounded: when full it drops every other snapshot (keeping the
first and the newest), which thins the history evenly, never randomly.
"""
from __future__ import annotations

import functools
import io
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

# The grid PNG rule (signature, caps, CRCs, IEND) is declared once, in the schema, which
# checks every snapshot at load; snapshot_image applies it again to any bytes it is given.
# The caps are re-exported for callers that size pictures by them.
from core.io.schema import MAX_GRID_BYTES, MAX_GRID_SIDE, CheckpointError, png_problem  # noqa: F401

HEATMAP_RES = 48  # D heatmap resolution for 2-D data (48 x 48 logits per snapshot)


@dataclass(frozen=True)
class Snapshot:
    step: int
    png: bytes | None = None              # image data: the grid, PNG encoded
    points: np.ndarray | None = None      # 2-D data: (N, 2) float32 generated points
    heatmap: np.ndarray | None = None     # 2-D data: (RES, RES) float32 D(x) on `extent`
    extent: tuple | None = None           # (xmin, xmax, ymin, ymax) of the heatmap


def grid_png(images: torch.Tensor, image_shape: tuple, nrow: int = 8) -> bytes:
    """(N, C*H*W) tensor in [-1, 1] -> PNG bytes of a make_grid picture."""
    from PIL import Image
    from torchvision.utils import make_grid

    batch = images.detach().float().cpu().view(-1, *image_shape)
    grid = make_grid(batch, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    array = (grid.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
    if array.shape[2] == 1:
        array = array[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def grid_images(png: bytes, image_shape: tuple, n: int | None = None, nrow: int = 8,
                padding: int = 2, step: int | None = None) -> torch.Tensor:
    """The inverse of grid_png: the first n images of a grid as an (n, C*H*W) tensor in
    [-1, 1] (8-bit exact), so a past snapshot can be measured like live samples. The
    grid is checked and decoded by snapshot_image (SnapshotImageError naming `step`)."""
    c, h, w = image_shape
    with snapshot_image(png, step) as img:
        pixels = np.asarray(img.convert("L" if c == 1 else "RGB"), dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    cols = max(1, (pixels.shape[1] - padding) // (w + padding))
    rows = max(1, (pixels.shape[0] - padding) // (h + padding))
    per_row = min(cols, nrow)   # make_grid narrows its rows to fewer images than nrow
    count = min(rows * per_row, n or rows * per_row)
    out = []
    for i in range(count):
        y, x = padding + (i // per_row) * (h + padding), padding + (i % per_row) * (w + padding)
        out.append(pixels[y:y + h, x:x + w].transpose(2, 0, 1).reshape(-1))
    return torch.from_numpy(np.stack(out) / 127.5 - 1.0).float()


class SnapshotImageError(CheckpointError):
    """A snapshot's grid PNG is too large, cut short or damaged. A CheckpointError: the
    grid comes from a checkpoint (a live run's only from one it resumed), so the CLI and
    the pages report it as one line like any other damaged file."""


def snapshot_image(png: bytes, step: int | None = None):
    """An untrusted snapshot grid PNG as a fully loaded PIL image. Its structure is
    checked by the schema's rule (core.io.schema.png_problem: the size against the caps,
    every chunk against its CRC, the IEND) before a pixel is decompressed; anything wrong
    is one SnapshotImageError naming the snapshot's step."""
    from PIL import Image

    problem = png_problem(png)
    if problem is None:
        try:
            img = Image.open(io.BytesIO(png), formats=["PNG"])
            img.load()   # decode now: a bad stream fails here, not in a later resize
            return img
        except Exception as exc:   # hostile bytes: Pillow and zlib raise many kinds
            detail = " ".join(str(exc).split())[:120]
            problem = f"cannot be decoded ({type(exc).__name__}: {detail})"
    where = "a snapshot" if step is None else f"the snapshot of step {step:,}"
    raise SnapshotImageError(f"{where}: its sample grid PNG {problem}; the file is "
                             "damaged or not from GAN RL Lab")


@functools.lru_cache(maxsize=16)
def grid_problem(snap: Snapshot) -> str | None:
    """snapshot_image's verdict on an image snapshot's grid (snap.png), as its one-line
    message, or None where the grid decodes. Remembered for the last 16 snapshots asked
    about (a Snapshot is immutable), so a page that shows the same grid on every refresh
    decodes it once."""
    try:
        snapshot_image(snap.png, snap.step).close()
    except SnapshotImageError as exc:
        return str(exc)
    return None


@torch.no_grad()
def d_heatmap(D, extent: tuple, res: int = HEATMAP_RES) -> np.ndarray:
    """D's probability on a res x res grid over extent; rows are y, columns x."""
    xmin, xmax, ymin, ymax = extent
    device = next(D.parameters()).device
    xs = torch.linspace(xmin, xmax, res, device=device)
    ys = torch.linspace(ymin, ymax, res, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    # each grid point on its own: a packed D scores it as the pack (x, ..., x)
    return torch.sigmoid(D.score_points(grid)).view(res, res).float().cpu().numpy()


class SnapshotStore:
    """Bounded history: every `stride`-th snapshot plus the newest one.

    When the aligned ones fill the store the stride doubles and every other one is
    dropped, so the kept history stays evenly spaced however long the run.
    """

    def __init__(self, max_snapshots: int = 60) -> None:
        self.max = max_snapshots
        self._items: list[Snapshot] = []
        self._seqs: list[int] = []       # arrival number of each kept snapshot
        self._next_seq = 0
        self._stride = 1
        self._lock = threading.Lock()

    def add(self, snap: Snapshot) -> None:
        with self._lock:
            if self._items and self._items[-1].step == snap.step:
                self._items[-1] = snap
                return
            self._items.append(snap)
            self._seqs.append(self._next_seq)
            self._next_seq += 1
            self._thin()

    def _thin(self) -> None:
        def keep(i: int) -> bool:
            return self._seqs[i] % self._stride == 0 or i == len(self._items) - 1

        while len(self._items) > self.max or not all(keep(i) for i in range(len(self._items))):
            if len(self._items) > self.max:
                self._stride *= 2
            kept = [i for i in range(len(self._items)) if keep(i)]
            self._items = [self._items[i] for i in kept]
            self._seqs = [self._seqs[i] for i in kept]

    def all(self) -> list[Snapshot]:
        with self._lock:
            return list(self._items)

    def latest(self) -> Snapshot | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def steps(self) -> list[int]:
        with self._lock:
            return [s.step for s in self._items]

    def at_step(self, step: int) -> Snapshot | None:
        """The snapshot taken at `step`, or the latest one before it."""
        with self._lock:
            best = None
            for snap in self._items:
                if snap.step <= step:
                    best = snap
            return best or (self._items[0] if self._items else None)

    # -- persistence: plain tensors and lists only (weights_only checkpoints) ----------
    def state(self) -> list[dict]:
        out = []
        with self._lock:
            pairs = list(zip(self._items, self._seqs))
        for s, seq in pairs:
            item: dict = {"step": s.step, "seq": seq}
            if s.png is not None:
                item["png"] = torch.frombuffer(bytearray(s.png), dtype=torch.uint8)
            if s.points is not None:
                item["points"] = torch.from_numpy(s.points.copy())
                item["heatmap"] = torch.from_numpy(s.heatmap.copy())
                item["extent"] = list(s.extent)
            out.append(item)
        return out

    @classmethod
    def from_state(cls, items: list[dict], max_snapshots: int) -> "SnapshotStore":
        store = cls(max_snapshots)
        for item in items:
            png = bytes(item["png"].numpy().tobytes()) if "png" in item else None
            points = item["points"].numpy() if "points" in item else None
            heatmap = item["heatmap"].numpy() if "heatmap" in item else None
            extent = tuple(item["extent"]) if "extent" in item else None
            store._items.append(Snapshot(int(item["step"]), png, points, heatmap, extent))
            store._seqs.append(int(item.get("seq", len(store._seqs))))
        store._next_seq = store._seqs[-1] + 1 if store._seqs else 0
        # Recover the stride the history was thinned with: the largest power of two
        # that divides every aligned arrival number.
        common = math.gcd(*store._seqs[:-1]) if len(store._seqs) > 1 else 0
        store._stride = common & -common if common else 1
        return store
