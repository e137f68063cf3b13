"""The learned discretisation's panel of a searched schedule's plot: its training and validation losses."""

from __future__ import annotations

import numpy as np


def plot_training(fig, ax, record: dict) -> None:
    """The loss on each training batch and on the validation samples after every step of learning; the kept
    (best) validation loss marked."""
    history = np.array([[np.nan if v is None else v for v in row] for row in record["history"]], dtype=float)
    ax.plot(history[:, 0], history[:, 1], ".", color="0.6", ms=3, label="training batch")
    ax.plot(history[:, 0], history[:, 2], "-", color="C0", lw=1.5, label="validation")
    best = int(np.nanargmin(history[:, 2]))
    ax.plot([history[best, 0]], [history[best, 2]], "k*", ms=10, label="kept (best validation)")
    ax.axhline(record["init_value"], color="C1", ls="--", lw=1, label=f"start ({record['init']})")
    positive = bool(np.nanmin(history[:, 1:3]) > 0)
    loss = record["settings"]["loss"]
    ax.set(yscale="log" if positive else "linear", xlabel="step of learning",
           ylabel=f"distance to the teacher ({loss})", title="LD3: loss while learning the schedule")  # fmt: skip
    ax.legend(loc="lower left", fontsize=7)
