"""The GITS reference code's AFS handling: the DP plans one step fewer, then the (nearly free) analytical first
step is inserted at the grid point in (0, path[1]) where the run's sampler lands closest to the teacher."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fewstep.data.seeds import seeded_noise
from fewstep.solvers.sampler import Sampler


def afs_insertion(denoiser, shape: tuple[int, ...], sampler: Sampler, seeds: list[int], device="cpu") -> Callable:
    """`pick(path, grid, teacher) -> (path with the AFS step, distances, model evaluations)`: candidates are scored
    by the mean L2 distance of `sampler` on the candidate schedule to the teacher's final samples, on `seeds`."""

    def pick(path: list[int], grid: torch.Tensor, teacher: Sampler) -> tuple[list[int], dict, int]:
        batch = torch.as_tensor(seeds, dtype=torch.long)
        noise = seeded_noise(batch, shape).to(device)
        with torch.no_grad():
            target = teacher.with_sigmas(grid)(denoiser, noise, batch)
            distances = {}
            for k in range(1, path[1]):
                out = sampler.with_sigmas(grid[[0, k, *path[1:]]])(denoiser, noise, batch)
                distances[k] = (out - target).flatten(1).norm(dim=1).mean().item()
        best = min(distances, key=lambda k: (distances[k], k))
        calls = teacher.model_calls(grid) + sum(sampler.model_calls(grid[[0, k, *path[1:]]]) for k in distances)
        return [0, best, *path[1:]], distances, calls * len(batch)

    return pick
