"""GITS's own cache entries beside its schedules (see `fewstep.schedules.search_cache`): the warm-up cost matrix,
keyed by the model's identity, the sample shape, the grid and the warm-up settings (teacher, seeds, metric); the
schedule by the cost key plus the step count, coeff and, where the AFS step is inserted, the sampler that picks it.
A sweep over NFE, solvers and coeffs warms up once."""

from __future__ import annotations

from pathlib import Path

import torch

from fewstep.schedules.search_cache import SearchCache
from fewstep.utils.cache import finite, load_torch, read_entry, require, write_torch
from fewstep.utils.storage import content_key


def cost_path(cache: SearchCache, key: str) -> Path:
    return Path(cache.root) / "costs" / f"{key}.pt"


def read_cost(cache: SearchCache, key: str, grid: torch.Tensor) -> dict | None:
    return read_entry(cost_path(cache, key), load_torch, check_cost(grid), "GITS cost cache", "warming up again")


def write_cost(cache: SearchCache, key: str, cost: torch.Tensor, count: int, grid: torch.Tensor, settings: dict):
    write_torch(cost_path(cache, key), {"cost": cost, "count": count, "grid": grid, "settings": settings})


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
