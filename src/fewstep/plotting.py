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
        if name == "discrete":  # needs the model's betas, which the record does not hold
            continue
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


def _boomerang_coordinates(states: torch.Tensor) -> np.ndarray:
    """(T+1, D) -> (T+1, 3): along the chord x_T -> x_0, then two PCA axes of the orthogonal complement,
    all divided by the chord length."""
    s = states.double()
    origin, chord = s[-1], s[0] - s[-1]
    length = chord.norm()
    axis = chord / length
    along = (s - origin) @ axis
    rest = (s - origin) - along[:, None] * axis
    _, _, vh = torch.linalg.svd(rest - rest.mean(0), full_matrices=False)
    return (torch.stack([along, rest @ vh[0], rest @ vh[1]], 1) / length).numpy()


def plot_geometry(batch, measures: dict, sigmas: torch.Tensor, shape, run_dir: str | Path, show: int = 8) -> dict:
    """The trajectory-geometry views of `task=analyze`; returns name -> PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    sig = sigmas.numpy()
    paths = {}

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(run_dir / f"{name}.png", dpi=90)
        plt.close(fig)
        paths[name] = run_dir / f"{name}.png"

    fig = plt.figure(figsize=(6, 5))
    ax = fig.add_subplot(projection="3d")
    for b in range(min(show, batch.states.shape[1])):
        xyz = _boomerang_coordinates(batch.states[:, b])
        ax.plot(*xyz.T, lw=1)
    ax.set(xlabel="along x_T - x_0", ylabel="PC 1 (orthogonal)", zlabel="PC 2 (orthogonal)", title="boomerang")
    save(fig, "boomerang")

    fig, ax = plt.subplots(figsize=(6, 4))
    deviation = measures["deviation"].numpy()
    ax.plot(sig, deviation[:, : show * 4], color="C0", alpha=0.2, lw=0.8)
    ax.plot(sig, deviation.mean(1), color="k", lw=2, label="mean")
    ax.set(xscale="symlog", xlabel="sigma", ylabel="deviation from the chord / chord length", title="shape")
    ax.invert_xaxis()
    ax.legend()
    save(fig, "deviation")

    fig, ax = plt.subplots(figsize=(5, 4))
    pca = measures["pca"].numpy()
    med, low, high = np.median(pca, 0), pca.min(0), pca.max(0)
    ax.bar(["top 1", "top 2", "top 3"], med, yerr=[med - low, high - med], capsize=6)
    ax.set(ylim=(min(0.8, low.min() - 0.01), 1.0), ylabel="variance explained (cumulative)",
           title=f"PCA per trajectory ({pca.shape[0]} samples: median, min-max)")  # fmt: skip
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
