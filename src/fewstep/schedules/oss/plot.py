"""The solver-aware search's panel of a searched schedule's plot: the DP's distances to the teacher."""

from __future__ import annotations

import numpy as np

from fewstep.utils.figures import pyplot


def plot_values(fig, ax, record: dict) -> None:
    """V_k(j): the student's distance to the teacher at grid point j after its best k steps, one line per k (over
    the points the DP stepped between: the grid's other points are the hand-crafted schedules' sigmas)."""
    values = np.array([[np.nan if v is None else v for v in row] for row in record["values"]], dtype=float)
    colours = pyplot().cm.viridis(np.linspace(0, 1, max(len(values) - 1, 1)))
    for k in range(1, len(values)):
        reached = np.isfinite(values[k])
        ax.plot(
            np.arange(values.shape[1])[reached],
            values[k][reached],
            ".-",
            color=colours[k - 1],
            lw=1,
            ms=3,
            label=f"after {k} step{'s' if k > 1 else ''}",
        )
    dp_path = record.get("dp_indices") or record["indices"]
    on_path = [values[k, j] for k, j in enumerate(dp_path[1:], start=1)]
    ax.plot(dp_path[1:], on_path, "ro", label="the DP's path")
    polished = bool((record.get("polish") or {}).get("taken"))
    ax.plot([dp_path[-1]], [record["path_cost"]], "k*", ms=10,
            label="searched schedule's end distance" + (" (polished, off the grid)" if polished else ""))
    shown = values[1:][np.isfinite(values[1:])]
    if len(shown) and shown.min() > 0:
        ax.set_yscale("log")
    elif len(shown) and np.abs(shown).max() > 0:  # zeros or negative (dev) values: log beyond three decades down
        ax.set_yscale("symlog", linthresh=float(np.abs(shown).max()) * 1e-3)
    metric = record["settings"]["metric"]
    ax.set(xlabel="grid point j (the base grid and the hand-crafted sigmas)",
           ylabel=f"distance to the teacher ({metric})",
           title="solver-aware DP: best distance at j after k steps")  # fmt: skip
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)  # beside the curves, never over them
