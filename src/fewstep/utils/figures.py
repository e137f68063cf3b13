"""matplotlib on the Agg backend (no screen here) and atomic PNG writes: what every plot of fewstep draws with."""

from __future__ import annotations

from pathlib import Path

from fewstep.utils.storage import atomic_write_bytes


def pyplot():
    """matplotlib's pyplot on the Agg backend (no screen here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100, tight: bool = True) -> Path:
    """Write a figure as PNG atomically (a killed run leaves no half-written image) and close it."""
    import io

    plt = pyplot()
    if tight:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
