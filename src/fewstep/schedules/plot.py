"""A searched schedule's plot: its sigmas against the hand-crafted schedules of the same length, and beside them
what its search minimised (the search's own panel, `SearchMethod.plot`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fewstep.utils.figures import pyplot, save_figure


def plot_search(record: dict, path: str | Path) -> Path:
    """A searched schedule against hand-crafted schedules of the same length (log axis), and the panel of the search
    named by `record["method"]` (GITS's cost matrix with its DP path, oss's distances to the teacher, ...)."""
    from fewstep.schedules import RANGE_FREE, SCHEDULES
    from fewstep.schedules.registry import get_search, is_search

    method = record.get("method", "gits")
    sigmas = np.array(record["sigmas"])
    grid = np.array(record["grid"])
    steps = len(sigmas) - 1
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(12, 4.8))
    for name in RANGE_FREE:  # not discrete (the model's betas) nor ays (one model's range): the record lacks them
        sigmas_of = SCHEDULES[name](steps, grid[-1], grid[0]).numpy()
        left.plot(range(steps + 1), sigmas_of, "--", marker=".", alpha=0.7, label=name)
    solver = f" ({record['solver']})" if record.get("solver") else ""
    left.plot(range(steps + 1), sigmas, "k-", marker="o", lw=2, label=method + solver)
    left.set(yscale="log", xlabel="step", ylabel="sigma", title=f"{steps}-step schedules")
    left.legend()
    panel = get_search(method).plot if is_search(method) else None
    if panel is not None:
        panel(fig, right, record)
    else:
        right.axis("off")
    return save_figure(fig, path)
