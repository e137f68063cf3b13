"""PNG output with matplotlib only (torchvision is not available on the CPU install)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fewstep.utils.figures import pyplot, save_figure
from fewstep.utils.storage import atomic_write_bytes


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
    import io

    grid = image_grid(images, nrow)
    grid = np.kron(grid, np.ones((scale, scale) + (() if grid.ndim == 2 else (1,)), dtype=grid.dtype))
    buffer = io.BytesIO()
    pyplot().imsave(buffer, grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def save_sample_panels(grids: dict[str, torch.Tensor], path: str | Path) -> Path:
    """One titled grid per image set, stacked top to bottom (the same seeds in the same places); a single set
    without a title is a plain grid."""
    plt = pyplot()
    if len(grids) == 1 and not next(iter(grids)):
        return save_image_grid(next(iter(grids.values())), path)
    tiles = [image_grid(images) for images in grids.values()]
    height, width = tiles[0].shape[:2]
    scale = max(2.0, min(6.0, 600 / width)) / 100  # inches per grid pixel
    fig, axes = plt.subplots(len(tiles), 1, figsize=(width * scale + 0.4, len(tiles) * (height * scale + 0.45)),
                             squeeze=False)  # fmt: skip
    for ax, title, tile in zip(axes[:, 0], grids, tiles, strict=True):
        ax.imshow(tile, cmap="gray" if tile.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return save_figure(fig, path)


def boomerang_coordinates(states: torch.Tensor) -> np.ndarray:
    """(T+1, B, D) trajectories -> (T+1, B, 3) in one basis shared by all: the position along each trajectory's
    own chord x_T -> x_0, then the top two principal directions of the pooled orthogonal complements; every
    coordinate is divided by the trajectory's chord length (x_0 at the origin, x_T at (1, 0, 0))."""
    s = states.double()
    relative = s - s[-1]
    length = relative[0].norm(dim=-1)
    axis = relative[0] / length[:, None]
    along = (relative * axis).sum(-1)
    rest = (relative - along[..., None] * axis) / length[:, None]
    pooled = rest.reshape(-1, rest.shape[-1])
    _, _, vh = torch.linalg.svd(pooled - pooled.mean(0), full_matrices=False)
    return torch.stack([along / length, rest @ vh[0], rest @ vh[1]], -1).numpy()


def plot_geometry(batch, measures: dict, sigmas: torch.Tensor, shape, run_dir: str | Path, show: int = 8) -> dict:
    """The trajectory-geometry views of `task=analyze`; returns name -> PNG path."""
    plt = pyplot()
    run_dir = Path(run_dir)
    sig = sigmas.numpy()
    paths = {}

    def save(fig, name):
        paths[name] = save_figure(fig, run_dir / f"{name}.png", dpi=90)

    from matplotlib.ticker import MaxNLocator

    fig = plt.figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    xyz = boomerang_coordinates(batch.states)
    for b in range(xyz.shape[1]):
        ax.plot(*xyz[:, b].T, lw=0.9, alpha=0.8)
    ax.scatter(*xyz[0].T, color="C3", s=18, depthshade=False, label="x_T (noise, sigma_max)")
    ax.scatter(*xyz[-1].T, color="k", s=18, depthshade=False, label="x_0 (sample)")
    ax.set_xlabel("along the chord x_T -> x_0", labelpad=8)
    ax.set_ylabel("PC 1 of the complement", labelpad=8)
    ax.set_zlabel("PC 2 of the complement", labelpad=8)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(4))
    ax.tick_params(labelsize=8)
    ax.set_title(f"boomerang: {xyz.shape[1]} trajectories in one basis (units: chord length)")
    ax.legend(loc="upper left", fontsize=8)
    save(fig, "boomerang")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    deviation = measures["deviation"].numpy()
    positive = sig > 0
    ax.plot(sig[positive], deviation[positive, : show * 4], color="C0", alpha=0.2, lw=0.8)
    ax.plot(sig[positive], deviation[positive].mean(1), color="k", lw=2, label="mean")
    ax.set(xscale="log", xlabel="sigma", ylabel="deviation from the chord / chord length",
           title=f"distance from the straight line x_T -> x_0 ({deviation.shape[1]} trajectories)")  # fmt: skip
    ax.invert_xaxis()
    ax.legend()
    save(fig, "deviation")

    fig, ax = plt.subplots(figsize=(5.5, 4))
    left = 1 - measures["pca"].double().numpy()  # the variance the top k components leave
    left = np.clip(left, 1e-16, None)
    med, low, high = np.median(left, 0), left.min(0), left.max(0)
    ax.bar(["top 1", "top 2", "top 3"], med, yerr=[med - low, high - med], capsize=6, color="C0")
    ax.set(yscale="log", ylabel="1 - variance explained",
           title=f"PCA per trajectory ({left.shape[0]} samples: median, min-max)")  # fmt: skip
    save(fig, "pca")

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("distance_sampling", "x(sigma)"), ("distance_denoising", "D(x(sigma), sigma)")):
        ax.plot(sig[:-1], np.median(measures[key].numpy(), 1), lw=2, label=label)
    ax.set(xscale="log", yscale="log", xlabel="sigma", ylabel="distance to the final sample (relative)")
    ax.invert_xaxis()
    ax.legend()
    save(fig, "distance_to_final")

    steps = np.linspace(0, len(sig) - 2, 10).round().astype(int)
    rows = []
    for b in range(min(4, batch.states.shape[1])):
        rows.append(batch.states[steps, b].reshape(len(steps), *shape))
        rows.append(batch.denoised[steps, b].reshape(len(steps), *shape))
    strip = torch.cat(rows)
    fig, ax = plt.subplots(figsize=(10, 0.9 * len(rows) + 0.6))
    ax.imshow(image_grid(strip / strip.abs().amax((1, 2, 3), keepdim=True).clamp(min=1), nrow=len(steps)),
              cmap="gray")  # fmt: skip
    ax.set_title("rows: x(sigma), D(x(sigma), sigma) per sample; columns: sigma " +
                 " ".join(f"{sig[i]:.3g}" for i in steps[[0, -1]]), fontsize=8)  # fmt: skip
    ax.axis("off")
    save(fig, "denoising_strip")

    for key, label in (("modes", "effective modes of the KDE softmax"), ("score_deviation", "||D - D_optimal||")):
        if key in measures:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(sig[:-1], np.median(measures[key].numpy(), 1), lw=2)
            ax.set(xscale="log", yscale="log", xlabel="sigma", ylabel=label)
            ax.invert_xaxis()
            save(fig, key)
    return paths
