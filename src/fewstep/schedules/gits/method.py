"""GITS's search (`schedule=gits`): a teacher warm-up on the grid, the one-step cost matrix, dynamic programming,
and the reference code's AFS insertion; its entry in the search contract (`SEARCH`).

As a library: `gits_search(settings, sigma_min=..., sigma_max=..., num_steps=..., warmup=local_warmup(...))`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from fewstep.errors import NonFiniteError
from fewstep.schedules.gits.afs import afs_insertion
from fewstep.schedules.gits.cache import schedule_key
from fewstep.schedules.gits.kernel import best_path, dynamic_programming
from fewstep.schedules.gits.plot import plot_cost_matrix
from fewstep.schedules.gits.settings import DEFAULTS, GitsSettings, gits_settings
from fewstep.schedules.gits.warmup import WarmupJob, warmup_cost
from fewstep.schedules.oss.settings import GITS_REFERENCE_WARMUP
from fewstep.schedules.registry import SearchMethod
from fewstep.schedules.search_cache import SearchCache
from fewstep.schedules.searches import SearchContext, needs_steps, on_main_then_broadcast
from fewstep.schedules.teacher import base_grid, check_grid_steps, check_teacher, teacher
from fewstep.solvers.nfe import SolverSpec, StepPlan
from fewstep.utils.logging import info


def gits_search(
    settings: GitsSettings | dict | None,
    *,
    sigma_min: float,
    sigma_max: float,
    num_steps: int,
    warmup: Callable[[WarmupJob], tuple[torch.Tensor, int]],
    afs: Callable | None = None,
    afs_key: dict | None = None,
    afs_prior=None,
    cache: SearchCache | None = None,
    is_main: bool = True,
    broadcast: Callable = lambda payload: payload,
) -> dict:
    """The GITS schedule of `num_steps` steps from sigma_max to sigma_min, as a record (sigmas, grid indices, grid,
    cost matrix, path cost, settings); the caller appends a final 0 where its solver denoises.

    `afs(path, grid, teacher) -> (path, distances, evaluations)` inserts the AFS step after a DP over one step
    fewer (see `gits.afs.afs_insertion`); `afs_key` names the sampler that picks it, for the cache. `afs_prior`
    (the run's, when it takes the AFS step) answers the teacher's first call with `teacher_afs`. Every process
    calls this; the warm-up's sums must already be summed over processes, and only the main one runs the DP and
    writes.
    """
    settings = gits_settings(settings)
    check_grid_steps(settings, num_steps, "", "a GITS grid")
    grid = base_grid(settings, sigma_min, sigma_max)
    teacher_prior = afs_prior if settings.teacher_afs else None
    teacher_sampler = teacher(settings, grid, teacher_prior)
    insert_afs = afs is not None and settings.afs_insert and num_steps >= 2
    prior_name = type(teacher_prior).__name__ if teacher_prior is not None else None
    warmup_key = {**settings.warmup_part(), "teacher_afs_prior": prior_name}
    if settings.auto:  # where the rounds stop depends on the path searched
        warmup_key.update(coeff=settings.coeff, dp_steps=num_steps - 1 if insert_afs else num_steps)
    cost_key = cache.key(warmup_key, grid) if cache else None
    key = None
    if cache:
        afs_part = {"sampler": afs_key, "afs_batch": settings.afs_batch} if insert_afs else None
        key = schedule_key(cost_key, settings.coeff, num_steps, afs_part)
        record = cache.read_schedule(key, grid, num_steps, (sigma_min, sigma_max))
        if record is not None:
            info(f"GITS schedule reused from {cache.schedule_path(key)}")
            return record
    dp_steps = num_steps - 1 if insert_afs else num_steps
    cost, count, warmed = warmup_cost(settings, grid, teacher_sampler, warmup, cache, cost_key, is_main, dp_steps)

    def compute() -> dict:
        warmup_evaluations = count * teacher_sampler.model_calls(grid)
        spent = {"warmup": warmup_evaluations if warmed else 0, "afs_insertion": 0}

        def afs_step(path):
            picked, distances, spent["afs_insertion"] = afs(path, grid, teacher_sampler)
            return picked, distances

        path, path_cost, distances = search_path(cost, settings.coeff, num_steps, afs_step if insert_afs else None)
        record = {
            "sigmas": grid[path].tolist(), "indices": path, "grid": grid.tolist(), "cost": cost.tolist(),
            "path_cost": path_cost, "afs_insert_distances": distances, "num_steps": num_steps,
            "settings": settings.as_dict(), "warmup_count": count,
            "identity": cache.identity if cache else None, "cost_key": cost_key, "schedule_key": key,
            "evaluations": sum(spent.values()), "evaluations_by_part": spent,
            "teacher_reused": 0 if warmed else warmup_evaluations,  # the warm-up's, from the cache
            "gits_reference_evaluations": GITS_REFERENCE_WARMUP * (len(grid) - 1),
        }  # fmt: skip
        if not all(math.isfinite(s) for s in record["sigmas"]) or not math.isfinite(path_cost):
            raise NonFiniteError(f"GITS search: non-finite schedule {record['sigmas']}; nothing was cached")
        info(f"GITS schedule searched: grid indices {record['indices']}")
        return record

    keep = (lambda record: cache.write_schedule(key, record)) if cache else None
    return on_main_then_broadcast(compute, is_main, broadcast, keep)


def search_path(cost: torch.Tensor, coeff: float, num_steps: int, afs_step=None) -> tuple[list[int], float, dict]:
    """The DP path of `num_steps` steps; with `afs_step`, a DP path of one step fewer plus the AFS step that
    `afs_step(path)` picks (the reference code's AFS handling)."""
    if afs_step is not None:
        values, nxt = dynamic_programming(cost, float(coeff), num_steps - 1)
        path = best_path(nxt, num_steps - 1)
        if path[1] > 1:  # room for a grid point before the DP's first stop
            path, distances = afs_step(path)
            return path, float(values[-1, 0]), distances
    values, nxt = dynamic_programming(cost, float(coeff), num_steps)
    return best_path(nxt, num_steps), float(values[-1, 0]), None


def check(settings: GitsSettings, spec: SolverSpec, steps: StepPlan) -> None:
    """The DP's steps (one fewer where the AFS step is inserted afterwards) fit on the grid."""
    check_teacher(settings)
    dp_steps = steps.num_steps - int(steps.denoise_to_zero) - int(settings.afs_insert and steps.afs)
    check_grid_steps(settings, dp_steps, needs_steps(steps), "a GITS grid")


def run(settings: GitsSettings, context: SearchContext) -> dict:
    """GITS in the search contract: the warm-up through `context.warmup`; with the AFS step, the run's sampler picks
    where it goes (on the main process, after the warm-up: the model is placed then)."""
    sampler = context.sampler

    def afs(path, grid, teacher_sampler):
        pick = afs_insertion(context.denoiser, context.shape, sampler, settings.afs_seeds, context.place())
        return pick(path, grid, teacher_sampler)

    afs_step = context.steps.afs
    return gits_search(
        settings, sigma_min=context.sigma_min, sigma_max=context.sigma_max, num_steps=context.num_steps,
        warmup=context.warmup, afs=afs if afs_step else None, afs_key=context.sampler_key if afs_step else None,
        afs_prior=sampler.afs_prior, cache=context.cache, is_main=context.is_main, broadcast=context.broadcast,
    )  # fmt: skip


SEARCH = SearchMethod(
    name="gits", defaults=DEFAULTS, settings=gits_settings, check=check, run=run, plot=plot_cost_matrix,
    summary="GITS (Chen et al. 2024): teacher warm-up, one-step cost matrix, dynamic programming",
)  # fmt: skip
