"""GITS's one way in: `search(settings, ..., warmup=...)`.

The search is plain tensor code. What touches the model at scale, the warm-up, comes in as a callable
`warmup(job) -> (cost sums, count)`: `local_warmup` runs it in this process (the Python API), the Lightning side
shards it over ranks and all-reduces the sums (`fewstep.module.LightningRunner`). With several processes, only
the main one runs the DP and writes the caches; `broadcast` hands its result to the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fewstep.data.seeds import seeded_noise
from fewstep.errors import FewstepError, NonFiniteError
from fewstep.schedules.gits.cache import GitsCache, schedule_key
from fewstep.schedules.gits.kernel import best_path, cost_sums, dynamic_programming, teacher_trajectory
from fewstep.schedules.gits.settings import GitsSettings, gits_settings
from fewstep.solvers.sampler import Sampler
from fewstep.utils.logging import info

WARMUP_NAN_CAUSE = ("the denoiser returned NaN/inf on the teacher's trajectories; check the model and its sigma "
                    "range (model.sigma_min / model.sigma_max)")  # fmt: skip


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


def base_grid(settings, sigma_min: float, sigma_max: float) -> torch.Tensor:
    from fewstep.schedules import make_schedule

    options = {"rho": settings.rho} if settings.base in ("polynomial", "discrete") else {}
    options.update(settings.base_options or {})
    return make_schedule(settings.base, int(settings.grid_size) - 1, sigma_min, sigma_max, **options)


def teacher(settings, grid: torch.Tensor, afs_prior=None) -> Sampler:
    """The teacher solver on the grid (GITS's or the OSS search's settings); its first call answered by `afs_prior`
    only with `teacher_afs`."""
    from fewstep.solvers import get_solver
    from fewstep.utils.options import function_options

    spec = get_solver(settings.teacher)
    if spec.stochastic:
        raise FewstepError(f"schedule.teacher={spec.name} is stochastic; a teacher trajectory must be an ODE "
                           "solution: use heun, ipndm, dpmpp, ...")  # fmt: skip
    options = {"max_order": int(settings.teacher_order)} if "max_order" in function_options(spec.fn, ()) else {}
    return Sampler(spec, grid, options, afs_prior if getattr(settings, "teacher_afs", False) else None)


def warmup_batch(job: WarmupJob, denoiser, shape: tuple[int, ...], seeds: torch.Tensor, device="cpu") -> torch.Tensor:
    """Cost sums (N, N) float64 of one batch of warm-up seeds; non-finite costs are an error naming the seeds."""
    x = seeded_noise(seeds, shape).to(device) * float(job.grid[0])
    states, slopes = teacher_trajectory(job.teacher.as_solver(seeds), denoiser, x, job.grid)
    sums = cost_sums(states, slopes, job.grid, job.metric)
    if not torch.isfinite(sums).all():
        raise NonFiniteError(f"GITS warm-up: non-finite costs for seeds {int(seeds[0])}..{int(seeds[-1])}: "
                             f"{WARMUP_NAN_CAUSE}; nothing was cached")  # fmt: skip
    return sums


def local_warmup(denoiser, shape: tuple[int, ...], batch_size: int = 64, device="cpu") -> Callable:
    """A warm-up in this process, in batches: `warmup(job) -> (cost sums, count)`."""

    def warmup(job: WarmupJob) -> tuple[torch.Tensor, int]:
        total = torch.zeros(len(job.grid), len(job.grid), dtype=torch.float64)
        with torch.no_grad():
            for batch in torch.as_tensor(job.seeds, dtype=torch.long).split(int(batch_size)):
                total += warmup_batch(job, denoiser, shape, batch, device)
        return total, len(job.seeds)

    return warmup


def check_steps(settings: GitsSettings, num_steps: int, needs: str = "") -> None:
    """A GITS path of `num_steps` steps from sigma_max to sigma_min must fit on the grid."""
    if not 1 <= num_steps <= int(settings.grid_size) - 1:
        raise FewstepError(f"{needs or f'{num_steps} steps'} from sigma_max to sigma_min, which a GITS grid of "
                           f"{settings.grid_size} points cannot provide; change nfe or schedule.grid_size")  # fmt: skip


def search(
    settings: GitsSettings | dict | None,
    *,
    sigma_min: float,
    sigma_max: float,
    num_steps: int,
    warmup: Callable[[WarmupJob], tuple[torch.Tensor, int]],
    afs: Callable | None = None,
    afs_key: dict | None = None,
    afs_prior=None,
    cache: GitsCache | None = None,
    is_main: bool = True,
    broadcast: Callable = lambda payload: payload,
) -> dict:
    """The GITS schedule of `num_steps` steps from sigma_max to sigma_min, as a record (sigmas, grid indices, grid,
    cost matrix, path cost, settings); the caller appends a final 0 where its solver denoises.

    `afs(path, grid, teacher) -> (path, distances)` inserts the AFS step after a DP over one step fewer (see
    `afs.afs_insertion`); `afs_key` names the sampler that picks it, for the cache. `afs_prior` (the run's, when
    it takes the AFS step) answers the teacher's first call with `teacher_afs`. Every process calls this;
    the warm-up's sums must already be summed over processes, and only the main one runs the DP and writes.
    """
    settings = gits_settings(settings)
    check_steps(settings, num_steps)
    grid = base_grid(settings, sigma_min, sigma_max)
    teacher_prior = afs_prior if settings.teacher_afs else None
    teacher_sampler = teacher(settings, grid, teacher_prior)
    insert_afs = afs is not None and settings.afs_insert and num_steps >= 2
    prior_name = type(teacher_prior).__name__ if teacher_prior is not None else None
    warmup_key = {**settings.warmup_part(), "teacher_afs_prior": prior_name}
    if settings.auto:  # where the rounds stop depends on the path searched
        warmup_key.update(coeff=settings.coeff, dp_steps=num_steps - 1 if insert_afs else num_steps)
    cost_key = cache.cost_key(warmup_key, grid) if cache else None
    key = None
    if cache:
        afs_part = {"sampler": afs_key, "afs_batch": settings.afs_batch} if insert_afs else None
        key = schedule_key(cost_key, settings.coeff, num_steps, afs_part)
        record = cache.read_schedule(key, grid, num_steps, (sigma_min, sigma_max))
        if record is not None:
            info(f"GITS schedule reused from {cache.schedule_path(key)}")
            return record
    dp_steps = num_steps - 1 if insert_afs else num_steps
    cost, count = warmup_cost(settings, grid, teacher_sampler, warmup, cache, cost_key, is_main, dp_steps)

    def compute() -> dict:
        afs_step = (lambda path: afs(path, grid, teacher_sampler)) if insert_afs else None
        path, path_cost, distances = search_path(cost, settings.coeff, num_steps, afs_step)
        record = {
            "sigmas": grid[path].tolist(), "indices": path, "grid": grid.tolist(), "cost": cost.tolist(),
            "path_cost": path_cost, "afs_insert_distances": distances, "num_steps": num_steps,
            "settings": settings.as_dict(), "warmup_count": count,
            "identity": cache.identity if cache else None, "cost_key": cost_key, "schedule_key": key,
        }  # fmt: skip
        if not all(math.isfinite(s) for s in record["sigmas"]) or not math.isfinite(path_cost):
            raise NonFiniteError(f"GITS search: non-finite schedule {record['sigmas']}; nothing was cached")
        info(f"GITS schedule searched: grid indices {record['indices']}")
        return record

    keep = (lambda record: cache.write_schedule(key, record)) if cache else None
    return on_main_then_broadcast(compute, is_main, broadcast, keep)


def on_main_then_broadcast(compute: Callable[[], dict], is_main: bool, broadcast: Callable,
                           keep: Callable[[dict], None] | None = None) -> dict:  # fmt: skip
    """`compute()` on the main process, its result on every process; an error there is raised on every process
    (so that none waits in the broadcast forever). `keep(record)` (the cache write) runs on the main process only
    after the broadcast: under torchrun or SLURM a slower rank that found the schedule already cached would skip
    the broadcast that the main process waits in."""
    payload = None
    if is_main:
        try:
            payload = {"record": compute()}
        except FewstepError as err:
            payload = {"error": str(err)}
    payload = broadcast(payload)
    if "error" in payload:
        raise FewstepError(payload["error"])
    if is_main and keep is not None:
        keep(payload["record"])
    return payload["record"]


def warmup_cost(settings: GitsSettings, grid, teacher_sampler: Sampler, warmup, cache, cost_key, is_main: bool,
                dp_steps: int):  # fmt: skip
    """The mean cost matrix: from the cache, or from a warm-up (whose sums are already summed over processes).
    With num_warmup=auto the warm-up grows in rounds (16, 32, 64, ... trajectories, up to max_warmup) until the
    DP path of `dp_steps` steps is the same after two rounds in a row."""
    if cache:
        cached = cache.read_cost(cost_key, grid)
        if cached is not None:
            info(f"GITS cost matrix reused from {cache.cost_path(cost_key)} ({cached['count']} warm-up trajectories)")
            return cached["cost"], cached["count"]
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
        cache.write_cost(cost_key, cost, count, grid, settings.as_dict())
    return cost, count


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
