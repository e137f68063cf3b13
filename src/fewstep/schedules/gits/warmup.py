"""GITS's warm-up: teacher trajectories on the grid from a list of seeds, reduced to one-step cost sums.

The model work comes in as a callable `warmup(job) -> (cost sums, count)` (`SearchContext.warmup`): the contract's
`local_warmup` runs a job in this process (the Python API); the Lightning side shards its seeds over ranks and
all-reduces the sums (`fewstep.app.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fewstep.data.seeds import seeded_noise
from fewstep.errors import NonFiniteError
from fewstep.schedules.gits.cache import cost_path, read_cost, write_cost
from fewstep.schedules.gits.kernel import best_path, cost_sums, dynamic_programming
from fewstep.schedules.gits.settings import GitsSettings
from fewstep.schedules.teacher import WARMUP_NAN_CAUSE, teacher_trajectory
from fewstep.solvers.sampler import Sampler
from fewstep.utils.logging import info


@dataclass(frozen=True, eq=False)
class WarmupJob:
    """What a warm-up computes: teacher trajectories on the grid from `seeds`, reduced to cost sums."""

    seeds: list[int]
    grid: torch.Tensor
    teacher: Sampler  # the teacher solver on the grid
    metric: str

    @property
    def description(self) -> str:
        return f"GITS warm-up: {len(self.seeds)} {self.teacher.name} trajectories on a {len(self.grid)}-point grid"

    def empty(self) -> torch.Tensor:
        """The sums before any seed: what `sums` adds to."""
        return torch.zeros(len(self.grid), len(self.grid), dtype=torch.float64)

    def sums(self, denoiser, shape: tuple[int, ...], seeds: torch.Tensor, device="cpu") -> torch.Tensor:
        return warmup_batch(self, denoiser, shape, seeds, device)


def warmup_batch(job: WarmupJob, denoiser, shape: tuple[int, ...], seeds: torch.Tensor, device="cpu") -> torch.Tensor:
    """Cost sums (N, N) float64 of one batch of warm-up seeds; non-finite costs are an error naming the seeds."""
    x = seeded_noise(seeds, shape).to(device) * float(job.grid[0])
    states, slopes = teacher_trajectory(job.teacher.as_solver(seeds), denoiser, x, job.grid)
    sums = cost_sums(states, slopes, job.grid, job.metric)
    if not torch.isfinite(sums).all():
        raise NonFiniteError(f"GITS warm-up: non-finite costs for seeds {int(seeds[0])}..{int(seeds[-1])}: "
                             f"{WARMUP_NAN_CAUSE}; nothing was cached")  # fmt: skip
    return sums


def warmup_cost(settings: GitsSettings, grid, teacher_sampler: Sampler, warmup, cache, cost_key, is_main: bool,
                dp_steps: int):  # fmt: skip
    """The mean cost matrix: from the cache, or from a warm-up (whose sums are already summed over processes).
    With num_warmup=auto the warm-up grows in rounds (16, 32, 64, ... trajectories, up to max_warmup) until the
    DP path of `dp_steps` steps is the same after two rounds in a row. Returns (cost, count, warmed: whether the
    warm-up ran now rather than coming from the cache)."""
    if cache:
        cached = read_cost(cache, cost_key, grid)
        if cached is not None:
            info(f"GITS cost matrix reused from {cost_path(cache, cost_key)} ({cached['count']} warm-up trajectories)")
            return cached["cost"], cached["count"], False
    first, limit = int(settings.warmup_seed), settings.warmup_limit
    total, count, path, rounds = None, 0, None, []
    size = min(16, limit) if settings.auto else limit
    while True:
        seeds = list(range(first + count, first + size))
        sums, n = warmup(WarmupJob(seeds, grid, teacher_sampler, settings.metric))
        total, count = (sums if total is None else total + sums), count + n
        rounds.append(count)
        if not settings.auto:
            break
        found = best_path(dynamic_programming(total / count, float(settings.coeff), dp_steps)[1], dp_steps)
        if found == path:
            info(f"GITS warm-up auto: {count} trajectories (rounds {rounds}): the path stopped changing")
            break
        if size >= limit:
            info(f"GITS warm-up auto: {count} trajectories (rounds {rounds}): max_warmup={limit} reached")
            break
        path, size = found, min(2 * size, limit)
    cost = total / count
    if not bool(torch.isfinite(cost).all()):  # another process's seeds (each checks its own batches as it goes)
        bad = int((~torch.isfinite(cost)).sum())
        raise NonFiniteError(f"GITS warm-up: {bad} non-finite entries in the cost matrix (seeds {first}.."
                             f"{first + count - 1}): {WARMUP_NAN_CAUSE}; nothing was cached")  # fmt: skip
    if cache and is_main:
        write_cost(cache, cost_key, cost, count, grid, settings.as_dict())
    return cost, count, True
