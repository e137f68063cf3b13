"""The solver-aware search (`schedule=oss`): `oss_search(settings, sampler=..., denoiser=..., ...)`, and its entry in
the search contract (`SEARCH`).

It runs on the main process (the DP is sequential over steps and needs every sample's state); with several
processes the others wait for its result in `broadcast`. Searched schedules are cached like GITS's (sealed,
checked before use, recomputed if damaged) under `<cache>/oss`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from fewstep.data.seeds import seed_range, seeded_noise
from fewstep.errors import FewstepError, NonFiniteError
from fewstep.schedules import RANGE_FREE
from fewstep.schedules.oss.kernel import (
    Replay,
    distances,
    median_path,
    nearest_path,
    refine,
    run_to,
    solver_aware_dp,
)
from fewstep.schedules.oss.plot import plot_values
from fewstep.schedules.oss.settings import DEFAULTS, GITS_REFERENCE_WARMUP, OssSettings, oss_settings
from fewstep.schedules.registry import SearchMethod
from fewstep.schedules.search_cache import SearchCache
from fewstep.schedules.searches import SearchContext, needs_steps, on_main_then_broadcast
from fewstep.schedules.teacher import (
    WARMUP_NAN_CAUSE,
    base_grid,
    check_grid_steps,
    check_teacher,
    teacher,
    teacher_trajectory,
)
from fewstep.solvers.nfe import SolverSpec, StepPlan
from fewstep.solvers.sampler import Sampler
from fewstep.utils.logging import info

RECORD_VERSION = 3  # 1 undercounted the validation runs' evaluations; 2 validated against polynomial alone
# the hand-crafted schedules whose grid paths the validation also runs: oss never returns a path worse, on the
# validation seeds, than any of them (those made for one model's range, discrete and ays, are not candidates)
HANDCRAFTED_CANDIDATES = RANGE_FREE


def check_solver(spec: SolverSpec) -> None:
    if spec.stochastic:
        raise FewstepError(f"schedule=oss searches for a deterministic solver; {spec.name} is stochastic (use "
                           "schedule=gits, or an ODE solver such as euler, heun, ipndm, dpmpp)")  # fmt: skip


def check(settings: OssSettings, spec: SolverSpec, steps: StepPlan) -> None:
    check_solver(spec)
    check_teacher(settings)
    check_grid_steps(settings, steps.num_steps - int(steps.denoise_to_zero), needs_steps(steps), "an oss grid")


def candidates(n: int, num_steps: int) -> tuple[int, int]:
    """(states, candidate steps) the DP visits on an n-point grid, summed over its levels."""
    states = pairs = 0
    reachable = [0]
    for k in range(1, num_steps + 1):
        last = n - 1 - (num_steps - k)
        first = n - 1 if k == num_steps else k
        states += len(reachable)
        pairs += sum(last - max(i + 1, first) + 1 for i in reachable if max(i + 1, first) <= last)
        reachable = list(range(first, last + 1))
    return states, pairs


def evaluations_per_step(sampler: Sampler) -> int:
    """Model calls the solver makes before its first step is done (1 for euler and the Adams-Bashforth family; 2
    for heun and dpm, and for unipc, whose corrector evaluates at the step's target)."""
    calls = []

    def probe(x, sigma):
        calls.append(sigma)
        return 0.5 * x

    def stop(info):
        raise StopIteration

    try:
        sampler.spec.fn(probe, torch.ones(1, 1), torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64),
                        callback=stop, **sampler.options)  # fmt: skip
    except StopIteration:
        pass
    return max(len(calls), 1)


def planned_evaluations(sampler: Sampler, n: int, num_steps: int) -> int:
    """Model evaluations per warm-up sample, estimated before the search (the search reports what it spent):
    the teacher's n - 1, one per DP state, and per candidate step the calls made at its target."""
    states, pairs = candidates(n, num_steps)
    return (n - 1) + states + (evaluations_per_step(sampler) - 1) * pairs


def warmup_size(settings: OssSettings, per_sample: int) -> int:
    """As many samples as the budget allows (GITS reference warm-ups), between min_warmup and num_warmup."""
    allowed = int(settings.budget * GITS_REFERENCE_WARMUP * (int(settings.grid_size) - 1) // max(per_sample, 1))
    return max(int(settings.min_warmup), min(int(settings.num_warmup), allowed))


def oss_search(
    settings: OssSettings | dict | None,
    *,
    sampler: Sampler,
    denoiser,
    shape: tuple[int, ...],
    sigma_min: float,
    sigma_max: float,
    num_steps: int,
    total_steps: int | None = None,
    to_zero: bool = False,
    device="cpu",
    sampler_key: dict | None = None,
    cache: SearchCache | None = None,
    is_main: bool = True,
    broadcast: Callable = lambda payload: payload,
) -> dict:
    """The schedule of `num_steps` steps from sigma_max to sigma_min that is best for `sampler` (its solver,
    options and AFS prior), as a record (sigmas, grid indices, grid, the DP's values, cost in evaluations and
    seconds). `total_steps` is the sampling run's step count (num_steps, plus 1 for a final step to 0 when
    `to_zero`), so that orders that depend on the steps left are the run's. `sampler_key` names the sampler
    for the cache."""
    settings = oss_settings(settings)
    check_solver(sampler.spec)
    check_grid_steps(settings, num_steps, "", "an oss grid")
    total_steps = num_steps if total_steps is None else int(total_steps)
    grid = base_grid(settings, sigma_min, sigma_max)
    key = None
    if cache:
        what = {"oss": settings.as_dict(), "record": RECORD_VERSION,
                "sampler": sampler_key or {"solver": sampler.name},
                "num_steps": num_steps, "total_steps": total_steps, "to_zero": to_zero}  # fmt: skip
        key = cache.key(what, grid)
        record = cache.read_schedule(key, grid, num_steps, (sigma_min, sigma_max))
        if record is not None:
            info(f"oss schedule reused from {cache.schedule_path(key)}")
            return record

    def compute() -> dict:
        with torch.no_grad():
            record = run_search(settings, sampler, denoiser, shape, grid, num_steps, total_steps, to_zero, device)
        record.update(identity=cache.identity if cache else None, schedule_key=key)
        return record

    keep = (lambda record: cache.write_schedule(key, record)) if cache else None
    return on_main_then_broadcast(compute, is_main, broadcast, keep)


def handcrafted_paths(grid: torch.Tensor, num_steps: int) -> dict[str, list[int]]:
    """The grid path nearest each hand-crafted schedule (default options) with the grid's end points."""
    from fewstep.schedules import make_schedule

    low, high = float(grid[-1]), float(grid[0])
    return {name: nearest_path(grid, make_schedule(name, num_steps, low, high)) for name in HANDCRAFTED_CANDIDATES}


def paired_difference(result: torch.Tensor, other: torch.Tensor) -> dict:
    """The searched path against another on the same validation seeds: the other's mean distance, and the mean
    and standard error of (searched - other) per seed (negative: the search is better)."""
    diff = (result - other).double()
    se = float(diff.std(unbiased=True) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"value": float(other.mean()), "difference": float(diff.mean()), "se": se}


def run_search(settings: OssSettings, sampler: Sampler, denoiser, shape, grid: torch.Tensor, num_steps: int,
               total_steps: int, to_zero: bool, device) -> dict:  # fmt: skip
    from fewstep.models.denoiser import bind_seeds

    started = time.perf_counter()
    n = len(grid)
    count = warmup_size(settings, planned_evaluations(sampler, n, num_steps))
    seeds = torch.tensor(seed_range(settings.warmup_seed, count), dtype=torch.long)
    x = seeded_noise(seeds, shape).to(device) * float(grid[0])
    states, _ = teacher_trajectory(teacher(settings, grid).as_solver(seeds), denoiser, x, grid)
    if not bool(torch.isfinite(states).all()):
        raise NonFiniteError(f"oss search: non-finite teacher states: {WARMUP_NAN_CAUSE}; nothing was cached")
    spent = {"teacher": (n - 1) * count}  # model evaluations, one per sample per call

    def student(batch: torch.Tensor):
        """The sampling solver on these seeds, in the kernel's signature, and the denoiser bound to them."""

        def solve(replay, start, sigmas, *, callback):
            return sampler.solve(replay, start, batch, callback=callback, sigmas=sigmas)

        return solve, bind_seeds(denoiser, batch, device)

    def dp(rows: slice) -> dict:
        solve, bound = student(seeds[rows])
        return solver_aware_dp(solve, bound, x[rows], grid, states[:, rows], num_steps, total_steps, to_zero,
                               settings.metric)  # fmt: skip

    if settings.per_sample:
        found = [dp(slice(r, r + 1)) for r in range(count)]
        spent["dp"] = sum(f["evaluations"] for f in found)
        per_sample_paths = [f["path"] for f in found]
        dp_path = median_path(per_sample_paths)
        finalists = [dp_path]
        values = torch.stack([f["values"] for f in found]).mean(0)
    else:
        found = dp(slice(None))
        spent["dp"] = found["evaluations"] * count
        dp_path, values, per_sample_paths = found["path"], found["values"], None
        finalists = found["finalists"][: int(settings.finalists)]

    # validation: whole runs from other noise pick among the finalists and every hand-crafted schedule's grid path,
    # then refine; the record compares the result with each hand-crafted path, paired per seed
    validation = torch.tensor(seed_range(int(settings.warmup_seed) + int(settings.num_warmup),
                                         int(settings.num_validation)), dtype=torch.long)  # fmt: skip
    noise = seeded_noise(validation, shape).to(device) * float(grid[0])
    target = teacher(settings, grid).solve(denoiser, noise, validation)
    if not bool(torch.isfinite(target).all()):
        raise NonFiniteError(f"oss search: non-finite teacher samples: {WARMUP_NAN_CAUSE}; nothing was cached")
    spent["validation_teacher"] = (n - 1) * len(validation)
    solve_all, bound_all = student(validation)
    end_replay = Replay(bound_all)  # whole runs; prefixes shared by several candidates are evaluated once
    start_point, end_point = noise.flatten(1).double(), target.flatten(1).double()
    final_dev = torch.zeros(len(validation), dtype=torch.float64) if settings.metric == "dev" else None

    def final_distances(candidate: list[int]) -> torch.Tensor:
        reached = run_to(solve_all, end_replay, noise, grid[candidate].tolist(), total_steps, to_zero)
        return distances(reached, target, settings.metric, start_point, end_point, final_dev)

    starts = {f"dp {rank}": path for rank, path in enumerate(finalists)}
    handcrafted = handcrafted_paths(grid, num_steps)
    for name, candidate in handcrafted.items():
        if candidate not in starts.values():
            starts[name] = candidate
    scored = {name: final_distances(path) for name, path in starts.items()}
    start_values = {name: float(ends.mean()) for name, ends in scored.items()}
    start = min(start_values, key=lambda name: start_values[name])
    path, ends = starts[start], scored[start]
    if settings.refine:
        path, ends = refine(final_distances, path, int(settings.refine_window), z=float(settings.significance))
    value = float(ends.mean())
    scored_by_path = {tuple(starts[name]): distances for name, distances in scored.items()}  # each one is there
    against = {name: paired_difference(ends, scored_by_path[tuple(candidate)])
               for name, candidate in handcrafted.items()}  # fmt: skip
    spent["validation_runs"] = end_replay.evaluations * len(validation)  # each call is on the validation batch
    evaluations = sum(spent.values())
    if not math.isfinite(value):
        raise NonFiniteError(f"oss search: non-finite distance of the searched path {path}; nothing was cached")
    seconds = time.perf_counter() - started
    gits_evaluations = GITS_REFERENCE_WARMUP * (n - 1)
    info(f"oss search ({sampler.name}, {num_steps} steps, DP on {count} warm-up samples, {len(validation)} "
         f"validation samples): {evaluations} model evaluations "
         f"= {evaluations / gits_evaluations:.2f} GITS reference warm-ups ({GITS_REFERENCE_WARMUP} x {n - 1}), "
         f"{seconds:.1f} s; grid indices {path}")  # fmt: skip
    return {
        "method": "oss", "sigmas": grid[path].tolist(), "indices": path, "grid": grid.tolist(),
        "values": [[v if math.isfinite(v) else None for v in row] for row in values.tolist()],
        "path_cost": value, "num_steps": num_steps, "total_steps": total_steps, "to_zero": to_zero,
        "solver": sampler.name, "settings": settings.as_dict(), "warmup_count": count,
        "per_sample_paths": per_sample_paths, "dp_indices": dp_path, "start": start,
        "start_values": start_values, "validation_seeds": [int(validation[0]), len(validation)],
        "handcrafted": against, "best_handcrafted": min(against, key=lambda name: against[name]["value"]),
        "evaluations": evaluations, "evaluations_by_part": spent,
        "gits_reference_evaluations": gits_evaluations, "seconds": seconds,
    }  # fmt: skip


def run(settings: OssSettings, context: SearchContext) -> dict:
    """oss in the search contract: on the main process (placing the model there), broadcast to the others."""
    device = context.place() if context.is_main else "cpu"
    return oss_search(
        settings, sampler=context.sampler, denoiser=context.denoiser, shape=context.shape,
        sigma_min=context.sigma_min, sigma_max=context.sigma_max, num_steps=context.num_steps,
        total_steps=context.steps.num_steps, to_zero=context.steps.denoise_to_zero, device=device,
        sampler_key=context.sampler_key, cache=context.cache, is_main=context.is_main, broadcast=context.broadcast,
    )  # fmt: skip


SEARCH = SearchMethod(
    name="oss", defaults=DEFAULTS, settings=oss_settings, check=check, run=run, plot=plot_values,
    summary="solver-aware DP over the sampling solver's own states (after OSS, Pei et al. 2025), validated",
)  # fmt: skip
