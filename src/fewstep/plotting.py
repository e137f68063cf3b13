"""PNG output with matplotlib only (torchvision is not available on the CPU install)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (rows*H, cols*W[, C]) array in [0, 1]."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    n, c, h, w = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((c, rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for k in range(n):
        r, q = divmod(k, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = images[k]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = image_grid(images, nrow)
    grid = np.kron(grid, np.ones((scale, scale) + (() if grid.ndim == 2 else (1,)), dtype=grid.dtype))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
    return path
