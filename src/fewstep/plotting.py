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


def plot_gits(record: dict, path: str | Path) -> Path:
    """GITS sigmas against hand-crafted schedules of the same length (log axis), and the cost matrix heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fewstep.schedules import SCHEDULES

    sigmas = np.array(record["sigmas"])
    grid = np.array(record["grid"])
    steps = len(sigmas) - 1
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, fn in SCHEDULES.items():
        left.plot(range(steps + 1), fn(steps, grid[-1], grid[0]).numpy(), "--", marker=".", alpha=0.7, label=name)
    left.plot(range(steps + 1), sigmas, "k-", marker="o", lw=2, label="gits")
    left.set(yscale="log", xlabel="step", ylabel="sigma", title=f"{steps}-step schedules")
    left.legend()
    cost = np.array(record["cost"], dtype=float)
    cost[np.tril_indices_from(cost)] = np.nan
    image = right.imshow(cost, cmap="viridis", origin="upper")
    path_idx = record["indices"]
    right.plot(path_idx[1:], path_idx[:-1], "r.-", label="searched path (from i to j)")
    right.set(
        xlabel="to grid point j", ylabel="from grid point i", title=f"cost matrix ({record['settings']['metric']})"
    )
    right.legend(loc="lower left")
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
