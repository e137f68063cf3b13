"""Sections `searches` and `warmup`: GITS and the solver-aware search against the hand-crafted schedules; the
warm-up size."""

from __future__ import annotations

import statistics
import time

import torch
from gits_tables import gits_sigmas

from fewstep.data import seeded_noise
from fewstep.schedules import polynomial
from fewstep.solvers import SOLVERS, Sampler, make_afs_prior, plan_steps


def searches_table(denoiser, data, gits_cost: torch.Tensor, gits_seconds: float, settings, solvers, nfes,
                   num_samples: int = 256) -> None:  # fmt: skip
    """Truncation error (mean L2 to a Heun-100 reference from the same noise, seeds 0..num_samples-1) of
    polynomial, logsnr, gits and oss for each solver and NFE; the searched / best hand-crafted ratios, and each
    search's cost in model evaluations per GITS reference warm-up (256 x 60) and seconds."""
    from fewstep.schedules import logsnr
    from fewstep.schedules.oss import oss_search

    x = seeded_noise(torch.arange(num_samples), data.shape)
    reference = SOLVERS["heun"].fn(denoiser, x * 80.0, polynomial(100, 0.002, 80.0))
    print(f"\n## Searched schedules vs hand-crafted ({num_samples} samples, KDE on mnist5k, truncation error)\n")
    print(f"GITS cost: its warm-up ({settings.num_warmup} trajectories = 1.00 reference warm-up) took "
          f"{gits_seconds:.1f} s once for every cell, plus a DP (and AFS insertion) per cell. OSS: defaults of "
          "`conf/schedule/oss.yaml`, a search per cell.\n")  # fmt: skip
    print("| solver | NFE | polynomial | logsnr | gits | oss | gits / best | oss / best | oss warm-up samples | "
          "oss evaluations (GITS warm-ups) | oss s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for name in solvers:
        spec = SOLVERS[name]
        for nfe in nfes:
            plan = plan_steps(spec, nfe)
            afs = make_afs_prior("gaussian", data.images) if plan.afs else None
            sampler = Sampler(spec, polynomial(plan.num_steps, 0.002, 80.0), {}, afs)

            def error(sigmas):
                out = sampler.with_sigmas(sigmas)(denoiser, x, torch.arange(num_samples))  # noqa: B023
                return (out - reference).flatten(1).norm(dim=1).mean().item()

            start = time.perf_counter()
            record = oss_search({}, sampler=sampler, denoiser=denoiser, shape=data.shape, sigma_min=0.002,
                                sigma_max=80.0, num_steps=plan.num_steps)  # fmt: skip
            seconds = time.perf_counter() - start
            errors = [error(polynomial(plan.num_steps, 0.002, 80.0)), error(logsnr(plan.num_steps, 0.002, 80.0)),
                      error(gits_sigmas(gits_cost, settings, spec, plan, data, denoiser, afs)),
                      error(torch.tensor(record["sigmas"], dtype=torch.float64))]  # fmt: skip
            best = min(errors[:2])
            ratios.append(errors[3] / best)
            print(f"| {name} | {nfe} | {errors[0]:.3f} | {errors[1]:.3f} | {errors[2]:.3f} | {errors[3]:.3f} | "
                  f"{errors[2] / best:.2f} | {errors[3] / best:.2f} | {record['warmup_count']} | "
                  f"{record['evaluations'] / record['gits_reference_evaluations']:.2f} | {seconds:.0f} |",
                  flush=True)  # fmt: skip
    print(
        f"\noss / best hand-crafted: median {statistics.median(ratios):.2f}, worst {max(ratios):.2f}, "
        f"no worse in {sum(r <= 1 for r in ratios)} of {len(ratios)} cells."
    )


def warmup_study(denoiser, data, num_samples: int = 256) -> None:
    """Index stability and truncation error against the warm-up size, for GITS (ipndm and euler at NFE 6) and the
    solver-aware search (euler and ipndm_v at NFE 6)."""
    from fewstep.schedules.gits import GitsSettings, gits_search
    from fewstep.schedules.oss import oss_search
    from fewstep.schedules.searches import local_warmup

    x = seeded_noise(torch.arange(num_samples), data.shape)
    reference = SOLVERS["heun"].fn(denoiser, x * 80.0, polynomial(100, 0.002, 80.0))

    def error(sampler, sigmas):
        out = sampler.with_sigmas(sigmas)(denoiser, x, torch.arange(num_samples))
        return (out - reference).flatten(1).norm(dim=1).mean().item()

    print(f"\n## Warm-up size: grid indices and truncation error ({num_samples} samples, KDE on mnist5k, NFE 6)\n")
    print("| search | solver | warm-up | grid indices | same as the largest | truncation error | s |")
    print("|---|---|---|---|---|---|---|")
    sizes = (8, 16, 32, 64, 128, 256)
    for method, solver in [("gits", "ipndm"), ("gits", "euler"), ("oss", "euler"), ("oss", "ipndm_v")]:  # fmt: skip
        sampler = Sampler.of(solver, polynomial(6, 0.002, 80.0))
        rows = []
        for size in sizes:
            start = time.perf_counter()
            if method == "gits":
                record = gits_search(GitsSettings(num_warmup=size), sigma_min=0.002, sigma_max=80.0, num_steps=6,
                                     warmup=local_warmup(denoiser, data.shape))  # fmt: skip
            else:
                record = oss_search({"num_warmup": size, "min_warmup": size}, sampler=sampler, denoiser=denoiser,
                                    shape=data.shape, sigma_min=0.002, sigma_max=80.0, num_steps=6)  # fmt: skip
            rows.append((size, record["indices"], error(sampler, torch.tensor(record["sigmas"])),
                         time.perf_counter() - start))  # fmt: skip
        for size, indices, err, seconds in rows:
            print(f"| {method} | {solver} | {size} | {indices} | {'yes' if indices == rows[-1][1] else 'no'} | "
                  f"{err:.3f} | {seconds:.1f} |", flush=True)  # fmt: skip
