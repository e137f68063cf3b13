"""GITS's panel of a searched schedule's plot: the cost matrix with the DP's path."""

from __future__ import annotations

import numpy as np


def plot_cost_matrix(fig, ax, record: dict) -> None:
    from matplotlib.colors import LogNorm

    cost = np.array(record["cost"], dtype=float)
    cost[np.tril_indices_from(cost)] = np.nan
    positive = cost[np.isfinite(cost) & (cost > 0)]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    shown = np.where(np.isfinite(cost), np.maximum(cost, positive.min() if positive.size else 0), np.nan)
    image = ax.imshow(shown, cmap="viridis", origin="upper", norm=norm)
    path_idx = record["indices"]
    ax.plot(path_idx[1:], path_idx[:-1], "r.-", label="searched path (from i to j)")
    ax.set(xlabel="to grid point j", ylabel="from grid point i", title=f"cost matrix ({record['settings']['metric']})")
    ax.legend(loc="lower left")
    fig.colorbar(image, ax=ax, label="cost (log scale; 0 drawn as the smallest)")
