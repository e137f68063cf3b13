"""Section `reference`: which reference solution qualifies as the floor."""

from __future__ import annotations

import time

import torch
from gits_tables import gits_sigmas, gits_timings
from timing import DETERMINISTIC

from fewstep.data import seeded_noise
from fewstep.models import KDEDenoiser
from fewstep.schedules import polynomial
from fewstep.solvers import SOLVERS, make_afs_prior, plan_steps


def reference_choice(data, batch: int, settings: dict) -> None:
    """The default reference solution, chosen by measurement: for each candidate solver and step count, its own
    error (mean L2 to the same solver with 4x the steps) against a tenth of the smallest truncation error it is
    used to judge (every deterministic solver, polynomial / logsnr / GITS, NFE 4-10), on the mnist5k KDE and the
    shipped U-Net."""
    from fewstep.models import load_unet
    from fewstep.schedules import logsnr

    candidates = [("heun", {}, (50, 100)), ("dpmpp", {"max_order": 3}, (50, 100)),
                  ("unipc", {"max_order": 3}, (50, 100)), ("deis", {"max_order": 4}, (50, 100)),
                  ("ipndm_v", {"max_order": 4}, (50, 100))]  # fmt: skip
    print("\n## Choosing the reference solution (error of each candidate against itself with 4x the steps)\n")
    verdicts, worst = {}, {}
    models = (("kde", KDEDenoiser(data.images), 64), ("unet_mnist5k", load_unet("unet_mnist5k.pt"), 32))
    for model_name, model, count in models:
        x = seeded_noise(torch.arange(count), data.shape) * 80.0

        def solve(spec, sigmas, options=None, afs=None):
            with torch.no_grad():
                return torch.cat([spec.fn(model, c, sigmas, afs=afs, **(options or {})) for c in x.split(batch)])  # noqa: B023

        def distance(a, b):
            return (a - b).flatten(1).norm(dim=1).mean().item()

        start = time.perf_counter()
        errors, finest = {}, None
        for name, options, steps_list in candidates:
            for steps in steps_list:
                coarse = solve(SOLVERS[name], polynomial(steps, 0.002, 80.0), options)
                fine = solve(SOLVERS[name], polynomial(4 * steps, 0.002, 80.0), options)
                nfe = steps * SOLVERS[name].nfe_per_step - (1 if SOLVERS[name].nfe_per_step == 2 else 0)
                errors[(name, steps)] = (nfe, distance(coarse, fine))
                if name == "heun" and steps == max(steps_list):
                    finest = fine  # Heun with 4 x 100 steps: the solution the truncation errors are measured against
        cost = gits_timings(model, data, batch, settings)
        smallest = (float("inf"), None)
        for name, spec in DETERMINISTIC.items():
            for nfe in (4, 5, 6, 8, 10):
                plan = plan_steps(spec, nfe)
                afs = make_afs_prior("gaussian", data.images) if plan.afs else None
                schedules = (("polynomial", polynomial(plan.num_steps, 0.002, 80.0)),
                             ("logsnr", logsnr(plan.num_steps, 0.002, 80.0)),
                             ("gits", gits_sigmas(cost, settings, spec, plan, data, model, afs)))  # fmt: skip
                for schedule, sigmas in schedules:
                    error = distance(solve(spec, sigmas, afs=afs), finest)
                    smallest = min(smallest, (error, f"{name} {schedule} NFE {nfe}"), key=lambda e: e[0])
        threshold = smallest[0] / 10
        print(
            f"{model_name} ({count} samples, {time.perf_counter() - start:.0f} s): smallest truncation error at "
            f"NFE 4-10 {smallest[0]:.3f} ({smallest[1]}), so a reference must err by less than {threshold:.4f}\n"
        )
        print("| model | reference solver | steps | NFE | error vs 4x the steps | below a tenth? |")
        print("|---|---|---|---|---|---|")
        for (name, steps), (nfe, error) in errors.items():
            verdicts.setdefault((name, steps), []).append(error < threshold)
            worst[(name, steps)] = max(worst.get((name, steps), 0.0), error / threshold)
            print(f"| {model_name} | {name} | {steps} | {nfe} | {error:.3g} | {'yes' if error < threshold else 'no'} |")
        print()
    good = [(errors[key][0], worst[key], key) for key, ok in verdicts.items() if all(ok)]
    if good:  # the fewest NFE; among those, the smallest error (relative to its threshold) on the harder model
        nfe, ratio, (name, steps) = min(good)
        print(
            f"cheapest reference that qualifies on both models: {name}, {steps} steps ({nfe} NFE per sample; "
            f"its error is {ratio:.2f} of the threshold on the harder model)"
        )
    else:
        print("no candidate qualifies on both models")
