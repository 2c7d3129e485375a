"""The source document's training loop, as written, on the embedded mnist5k data.

This is the reference for bench/engine.py: per-sample PIL -> ToTensor -> Normalize
through a DataLoader, sigmoid + BCELoss, Adam lr 2e-4 with default betas, batch 64,
and two generator forwards per step (one for D, one for G). Only the data source
differs from the source (the offline MNIST subset instead of a download).

    python bench/seed_loop.py --steps 300
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.data.datasets import load_mnist5k  # noqa: E402


class MnistImages(Dataset):
    """mnist5k as uint8 PIL images, like torchvision.datasets.MNIST hands them out."""

    def __init__(self, transform) -> None:
        pixels = ((load_mnist5k().x + 1) * 127.5).round().to(torch.uint8)
        self.images = pixels.view(-1, 28, 28).numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], mode="L")), 0


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(100, 128), nn.ReLU(), nn.Linear(128, 128),
                                   nn.ReLU(), nn.Linear(128, 784), nn.Tanh())

    def forward(self, z):
        return self.model(z)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128),
                                   nn.ReLU(), nn.Linear(128, 1), nn.Sigmoid())

    def forward(self, x):
        return self.model(x)


def run(steps: int, seed: int = 0) -> float:
    """Train for `steps` iterations; return steps per second (after a short warm-up)."""
    torch.manual_seed(seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    loader = DataLoader(MnistImages(transform), batch_size=64, shuffle=True)
    G, D = Generator(), Discriminator()
    criterion = nn.BCELoss()
    optimizer_G = torch.optim.Adam(G.parameters(), lr=0.0002)
    optimizer_D = torch.optim.Adam(D.parameters(), lr=0.0002)
    warmup, done, start = 20, 0, 0.0
    while done < steps + warmup:
        for images, _ in loader:
            if done == warmup:
                start = time.perf_counter()
            batch = images.size(0)
            real_images = images.view(batch, -1)
            real_labels = torch.ones(batch, 1)
            fake_labels = torch.zeros(batch, 1)
            # Train Discriminator
            outputs = D(real_images)
            d_loss_real = criterion(outputs, real_labels)
            z = torch.randn(batch, 100)
            fake_images = G(z)
            outputs = D(fake_images.detach())
            d_loss_fake = criterion(outputs, fake_labels)
            d_loss = d_loss_real + d_loss_fake
            optimizer_D.zero_grad()
            d_loss.backward()
            optimizer_D.step()
            # Train Generator (the source draws fresh z and runs G a second time)
            z = torch.randn(batch, 100)
            fake_images = G(z)
            outputs = D(fake_images)
            g_loss = criterion(outputs, real_labels)
            optimizer_G.zero_grad()
            g_loss.backward()
            optimizer_G.step()
            done += 1
            if done >= steps + warmup:
                break
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    print(f"seed loop: {run(parser.parse_args().steps):.1f} steps/s")
