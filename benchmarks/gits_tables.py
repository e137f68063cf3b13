"""Sections `gits` and `truncation`: GITS at the reference settings, timed; the truncation error of the
polynomial, logsnr and GITS schedules."""

from __future__ import annotations

import time

import torch
from timing import DETERMINISTIC, median_seconds

from fewstep.data import seed_range, seeded_noise
from fewstep.schedules import polynomial
from fewstep.solvers import SOLVERS, Sampler, make_afs_prior, plan_steps


def gits_timings(denoiser, data, batch: int, settings) -> torch.Tensor:
    from fewstep.schedules.gits import cost_sums, dynamic_programming
    from fewstep.schedules.teacher import base_grid, teacher, teacher_trajectory

    grid = base_grid(settings, 0.002, 80.0)
    teacher_sampler = teacher(settings, grid)
    seeds = seed_range(settings.warmup_seed, settings.num_warmup)
    t_warmup = t_cost = 0.0
    total = torch.zeros(len(grid), len(grid), dtype=torch.float64)
    for start in range(0, len(seeds), batch):
        chunk = torch.tensor(seeds[start : start + batch])
        x = seeded_noise(chunk, data.shape) * 80.0
        t0 = time.perf_counter()
        states, slopes = teacher_trajectory(teacher_sampler.as_solver(chunk), denoiser, x, grid)
        t1 = time.perf_counter()
        total += cost_sums(states, slopes, grid, settings.metric)
        t_warmup, t_cost = t_warmup + t1 - t0, t_cost + time.perf_counter() - t1
    cost = total / len(seeds)
    t_dp = median_seconds(lambda: dynamic_programming(cost, settings.coeff, 10), 20)
    print(
        f"\n## GITS at reference settings ({len(seeds)} warm-up, grid {len(grid)}, teacher {teacher_sampler.name}, "
        f"metric {settings.metric}, batch {batch})\n"
    )
    print("| warm-up trajectories s | cost matrix s | DP (grid 61, 10 steps) ms |")
    print("|---|---|---|")
    print(f"| {t_warmup:.2f} | {t_cost:.2f} | {t_dp * 1e3:.2f} |")
    return cost


def gits_sigmas(cost: torch.Tensor, settings, spec, plan, data, denoiser, afs) -> torch.Tensor:
    """The GITS schedule for `plan` from a cost matrix, with the reference code's AFS insertion."""
    from fewstep.schedules.gits import afs_insertion, search_path
    from fewstep.schedules.teacher import base_grid, teacher

    grid = base_grid(settings, 0.002, 80.0)
    seeds = settings.afs_seeds
    pick = afs_insertion(denoiser, data.shape, Sampler(spec, grid, {}, afs), seeds)
    inserts = plan.afs and settings.afs_insert
    afs_step = (lambda path: pick(path, grid, teacher(settings, grid))[:2]) if inserts else None
    path, _, _ = search_path(cost, settings.coeff, plan.num_steps, afs_step)
    return grid[path]


def truncation_table(denoiser, data, cost: torch.Tensor, settings: dict, num_samples: int = 128) -> None:
    from fewstep.schedules import logsnr

    x = seeded_noise(torch.arange(num_samples), data.shape) * 80.0
    reference = SOLVERS["heun"].fn(denoiser, x, polynomial(100, 0.002, 80.0))
    print(f"\n## Truncation error vs a Heun-100 reference ({num_samples} samples, KDE on mnist5k)\n")
    print("| solver | NFE | steps | AFS | polynomial | logsnr | gits | gits / best baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for name, spec in DETERMINISTIC.items():
        for nfe in (4, 5, 6, 8, 10):
            plan = plan_steps(spec, nfe)
            afs = make_afs_prior("gaussian", data.images) if plan.afs else None

            def error(sigmas):
                out = spec.fn(denoiser, x, sigmas, afs=afs)  # noqa: B023
                return (out - reference).flatten(1).norm(dim=1).mean().item()

            errors = [
                error(polynomial(plan.num_steps, 0.002, 80.0)),
                error(logsnr(plan.num_steps, 0.002, 80.0)),
                error(gits_sigmas(cost, settings, spec, plan, data, denoiser, afs)),
            ]
            print(
                f"| {name} | {nfe} | {plan.num_steps} | {plan.afs} | {errors[0]:.3f} | {errors[1]:.3f} | "
                f"{errors[2]:.3f} | {errors[2] / min(errors[:2]):.2f} |"
            )
