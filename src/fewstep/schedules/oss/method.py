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

from fewstep.data.seeds import seed_range
from fewstep.errors import FewstepError, NonFiniteError
from fewstep.schedules import RANGE_FREE
from fewstep.schedules.oss.kernel import (
    Replay,
    Validation,
    distances,
    median_path,
    polish,
    race,
    refine,
    run_to,
    significantly_lower,
    solver_aware_dp,
    tested_beyond_screen,
)
from fewstep.schedules.oss.plot import plot_values
from fewstep.schedules.oss.settings import DEFAULTS, GITS_REFERENCE_WARMUP, OssSettings, oss_settings
from fewstep.schedules.registry import SearchMethod
from fewstep.schedules.search_cache import SearchCache
from fewstep.schedules.searches import SearchContext, cached_on_main, needs_steps, run_on_main
from fewstep.schedules.teacher import base_grid, check_grid_steps, check_teacher
from fewstep.schedules.teacher_cache import TeacherRuns
from fewstep.solvers.nfe import SolverSpec, StepPlan
from fewstep.solvers.sampler import Sampler
from fewstep.utils.logging import info

RECORD_VERSION = 7  # 1 undercounted the validation runs' evaluations; 2 validated against polynomial alone; 3 ran
# every candidate on every validation seed; 4 raced the hand-crafted schedules' nearest grid paths, not themselves;
# 5 had no polish (6: a polished record leaves the grid, its indices None, its grid path in grid_indices); 6's
# max_warmups counted the teacher
# the hand-crafted schedules the validation also runs, exactly (their sigmas are points of the search grid): oss
# never returns a schedule worse, on the validation seeds, than any of them (those made for one model's range,
# discrete and ays, are not candidates)
HANDCRAFTED_CANDIDATES = RANGE_FREE
SAME_POINT_RTOL = 1e-9  # a hand-crafted sigma this close to a base grid point is that point


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


def dp_grid(n: int, stride: int) -> list[int]:
    """The grid indices the DP steps between: every `stride`-th point and the last."""
    return [*range(0, n - 1, stride), n - 1]


def dp_plan(settings: OssSettings, sampler: Sampler, num_steps: int) -> tuple[int, int]:
    """(warm-up samples, grid stride) of the DP: the full grid with as many samples as the budget allows; where
    even min_warmup samples would overspend it (solvers that evaluate at every candidate target, many steps), the
    DP steps between every stride-th grid point instead (the teacher still runs on every point, and the refinement
    moves on the full grid)."""
    n = int(settings.grid_size)
    stride = 1
    while True:
        points = len(dp_grid(n, stride + 1))
        per_sample = planned_evaluations(sampler, len(dp_grid(n, stride)), num_steps) + n - len(dp_grid(n, stride))
        allowed = settings.budget * GITS_REFERENCE_WARMUP * (n - 1) / max(per_sample, 1)
        if allowed >= int(settings.min_warmup) or points - 1 < num_steps:
            return warmup_size(settings, per_sample), stride
        stride += 1


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
    base = base_grid(settings, sigma_min, sigma_max)
    grid, on_base, handcrafted = search_grid(base, handcrafted_schedules(num_steps, float(base[-1]), float(base[0])))
    what = {"oss": settings.as_dict(), "record": RECORD_VERSION, "sampler": sampler_key or {"solver": sampler.name},
            "num_steps": num_steps, "total_steps": total_steps, "to_zero": to_zero}  # fmt: skip

    def compute() -> dict:
        with torch.no_grad():
            teacher = TeacherRuns("oss", settings, base, denoiser, shape, device, cache)
            return run_search(settings, sampler, denoiser, grid, on_base, handcrafted, num_steps, total_steps,
                              to_zero, teacher)  # fmt: skip

    return cached_on_main("oss", cache, what, grid, num_steps, (sigma_min, sigma_max), compute, is_main, broadcast,
                          on_grid=None)  # polished: off the grid  # fmt: skip


def handcrafted_schedules(num_steps: int, low: float, high: float) -> dict[str, torch.Tensor]:
    """Each hand-crafted candidate schedule (default options) from `high` down to `low`."""
    from fewstep.schedules import make_schedule

    return {name: make_schedule(name, num_steps, low, high).double() for name in HANDCRAFTED_CANDIDATES}


def search_grid(base: torch.Tensor, schedules: dict[str, torch.Tensor]):
    """The grid the validation and the refinement move on: the base grid (where the teacher and the DP run) with
    every sigma of `schedules` added that is not already one of its points (relative `SAME_POINT_RTOL`), so that each
    schedule is a path on it, exactly. Returns (grid, the grid indices of the base points, each schedule's path)."""
    base = base.double()
    points = base.tolist()
    for sigmas in schedules.values():
        for sigma in sigmas.tolist():
            nearest = min(points, key=lambda point: abs(point - sigma))
            if abs(nearest - sigma) > SAME_POINT_RTOL * sigma:
                points.append(sigma)
    grid = torch.tensor(sorted(points, reverse=True), dtype=torch.float64)

    def index(sigma: float) -> int:
        return int((grid - sigma).abs().argmin())

    paths = {name: [index(sigma) for sigma in sigmas.tolist()] for name, sigmas in schedules.items()}
    return grid, [index(sigma) for sigma in base.tolist()], paths


def paired_difference(result: torch.Tensor, other: torch.Tensor) -> dict:
    """The searched path against another on the validation seeds the other ran (the first len(other): a candidate
    the race dropped ran fewer): the other's mean distance there, the mean and standard error of (searched - other)
    per seed (negative: the search is better), and the seeds compared."""
    diff = (result[: len(other)] - other).double()
    se = float(diff.std(unbiased=True) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return {"value": float(other.mean()), "difference": float(diff.mean()), "se": se, "seeds": len(other)}


def run_search(settings: OssSettings, sampler: Sampler, denoiser, grid: torch.Tensor, on_base: list[int],
               handcrafted: dict[str, list[int]], num_steps: int, total_steps: int, to_zero: bool,
               teacher: TeacherRuns) -> dict:  # fmt: skip
    """The search on `grid` (the base grid, at indices `on_base`, with the hand-crafted schedules' sigmas added:
    their paths on it are `handcrafted`). `teacher` runs (or reads from the cache) the teacher on the base grid: the
    DP's states on all num_warmup warm-up seeds (it uses the first `count`), the validation's samples by chunk."""
    from fewstep.models.denoiser import bind_seeds

    started = time.perf_counter()
    base = grid[on_base]
    n = len(base)
    device = teacher.device
    count, stride = dp_plan(settings, sampler, num_steps)
    dp_points = dp_grid(n, stride)  # base-grid indices the DP steps between; on the search grid: on_dp
    on_dp = [on_base[i] for i in dp_points]
    warmup_seeds = seed_range(settings.warmup_seed, int(settings.num_warmup))
    every_state = teacher.states(warmup_seeds)  # on all num_warmup seeds: the DP takes the first count
    states, targets_all = every_state[:, :count], every_state[-1]
    seeds_all = torch.tensor(warmup_seeds, dtype=torch.long)
    x_all = teacher.noise(warmup_seeds)
    x, seeds = x_all[:count], seeds_all[:count]
    model_seconds = 0.0
    spent = {"teacher": teacher.computed}  # model evaluations, one per sample per call

    def student(batch: torch.Tensor):
        """The sampling solver on these seeds, in the kernel's signature, and the denoiser bound to them."""

        def solve(replay, start, sigmas, *, callback):
            return sampler.solve(replay, start, batch, callback=callback, sigmas=sigmas)

        return solve, bind_seeds(denoiser, batch, device)

    def dp(rows: slice) -> dict:
        solve, bound = student(seeds[rows])
        found = solver_aware_dp(solve, bound, x[rows], grid[on_dp], states[dp_points][:, rows], num_steps,
                                total_steps, to_zero, settings.metric)  # fmt: skip
        values = torch.full((num_steps + 1, len(grid)), math.inf, dtype=torch.float64)
        values[:, on_dp] = found["values"].double()
        return {**found, "path": [on_dp[i] for i in found["path"]], "values": values,
                "finalists": [[on_dp[i] for i in path] for path in found["finalists"]]}  # fmt: skip

    if settings.per_sample:
        found = [dp(slice(r, r + 1)) for r in range(count)]
        spent["dp"] = sum(f["evaluations"] for f in found)
        model_seconds += sum(f.get("model_seconds", 0.0) for f in found)
        per_sample_paths = [f["path"] for f in found]
        dp_path = median_path(per_sample_paths)
        finalists = [dp_path]
        values = torch.stack([f["values"] for f in found]).mean(0)
    else:
        found = dp(slice(None))
        spent["dp"] = found["evaluations"] * count
        model_seconds += found.get("model_seconds", 0.0)
        dp_path, values, per_sample_paths = found["path"], found["values"], None
        finalists = found["finalists"][: int(settings.finalists)]

    # validation: whole runs from other noise, in chunks of seeds, race the finalists and every hand-crafted
    # schedule, then refine on the grid; the record compares the result with each hand-crafted path, paired per seed
    validation_seeds = seed_range(int(settings.warmup_seed) + int(settings.num_warmup), int(settings.num_validation))
    chunk = int(settings.validation_chunk)
    spent["validation_teacher"] = spent["validation_runs"] = 0
    replays: list[Replay] = []

    def chunk_distances(chunk_seeds: list[int]):
        batch = torch.tensor(chunk_seeds, dtype=torch.long)
        run: dict = {}

        def final_distances(candidate: list[int]) -> torch.Tensor:
            if not run:  # this chunk's noise and teacher, the first time a candidate reaches it
                noise = teacher.noise(chunk_seeds)
                before = teacher.computed
                target = teacher.samples(chunk_seeds)
                spent["validation_teacher"] += teacher.computed - before
                solve, bound = student(batch)
                replays.append(Replay(bound))
                run.update(noise=noise, target=target, solve=solve, replay=replays[-1],
                           start=noise.flatten(1).double(), end=target.flatten(1).double(),
                           dev=torch.zeros(len(batch), dtype=torch.float64) if settings.metric == "dev" else None)
            replay, before = run["replay"], run["replay"].evaluations  # prefixes shared by candidates run once
            sigmas = list(candidate) if isinstance(candidate[0], float) else grid[candidate].tolist()  # off the grid
            reached = run_to(run["solve"], replay, run["noise"], sigmas, total_steps, to_zero)
            spent["validation_runs"] += (replay.evaluations - before) * len(batch)  # each call is on the chunk
            return distances(reached, run["target"], settings.metric, run["start"], run["end"], run["dev"])

        return final_distances

    validation = Validation([chunk_distances(validation_seeds[first : first + chunk])
                             for first in range(0, len(validation_seeds), chunk)])  # fmt: skip
    starts = {f"dp {rank}": path for rank, path in enumerate(finalists)}
    for name, candidate in handcrafted.items():
        if candidate not in starts.values():
            starts[name] = candidate
    z = float(settings.significance)
    start = race(validation, starts, z, float(settings.race_margin))
    path = starts[start]
    ends = validation(path)  # the start's every chunk; the refinement then runs until the search spent max_warmups
    if settings.refine:  # the cap leaves the teacher out, whether it ran now or came from the cache: the same path
        allowed = settings.max_warmups * GITS_REFERENCE_WARMUP * (n - 1) - planned_polish(settings, sampler, grid[path])
        per_chunk = sampler.model_calls(grid[path]) * chunk  # at most: a run shares its prefix's calls with others
        path, ends = refine(validation, path, int(settings.refine_window), z=float(settings.refine_significance),
                            affords=lambda chunks: own_runs(spent) + chunks * per_chunk <= allowed)  # fmt: skip
    polished, polish_record = None, None
    if settings.polish:
        polished, ends, polish_record = polish_path(settings, student, validation, path, ends, grid, x_all,
                                                    targets_all, seeds_all, total_steps, to_zero, spent, z)
    value = float(ends.mean())
    start_values = {name: float(validation.seen(candidate).mean()) for name, candidate in starts.items()}
    start_seeds = {name: len(validation.seen(candidate)) for name, candidate in starts.items()}
    against = {name: paired_difference(ends, validation.seen(candidate))
               for name, candidate in handcrafted.items()}  # fmt: skip
    evaluations = sum(spent.values())
    if not math.isfinite(value):
        raise NonFiniteError(f"oss search: non-finite distance of the searched path {path}; nothing was cached")
    seconds = time.perf_counter() - started
    model_seconds += teacher.seconds + sum(replay.seconds for replay in replays)
    gits_evaluations = GITS_REFERENCE_WARMUP * (n - 1)
    info(f"oss search ({sampler.name}, {num_steps} steps, DP on {count} warm-up samples, {len(validation_seeds)} "
         f"validation samples): {evaluations} model evaluations "
         f"= {evaluations / gits_evaluations:.2f} GITS reference warm-ups ({GITS_REFERENCE_WARMUP} x {n - 1})"
         + (f", the teacher's {teacher.reused} reused from the cache" if teacher.reused else "")
         + f", {seconds:.1f} s; grid indices {path}" + polish_summary(polish_record))  # fmt: skip
    return {
        "method": "oss", "sigmas": grid[path].tolist() if polished is None else polished.tolist(),
        "indices": path if polished is None else None, "grid_indices": path, "polish": polish_record,
        "grid": grid.tolist(), "base_indices": on_base,
        "values": [[v if math.isfinite(v) else None for v in row] for row in values.tolist()],
        "path_cost": value, "num_steps": num_steps, "total_steps": total_steps, "to_zero": to_zero,
        "solver": sampler.name, "settings": settings.as_dict(), "warmup_count": count, "dp_stride": stride,
        "per_sample_paths": per_sample_paths, "dp_indices": dp_path, "start": start,
        "start_values": start_values, "validation_seeds": [validation_seeds[0], len(validation_seeds)],
        "start_seeds": start_seeds, "handcrafted": against,
        "best_handcrafted": min(against, key=lambda name: (-against[name]["seeds"], against[name]["value"])),
        "evaluations": evaluations, "evaluations_by_part": spent, "teacher_reused": teacher.reused,
        "gits_reference_evaluations": gits_evaluations, "seconds": seconds, "model_seconds": model_seconds,
    }  # fmt: skip


def own_runs(spent: dict) -> int:
    """The model evaluations of the search's own runs (the DP's, the validation's, the polish's): what `spent`
    counts but the teacher, which the cells of a sweep share through the cache."""
    return sum(count for part, count in spent.items() if part not in ("teacher", "validation_teacher"))


def polish_summary(record: dict | None) -> str:
    """The log's words on the polish."""
    if record is None:
        return ""
    if record["taken"]:
        return (f"; polished off the grid ({record['steps']} gradient steps): end distance {record['difference']:+.4g}"
                f" +- {record['se']:.2g} on {record['seeds']} validation seeds")  # fmt: skip
    why = f" ({record['stopped']})" if record["stopped"] else ""
    return f"; the polish{why} found nothing significantly better: the grid path stays"


def planned_polish(settings: OssSettings, sampler: Sampler, sigmas: torch.Tensor) -> int:
    """Model evaluations the polish will spend at most (forward and backward of its steps, its checkpoints on the
    first validation chunk, the best on the others), which the refinement leaves to it under max_warmups."""
    if not settings.polish:
        return 0
    calls = sampler.model_calls(sigmas)  # one run of the path's steps, whatever its sigmas
    chunk = min(int(settings.validation_chunk), int(settings.num_validation))
    screened = int(settings.polish) // int(settings.polish_every) * chunk
    steps = int(settings.polish) * min(int(settings.polish_batch), int(settings.num_warmup)) * 2
    return calls * (steps + screened + int(settings.num_validation) - chunk)


def polish_path(settings: OssSettings, student, validation: Validation, path: list[int], ends: torch.Tensor,
                grid: torch.Tensor, noise: torch.Tensor, targets: torch.Tensor, seeds: torch.Tensor, total_steps: int,
                to_zero: bool, spent: dict, z: float):  # fmt: skip
    """The polish of the grid path `path` (its validation distances `ends`): `settings.polish` gradient steps on
    the warm-up seeds (`noise` at the first sigma, the teacher's `targets`), in batches of `polish_batch` drawn
    from a generator seeded by warmup_seed; the checkpoints screened on the first validation chunk, the best tested
    on the others (on the same chunk where there is one). Returns (the polished sigmas or None, the result's
    validation distances, the record's `polish` entry); spends `spent["polish"]`, forward and backward counted."""
    spent["polish"] = 0
    order = torch.Generator().manual_seed(int(settings.warmup_seed))
    batches = []
    while len(batches) < int(settings.polish):
        batches.extend(torch.randperm(len(seeds), generator=order).split(int(settings.polish_batch)))
    batches = batches[: int(settings.polish)]

    def loss_of(sigmas: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        solve, bound = student(seeds[rows])
        opaque = []

        def seen_through(x, sigma):  # the solver's own arithmetic would carry a gradient past a detached model
            out = bound(x, sigma)
            if (x.requires_grad or getattr(sigma, "requires_grad", False)) and not out.requires_grad:
                opaque.append(True)
            return out

        counted = Replay(seen_through, remember=False)
        reached = run_to(solve, counted, noise[rows], sigmas, total_steps, to_zero)
        spent["polish"] += (1 if opaque else 2) * counted.evaluations * len(rows)  # forward, and backward once
        start, end = noise[rows].flatten(1).double(), targets[rows].flatten(1).double()
        excess = torch.zeros(len(rows), dtype=torch.float64, device=start.device)  # dev: the teacher's own is 0
        loss = distances(reached, targets[rows], settings.metric, start, end, excess).mean()
        return loss.detach() if opaque else loss  # the kernel stops: no gradient to follow

    checkpoints, stopped = polish(loss_of, grid[path], batches, float(settings.polish_lr), int(settings.polish_every))
    record = {"steps": len(batches), "stopped": stopped, "screen": [], "taken": False}
    candidates = [tuple(sigmas.tolist()) for sigmas in checkpoints]
    if not candidates:
        return None, ends, record
    record["screen"] = [float(validation(candidate, 1).mean()) for candidate in candidates]
    pick = min(range(len(candidates)), key=lambda index: record["screen"][index])
    record.update(pick=pick, path_screen=float(validation(path, 1).mean()))
    if not record["screen"][pick] < record["path_screen"]:
        return None, ends, record
    trial, tested = tested_beyond_screen(validation, candidates[pick])
    record.update(paired_difference(trial[tested], ends[tested]))
    if not significantly_lower(trial[tested], ends[tested], z):
        return None, ends, record
    record["taken"] = True
    return checkpoints[pick], trial, record


def run(settings: OssSettings, context: SearchContext) -> dict:
    """oss in the search contract: on the main process (placing the model there), broadcast to the others."""
    return run_on_main(oss_search, settings, context)


SEARCH = SearchMethod(
    name="oss", defaults=DEFAULTS, settings=oss_settings, check=check, run=run, plot=plot_values,
    summary="solver-aware DP over the sampling solver's own states (after OSS, Pei et al. 2025), validated",
)  # fmt: skip
