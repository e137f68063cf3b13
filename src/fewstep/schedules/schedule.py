"""A searched schedule as a value: the sigmas to sample with, and the search behind them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True, eq=False)
class Schedule:
    sigmas: torch.Tensor  # float64, what a solver takes: the searched path (plus a final 0 where it denoises)
    record: dict  # the search: method, grid, grid indices, path cost, settings, what it minimised (schedule.json)

    @property
    def method(self) -> str:
        return str(self.record.get("method", "gits"))

    @property
    def indices(self) -> list[int] | None:
        """The grid indices of the searched path; None for a search not confined to the grid (ld3)."""
        indices = self.record.get("indices")
        return None if indices is None else list(indices)

    @property
    def grid(self) -> torch.Tensor:
        return torch.tensor(self.record["grid"], dtype=torch.float64)

    @property
    def cost(self) -> torch.Tensor | None:
        """GITS's one-step cost matrix; None for a search that builds none (oss)."""
        cost = self.record.get("cost")
        return None if cost is None else torch.tensor(cost, dtype=torch.float64)

    @property
    def path_cost(self) -> float:
        """What the search minimised along the chosen path (GITS: the DP's cost; oss: the end distance)."""
        return float(self.record["path_cost"])

    def plot(self, path: str | Path) -> Path:
        """The schedule on its grid and what the search minimised (PNG)."""
        from fewstep.schedules.plot import plot_search

        plot_search(self.record, Path(path))
        return Path(path)

    def to_diffusers(self, scheduler=None):
        """Without a scheduler: `{"sigmas": [...]}` for `scheduler.set_timesteps(**...)` of schedulers that take
        custom sigmas (the full list: diffusers uses its last value as the final sigma). With one: the scheduler,
        set to run this schedule (sigmas=, or the nearest integer timesteps for schedulers that take only
        timesteps=; refused where it cannot, see `fewstep.schedules.export`). A rectified-flow scheduler
        (FlowMatchEulerDiscreteScheduler, or use_flow_sigmas=True) gets the flow times t = sigma / (1 + sigma)."""
        values = [float(s) for s in self.sigmas]
        if scheduler is None:
            return {"sigmas": values}
        from fewstep.schedules.export import configure_diffusers

        configure_diffusers(scheduler, values)
        return scheduler

    def to_flow_pipeline(self, scheduler) -> dict:
        """The keyword arguments for an SD3 / Flux pipeline call with its rectified-flow `scheduler`
        (`pipe(prompt, **schedule.to_flow_pipeline(pipe.scheduler))`): the flow times, un-shifted by the scheduler's
        shift so that the pipeline's own shift lands on them (see `fewstep.schedules.export.flow_inputs`)."""
        from fewstep.schedules.export import flow_inputs

        return {"sigmas": flow_inputs(self.sigmas.tolist(), scheduler)}

    def to_k_diffusion(self) -> torch.Tensor:
        """k-diffusion's (and ComfyUI's custom sigmas) convention: float64 sigmas ending in 0."""
        from fewstep.schedules.export import with_final_zero

        return torch.tensor(with_final_zero(self.sigmas.tolist()), dtype=torch.float64)

    def __repr__(self) -> str:
        shown = ", ".join(f"{s:.4g}" for s in self.sigmas.tolist())
        return f"Schedule(sigmas=[{shown}], indices={self.indices}, path_cost={self.path_cost:.4g})"
