"""A searched schedule as a value: the sigmas to sample with, and the search behind them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True, eq=False)
class Schedule:
    sigmas: torch.Tensor  # float64, what a solver takes: the searched path (plus a final 0 where it denoises)
    record: dict  # the search: grid, grid indices, cost matrix, path cost, settings (what schedule.json holds)

    @property
    def indices(self) -> list[int]:
        return list(self.record["indices"])

    @property
    def grid(self) -> torch.Tensor:
        return torch.tensor(self.record["grid"], dtype=torch.float64)

    @property
    def cost(self) -> torch.Tensor:
        return torch.tensor(self.record["cost"], dtype=torch.float64)

    @property
    def path_cost(self) -> float:
        return float(self.record["path_cost"])

    def plot(self, path: str | Path) -> Path:
        """The schedule on its grid and what the search minimised (PNG)."""
        from fewstep.plotting import plot_search

        plot_search(self.record, Path(path))
        return Path(path)

    def to_diffusers(self) -> dict:
        """`scheduler.set_timesteps(**schedule.to_diffusers())` for diffusers schedulers that take custom sigmas
        (Euler, Heun, DPM-Solver++ multistep, ...): the positive sigmas, largest first; the scheduler appends its
        own final sigma (0)."""
        return {"sigmas": [float(s) for s in self.sigmas if s > 0]}

    def __repr__(self) -> str:
        shown = ", ".join(f"{s:.4g}" for s in self.sigmas.tolist())
        return f"Schedule(sigmas=[{shown}], indices={self.indices}, path_cost={self.path_cost:.4g})"
