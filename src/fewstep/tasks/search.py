"""GITS schedule search with two caches, distributed warm-up, and `task=search`.

Cache 1, the warm-up cost matrix, is keyed by data, model, grid, teacher, warm-up seeds and metric.
Cache 2, the searched schedule, is keyed by the cost key plus step count, coeff and the solver's NFE accounting.
A sweep over NFE, solvers and coeffs therefore warms up once; every other run costs one DP (or nothing).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from fewstep.errors import FewstepError
from fewstep.schedules import SCHEDULES, make_schedule
from fewstep.schedules.gits import METRICS, best_path, dynamic_programming
from fewstep.solvers import StepPlan, check_options, get_solver
from fewstep.utils.logging import info
from fewstep.utils.storage import atomic_save_json, atomic_torch_save, content_key

log = logging.getLogger(__name__)

GITS_DEFAULTS = {
    "base": "polynomial",
    "rho": 7.0,
    "grid_size": 61,
    "teacher": "ipndm",
    "teacher_order": 4,
    "num_warmup": 256,
    "warmup_seed": 1_000_000,
    "coeff": 1.15,
    "metric": "dev",
}


def gits_settings(schedule: dict) -> dict:
    settings = {**GITS_DEFAULTS, **{k: v for k, v in schedule.items() if k != "name"}}
    unknown = set(settings) - set(GITS_DEFAULTS)
    if unknown:
        raise FewstepError(f"schedule 'gits' takes options {sorted(GITS_DEFAULTS)}, not {sorted(unknown)}")
    if settings["metric"] not in METRICS:
        raise FewstepError(f"schedule.metric must be one of {list(METRICS)}, got {settings['metric']!r}")
    if settings["base"] not in SCHEDULES:
        raise FewstepError(f"schedule.base must be one of {sorted(SCHEDULES)}, got {settings['base']!r}")
    if int(settings["num_warmup"]) < 1 or int(settings["grid_size"]) < 3 or not settings["coeff"] > 0:
        raise FewstepError("gits needs num_warmup >= 1, grid_size >= 3 and coeff > 0")
    return settings


def base_grid(settings: dict, sigma_min: float, sigma_max: float) -> torch.Tensor:
    options = {"rho": settings["rho"]} if settings["base"] == "polynomial" else {}
    return make_schedule(settings["base"], int(settings["grid_size"]) - 1, sigma_min, sigma_max, **options)


def teacher(settings: dict):
    spec = get_solver(settings["teacher"])
    options = {"max_order": int(settings["teacher_order"])} if "max_order" in _params(spec) else {}
    return spec, check_options(spec, options)


def _params(spec) -> set[str]:
    import inspect

    return set(inspect.signature(spec.fn).parameters)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("damaged GITS schedule cache %s (%s): searching again", path, err)
        return None


def _read_cost(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as err:  # truncated or corrupt: recompute rather than trust it
        log.warning("damaged GITS cost cache %s (%s): warming up again", path, err)
        return None


def search_schedule(trainer, setup, schedule: dict, plan: StepPlan, sigma_range, cache_dir, batch_size: int):
    """The GITS sigmas for `plan` (float64, ending at 0 if plan.denoise_to_zero) and the search record."""
    from fewstep.module import WarmupModule

    settings = gits_settings(schedule)
    sigma_min, sigma_max = sigma_range
    grid = base_grid(settings, sigma_min, sigma_max)
    spec, teacher_options = teacher(settings)
    num_steps = plan.num_steps - int(plan.denoise_to_zero)
    cost_key = content_key(
        {
            **setup.model_identity,
            "shape": setup.dataset.shape,
            "grid": grid.tolist(),
            **{k: settings[k] for k in settings if k != "coeff"},
        }
    )
    schedule_key = content_key(
        {
            "cost": cost_key,
            "num_steps": num_steps,
            "coeff": settings["coeff"],
            "nfe": plan.nfe,
            "afs": plan.afs,
            "nfe_per_step": plan.nfe_per_step,
        }
    )
    cache_dir = Path(cache_dir) / "gits"
    schedule_path, cost_path = cache_dir / "schedules" / f"{schedule_key}.json", cache_dir / "costs" / f"{cost_key}.pt"

    record = _read_json(schedule_path)
    if record is not None:
        info(f"GITS schedule reused from {schedule_path}")
    else:
        cached = _read_cost(cost_path)
        if cached is not None:
            cost, count = cached["cost"], cached["count"]
            info(f"GITS cost matrix reused from {cost_path} ({count} warm-up trajectories)")
        else:
            seeds = list(
                range(int(settings["warmup_seed"]), int(settings["warmup_seed"]) + int(settings["num_warmup"]))
            )
            module = WarmupModule(
                setup.denoiser,
                spec.fn,
                teacher_options,
                grid,
                settings["metric"],
                setup.dataset.shape,
                seeds,
                batch_size,
            )
            info(f"GITS warm-up: {len(seeds)} {spec.name} trajectories on a {len(grid)}-point {settings['base']} grid")
            trainer.predict(module, return_predictions=False)
            total, count = module.reduced()
            cost = total / count
            if trainer.is_global_zero:
                atomic_torch_save(cost_path, {"cost": cost, "count": count, "grid": grid, "settings": settings})
        record = None
        if trainer.is_global_zero:
            values, nxt = dynamic_programming(cost, float(settings["coeff"]), num_steps)
            path = best_path(nxt, num_steps)
            record = {
                "sigmas": grid[path].tolist(),
                "indices": path,
                "grid": grid.tolist(),
                "cost": cost.tolist(),
                "path_cost": float(values[num_steps, 0]),
                "num_steps": num_steps,
                "settings": settings,
                "warmup_count": count,
                "solver_nfe": {"nfe": plan.nfe, "afs": plan.afs, "nfe_per_step": plan.nfe_per_step},
                "identity": {**setup.model_identity, "shape": list(setup.dataset.shape)},
                "cost_key": cost_key,
                "schedule_key": schedule_key,
            }
            atomic_save_json(schedule_path, record)
            info(f"GITS schedule searched: grid indices {path}")
        record = trainer.strategy.broadcast(record, src=0)
    sigmas = torch.tensor(record["sigmas"], dtype=torch.float64)
    if plan.denoise_to_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas, record


def search(cfg) -> dict | None:
    """`task=search`: run only the GITS search; write schedule.json, sigmas.txt and gits.png; print the sigmas."""
    from hydra.utils import instantiate

    from fewstep.plotting import plot_gits
    from fewstep.tasks.setup import build_setup, resolve_schedule

    if cfg.schedule.name != "gits":
        raise FewstepError(f"task=search searches a GITS schedule; add schedule=gits (got {cfg.schedule.name!r})")
    setup = build_setup(cfg)
    trainer = instantiate(cfg.trainer, logger=False)
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
