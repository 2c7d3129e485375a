"""Small test-data writers shared by the core tests."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def put(state, path, value):
    """state with state[path[0]][path[1]]... = value (a deep copy): a crafted checkpoint."""
    import copy

    out = copy.deepcopy(state)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def write_idx_mnist(root: Path, folder: str, n: int = 32, seed: int = 0) -> Path:
    """Write tiny MNIST-format files where torchvision looks for them.

    torchvision reads <root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    (IDX: big-endian magic and sizes, then uint8 data) and wants all four present.
    """
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("t10k", 4)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x803, count, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, count) + labels.tobytes())
    return root


def write_image_folder(path: Path, n: int = 6, bad: int = 1) -> Path:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        array = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
        Image.fromarray(array).save(path / f"img_{i}.png")
    for i in range(bad):
        (path / f"broken_{i}.jpg").write_bytes(b"not an image at all")
    return path


def rule_changes(rule: str, data, folder: Path) -> dict:
    """Config changes a rule needs to run at all: a rule with a reward_model option
    (rlhf, latent) needs a file, so one is fit (tiny, on random labels) for the data."""
    import torch

    from core.engine.rules import takes_reward_model
    from core.feedback.reward_model import train_reward_model

    if not takes_reward_model(rule):
        return {}

    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(len(data.x), (40,), generator=gen)
    p = (torch.rand(20, generator=gen) > 0.5).float()
    model = train_reward_model(data.x[idx[:20]], data.x[idx[20:]], p, data, members=2,
                               features="pixels" if data.is_image else "raw", max_epochs=5)
    return {f"{rule}.reward_model": str(model.save(folder / f"rm-{data.name}.pt"))}


# The one tiny config the contract tests share: small networks, small batches, no
# quality evaluation, a snapshot every other step.
TINY = dict(g_hidden=(16,), d_hidden=(16,), latent_dim=4, batch_size=8, sample_every=2,
            eval_every=0)


def tiny_config(**changes):
    from core.engine.config import preset

    return preset("recommended", **{**TINY, **changes})
