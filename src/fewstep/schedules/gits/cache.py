"""GITS's two caches, each entry sealed with a checksum and checked before use (then recomputed if it fails).

Cache 1, the warm-up cost matrix, is keyed by the model's identity, the sample shape, the grid and the warm-up
settings (teacher, seeds, metric). Cache 2, the searched schedule, by the cost key plus the step count, coeff and,
where the AFS step is inserted, the sampler that picks it. A sweep over NFE, solvers and coeffs warms up once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fewstep.schedules.handcrafted import inside_range
from fewstep.utils.cache import finite, load_json, load_torch, read_entry, require, write_json, write_torch
from fewstep.utils.storage import content_key


@dataclass(frozen=True)
class GitsCache:
    """Where GITS caches go (`root/costs`, `root/schedules`) and what identifies the model and its samples."""

    root: Path
    identity: dict  # data, model, weights and numerics (see config.plan.model_identity), plus the sample shape
    name: str = "GITS"  # the search, in warnings about damaged entries ("oss" keeps its schedules here too)

    def cost_key(self, warmup_settings: dict, grid: torch.Tensor) -> str:
        return content_key({**self.identity, "grid": grid.tolist(), **warmup_settings})

    def cost_path(self, key: str) -> Path:
        return Path(self.root) / "costs" / f"{key}.pt"

    def schedule_path(self, key: str) -> Path:
        return Path(self.root) / "schedules" / f"{key}.json"

    def read_cost(self, key: str, grid: torch.Tensor) -> dict | None:
        return read_entry(self.cost_path(key), load_torch, check_cost(grid), "GITS cost cache", "warming up again")

    def write_cost(self, key: str, cost: torch.Tensor, count: int, grid: torch.Tensor, settings: dict) -> None:
        write_torch(self.cost_path(key), {"cost": cost, "count": count, "grid": grid, "settings": settings})

    def read_schedule(self, key: str, grid, num_steps: int, sigma_range) -> dict | None:
        return read_entry(self.schedule_path(key), load_json, check_schedule(grid, num_steps, sigma_range),
                          f"{self.name} schedule cache", "searching again")  # fmt: skip

    def write_schedule(self, key: str, record: dict) -> None:
        write_json(self.schedule_path(key), record)


def schedule_key(cost_key: str, coeff: float, num_steps: int, afs_insert: dict | None) -> str:
    return content_key({"cost": cost_key, "coeff": coeff, "num_steps": num_steps, "afs_insert": afs_insert})


def check_cost(grid: torch.Tensor):
    def check(entry: dict) -> None:
        cost, count = entry.get("cost"), entry.get("count")
        n = len(grid)
        require(isinstance(cost, torch.Tensor) and tuple(cost.shape) == (n, n), f"cost matrix is not {n}x{n}")
        require(finite(cost), "non-finite costs")
        require(isinstance(count, int) and count >= 1, f"warm-up count {count!r}")
        require(isinstance(entry.get("grid"), torch.Tensor) and torch.equal(entry["grid"].double(), grid.double()),
                "a different grid")  # fmt: skip

    return check


def check_schedule(grid: torch.Tensor, num_steps: int, sigma_range: tuple[float, float]):
    """A cached schedule must be a path on this grid with this many steps: strictly decreasing sigmas inside
    the model's range that are the grid's own values at its indices."""

    def check(record: dict) -> None:
        indices, sigmas = record.get("indices"), record.get("sigmas")
        require(isinstance(indices, list) and all(type(i) is int for i in indices), "no grid indices")
        require(len(indices) == num_steps + 1, f"{len(indices) - 1} steps, expected {num_steps}")
        increasing = all(a < b for a, b in zip(indices, indices[1:], strict=False))
        on_grid = indices[0] == 0 and increasing and indices[-1] <= len(grid) - 1
        require(on_grid, f"indices {indices} are not a path on a {len(grid)}-point grid")
        require(isinstance(sigmas, list) and len(sigmas) == len(indices) and finite(sigmas), "sigmas not finite")
        values = torch.tensor(sigmas, dtype=torch.float64)
        require(bool((values[1:] < values[:-1]).all()), "sigmas not strictly decreasing")
        low, high = sigma_range
        require(inside_range(float(values[-1]), float(values[0]), (low, high)), f"sigmas outside [{low:g}, {high:g}]")
        require(torch.allclose(values, grid.double()[indices], rtol=1e-12, atol=0), "sigmas are not the grid's")

    return check
