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
    positive = bool(np.nanmin(values[1:]) > 0) if np.isfinite(values[1:]).any() else True
    metric = record["settings"]["metric"]
    ax.set(yscale="log" if positive else "symlog", xlabel="grid point j (the base grid and the hand-crafted sigmas)",
           ylabel=f"distance to the teacher ({metric})",
           title="solver-aware DP: best distance at j after k steps")  # fmt: skip
    ax.legend(loc="upper left", fontsize=7)
