"""GITS schedule search with two caches, distributed warm-up, and `task=search`.

Cache 1, the warm-up cost matrix, is keyed by data, model, grid, teacher, warm-up seeds and metric.
Cache 2, the searched schedule, is keyed by the cost key plus step count, coeff and the solver's NFE accounting.
A sweep over NFE, solvers and coeffs therefore warms up once; every other run costs one DP (or nothing).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from fewstep.errors import FewstepError, NonFiniteError
from fewstep.models.denoiser import bind_seeds
from fewstep.schedules import SCHEDULES, make_schedule
from fewstep.schedules.gits import METRICS, best_path, dynamic_programming
from fewstep.solvers import StepPlan, check_options, get_solver
from fewstep.utils.cache import finite, load_json, load_torch, read_entry, require, write_json, write_torch
from fewstep.utils.logging import info
from fewstep.utils.storage import atomic_save_json, content_key

log = logging.getLogger(__name__)

RANGE_TOLERANCE = 1e-4  # relative: sigmas written as text may round the model's range by this much
WARMUP_NAN_CAUSE = ("the denoiser returned NaN/inf on the teacher's trajectories; check the model and its sigma "
                    "range (model.sigma_min / model.sigma_max)")  # fmt: skip

GITS_DEFAULTS = {
    "base": "polynomial",
    "rho": 7.0,
    "base_options": {},
    "grid_size": 61,
    "teacher": "ipndm",
    "teacher_order": 4,
    "num_warmup": 256,
    "warmup_seed": 1_000_000,
    "coeff": 1.15,
    "metric": "dev",
    "afs_insert": True,
    "afs_batch": 32,
}


def gits_settings(schedule: dict) -> dict:
    from fewstep.tasks.checks import MAX_SEED, integer, options_like

    settings = {**GITS_DEFAULTS, **{k: v for k, v in schedule.items() if k != "name"}}
    unknown = set(settings) - set(GITS_DEFAULTS)
    if unknown:
        raise FewstepError(f"schedule 'gits' takes options {sorted(GITS_DEFAULTS)}, not {sorted(unknown)}")
    settings = options_like("schedule", settings, GITS_DEFAULTS)
    integer("schedule.warmup_seed", settings["warmup_seed"], 0, MAX_SEED - max(int(settings["num_warmup"]), 0))
    if settings["metric"] not in METRICS:
        raise FewstepError(f"schedule.metric must be one of {list(METRICS)}, got {settings['metric']!r}")
    if settings["base"] not in SCHEDULES:
        raise FewstepError(f"schedule.base must be one of {sorted(SCHEDULES)}, got {settings['base']!r}")
    if int(settings["num_warmup"]) < 1 or int(settings["grid_size"]) < 3 or not settings["coeff"] > 0:
        raise FewstepError("gits needs num_warmup >= 1, grid_size >= 3 and coeff > 0")
    return settings


def base_grid(settings: dict, sigma_min: float, sigma_max: float) -> torch.Tensor:
    options = {"rho": settings["rho"]} if settings["base"] in ("polynomial", "discrete") else {}
    options.update(settings["base_options"] or {})
    return make_schedule(settings["base"], int(settings["grid_size"]) - 1, sigma_min, sigma_max, **options)


def teacher(settings: dict):
    spec = get_solver(settings["teacher"])
    options = {"max_order": int(settings["teacher_order"])} if "max_order" in _params(spec) else {}
    return spec, check_options(spec, options)


def _params(spec) -> set[str]:
    import inspect

    return set(inspect.signature(spec.fn).parameters)


def _device_of(denoiser) -> torch.device:
    tensors = [*denoiser.parameters(), *denoiser.buffers()] if isinstance(denoiser, torch.nn.Module) else []
    return tensors[0].device if tensors else torch.device("cpu")


def insert_afs_step(path: list[int], grid: torch.Tensor, setup, settings: dict, teacher_spec, teacher_options):
    """The reference code's AFS handling: add the (nearly free) AFS step at the grid point in (0, path[1]) whose
    schedule brings the solver closest to the teacher's final samples on `afs_batch` warm-up seeds."""
    from fewstep.data import seeded_noise
    from fewstep.solvers import per_sample_noise

    first = int(settings["warmup_seed"])
    seeds = torch.arange(first, first + min(int(settings["afs_batch"]), int(settings["num_warmup"])))
    x = seeded_noise(seeds, setup.shape).to(_device_of(setup.denoiser)) * float(grid[0])
    afs = setup.afs_prior.to(x.device) if isinstance(setup.afs_prior, torch.nn.Module) else setup.afs_prior
    denoiser = bind_seeds(setup.denoiser, seeds, x.device)
    with torch.no_grad():
        target = teacher_spec.fn(denoiser, x, grid, **teacher_options)
        distances = {}
        for k in range(1, path[1]):
            candidate = [0, k, *path[1:]]
            noise = {"noise": per_sample_noise(seeds, setup.shape, x.dtype, x.device)} if setup.spec.stochastic else {}
            out = setup.spec.fn(denoiser, x, grid[candidate], afs=afs, **setup.solver_options, **noise)
            distances[k] = (out - target).flatten(1).norm(dim=1).mean().item()
    best = min(distances, key=lambda k: (distances[k], k))
    return [0, best, *path[1:]], distances


def _check_cost(grid: torch.Tensor):
    def check(entry: dict) -> None:
        cost, count = entry.get("cost"), entry.get("count")
        n = len(grid)
        require(isinstance(cost, torch.Tensor) and tuple(cost.shape) == (n, n), f"cost matrix is not {n}x{n}")
        require(finite(cost), "non-finite costs")
        require(isinstance(count, int) and count >= 1, f"warm-up count {count!r}")
        require(isinstance(entry.get("grid"), torch.Tensor) and torch.equal(entry["grid"].double(), grid.double()),
                "a different grid")  # fmt: skip

    return check


def _check_schedule(grid: torch.Tensor, num_steps: int, sigma_range: tuple[float, float]):
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
        require(float(values[-1]) >= low * (1 - RANGE_TOLERANCE) and float(values[0]) <= high * (1 + RANGE_TOLERANCE),
                f"sigmas outside [{low:g}, {high:g}]")  # fmt: skip
        require(torch.allclose(values, grid.double()[indices], rtol=1e-12, atol=0), "sigmas are not the grid's")

    return check


def cache_keys(setup, settings: dict, grid: torch.Tensor, plan: StepPlan, insert_afs: bool) -> tuple[str, str]:
    """(cost key, schedule key): the cost matrix depends on data, model, grid, teacher, warm-up and metric; the
    schedule on that plus the step count, coeff and NFE accounting (and the solver, when it picks the AFS step)."""
    warmup_settings = {k: v for k, v in settings.items() if k not in ("coeff", "afs_insert", "afs_batch")}
    cost_key = content_key({**setup.model_identity, "shape": setup.shape, "grid": grid.tolist(), **warmup_settings})
    schedule = {
        "cost": cost_key,
        "coeff": settings["coeff"],
        "nfe": plan.nfe,
        "num_steps": plan.num_steps,
        "afs": plan.afs,
        "nfe_per_step": plan.nfe_per_step,
        "denoise_to_zero": plan.denoise_to_zero,
    }
    if insert_afs:
        schedule["afs_insert"] = [
            setup.spec.name,
            setup.solver_options,
            settings["afs_batch"],
            type(setup.afs_prior).__name__,
        ]
    return cost_key, content_key(schedule)


def warmup_cost(trainer, setup, settings, grid, teacher_spec, teacher_options, batch_size, cost_path: Path):
    """The mean cost matrix: from the cache, or from a distributed warm-up (sums and counts all-reduced)."""
    from fewstep.module import WarmupModule

    cached = read_entry(cost_path, load_torch, _check_cost(grid), "GITS cost cache", "warming up again")
    if cached is not None:
        info(f"GITS cost matrix reused from {cost_path} ({cached['count']} warm-up trajectories)")
        return cached["cost"], cached["count"]
    first = int(settings["warmup_seed"])
    seeds = list(range(first, first + int(settings["num_warmup"])))
    module = WarmupModule(
        setup.denoiser,
        teacher_spec.fn,
        teacher_options,
        grid,
        settings["metric"],
        setup.shape,
        seeds,
        batch_size,
        f"GITS warm-up: {len(seeds)} {teacher_spec.name} trajectories on a {len(grid)}-point grid",
    )
    trainer.predict(module, return_predictions=False)
    total, count = module.reduced()
    cost = total / count
    if not finite(cost):  # another rank's seeds (each rank checks its own batches as it goes)
        bad = int((~torch.isfinite(cost)).sum())
        raise NonFiniteError(f"GITS warm-up: {bad} non-finite entries in the cost matrix (seeds {seeds[0]}.."
                             f"{seeds[-1]}): {WARMUP_NAN_CAUSE}; nothing was cached")  # fmt: skip
    if trainer.is_global_zero:
        write_torch(cost_path, {"cost": cost, "count": count, "grid": grid, "settings": settings})
    return cost, count


def search_path(cost, settings, num_steps: int, insert_afs: bool, afs_step) -> tuple[list[int], float, dict | None]:
    """The DP path of `num_steps` steps; with `insert_afs`, a DP path of one step fewer plus the AFS step that
    `afs_step(path)` picks (the reference code's AFS handling)."""
    coeff = float(settings["coeff"])
    if insert_afs:
        values, nxt = dynamic_programming(cost, coeff, num_steps - 1)
        path = best_path(nxt, num_steps - 1)
        if path[1] > 1:  # room for a grid point before the DP's first stop
            path, distances = afs_step(path)
            return path, float(values[-1, 0]), distances
    values, nxt = dynamic_programming(cost, coeff, num_steps)
    return best_path(nxt, num_steps), float(values[-1, 0]), None


def searched_record(setup, settings, grid, cost, count, plan, num_steps, insert_afs, teacher_pair, keys) -> dict:
    """Rank 0's DP (and AFS insertion): the schedule record that is cached and broadcast."""
    teacher_spec, teacher_options = teacher_pair

    def afs_step(path):
        return insert_afs_step(path, grid, setup, settings, teacher_spec, teacher_options)

    path, path_cost, afs_distances = search_path(cost, settings, num_steps, insert_afs, afs_step)
    return {
        "sigmas": grid[path].tolist(), "indices": path, "grid": grid.tolist(), "cost": cost.tolist(),
        "path_cost": path_cost, "afs_insert_distances": afs_distances, "num_steps": num_steps,
        "settings": settings, "warmup_count": count,
        "solver_nfe": {"nfe": plan.nfe, "afs": plan.afs, "nfe_per_step": plan.nfe_per_step},
        "identity": {**setup.model_identity, "shape": list(setup.shape)},
        "cost_key": keys[0], "schedule_key": keys[1],
    }  # fmt: skip


def search_schedule(trainer, setup, schedule: dict, plan: StepPlan, sigma_range, cache_dir, batch_size: int):
    """The GITS sigmas for `plan` (float64, ending at 0 if plan.denoise_to_zero) and the search record.

    Rank 0 runs the DP (and writes both caches); the record is broadcast to every rank.
    """
    settings = gits_settings(schedule)
    grid = base_grid(settings, *sigma_range)
    teacher_spec, teacher_options = teacher(settings)
    num_steps = plan.num_steps - int(plan.denoise_to_zero)
    insert_afs = bool(settings["afs_insert"]) and plan.afs and num_steps >= 2
    cost_key, schedule_key = cache_keys(setup, settings, grid, plan, insert_afs)
    cache = Path(cache_dir) / "gits"
    schedule_path = cache / "schedules" / f"{schedule_key}.json"

    record = read_entry(schedule_path, load_json, _check_schedule(grid, num_steps, sigma_range),
                        "GITS schedule cache", "searching again")  # fmt: skip
    if record is not None:
        info(f"GITS schedule reused from {schedule_path}")
    else:
        cost, count = warmup_cost(
            trainer,
            setup,
            settings,
            grid,
            teacher_spec,
            teacher_options,
            batch_size,
            cache / "costs" / f"{cost_key}.pt",
        )
        payload = None
        if trainer.is_global_zero:
            if insert_afs and isinstance(setup.denoiser, torch.nn.Module):  # predict's teardown left it on the CPU
                setup.denoiser.to(trainer.strategy.root_device)
            try:
                record = searched_record(
                    setup,
                    settings,
                    grid,
                    cost,
                    count,
                    plan,
                    num_steps,
                    insert_afs,
                    (teacher_spec, teacher_options),
                    (cost_key, schedule_key),
                )
                if not finite(record["sigmas"]) or not math.isfinite(record["path_cost"]):
                    raise NonFiniteError(f"GITS search: non-finite schedule {record['sigmas']}; nothing was cached")
                write_json(schedule_path, record)
                info(f"GITS schedule searched: grid indices {record['indices']}")
                payload = {"record": record}
            except FewstepError as err:  # tell every rank, so that none waits in the broadcast forever
                payload = {"error": str(err)}
        payload = trainer.strategy.broadcast(payload, src=0)
        if "error" in payload:
            raise FewstepError(payload["error"])
        record = payload["record"]
    sigmas = torch.tensor(record["sigmas"], dtype=torch.float64)
    if plan.denoise_to_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas, record


def search(cfg) -> dict | None:
    """`task=search`: run only the GITS search; write schedule.json, sigmas.txt and gits.png; print the sigmas."""
    from fewstep.plotting import plot_gits
    from fewstep.tasks.setup import build_setup, resolve_schedule

    if cfg.schedule.name != "gits":
        raise FewstepError(f"task=search searches a GITS schedule; add schedule=gits (got {cfg.schedule.name!r})")
    setup = build_setup(cfg)
    from fewstep.module import build_trainer

    trainer = build_trainer(cfg.trainer)
    record = resolve_schedule(setup, cfg, trainer)
    if not trainer.is_global_zero:
        return None
    run_dir = Path(cfg.paths.output_dir)
    sigmas = setup.sigmas.tolist()
    atomic_save_json(run_dir / "schedule.json", {"plan": setup.plan.describe(), "sigmas": sigmas, "gits": record})
    (run_dir / "sigmas.txt").write_text(", ".join(f"{s:.6g}" for s in sigmas) + "\n")
    plot_gits(record, run_dir / "gits.png")
    info(f"{setup.plan.describe()}")
    print(f"sigmas: [{', '.join(f'{s:.6g}' for s in sigmas)}]", flush=True)
    return {"sigmas": sigmas, "indices": record["indices"]}
