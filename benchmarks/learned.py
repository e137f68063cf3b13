"""Section `learned`: the shipped U-Net, its speed and every schedule on it."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from timing import min_seconds

from fewstep.data import seeded_noise
from fewstep.schedules import polynomial
from fewstep.solvers import SOLVERS, plan_steps


def learned_model(data, batch: int, solvers, nfes, num_samples: int = 512, other_weights=()) -> None:
    """The shipped U-Net: sampling throughput at NFE 5; then every schedule (polynomial, logsnr, gits, oss) for every
    deterministic solver and NFE, sampled and scored through the public API as the command line scores them."""
    from fewstep.models import load_unet

    model = load_unet("unet_mnist5k.pt")
    spec = SOLVERS["ipndm"]
    with torch.no_grad():
        plan = plan_steps(spec, 5)
        sigmas = polynomial(plan.num_steps, 0.002, 80.0)
        x = seeded_noise(torch.arange(256), data.shape) * 80.0
        t_sample = min_seconds(lambda: [spec.fn(model, chunk, sigmas) for chunk in x.split(batch)], 3)
        t_model = min_seconds(lambda: [model(chunk, 1.0) for chunk in x.split(batch)], 3)
    print(f"\n## Shipped model (unet_mnist5k, {sum(p.numel() for p in model.parameters()):,} parameters)\n")
    print("| ipndm NFE 5 samples/s | denoiser evaluations/s | sampler time / 5 x one evaluation |")
    print("|---|---|---|")
    print(f"| {256 / t_sample:.1f} | {256 / t_model:.1f} | {t_sample / (plan.nfe * t_model):.3f} |")
    learned_table(model, data, solvers, nfes, num_samples, other_weights)


def reference_floor(model, data, num_samples: int, cache) -> tuple[torch.Tensor, dict]:
    """The model's reference solution (ipndm_v, 100 steps, seeds 0..num_samples-1) and its scores: the floor."""
    import fewstep
    from fewstep.app.config.plan import reference_sigmas

    sigmas = reference_sigmas(polynomial(5, 0.002, 80.0), 100, 7.0)
    reference = fewstep.sample(model, "ipndm_v", sigmas, range(num_samples))
    return reference, fewstep.evaluate(reference, data, cache_dir=cache)


def learned_table(model, data, solvers, nfes, num_samples: int, other_weights=()) -> None:
    """FID (LeNet features, images clipped and quantised as EDM's fid.py reads them, ± bootstrap standard error)
    and truncation error (mean L2 to the model's own reference solution, ipndm_v 100 steps, same seeds) of
    polynomial, logsnr, gits and oss; searches at the defaults of conf/schedule/{gits,oss}.yaml, cached under
    outputs/cache/bench (a rerun reuses them; new weights are new cache entries)."""
    import fewstep
    from fewstep.models import load_unet
    from fewstep.schedules import logsnr

    cache = Path("outputs/cache/bench")
    seeds = range(num_samples)
    started = time.perf_counter()
    reference, floor = reference_floor(model, data, num_samples, cache)
    for path in other_weights:
        _, other = reference_floor(load_unet(path), data, num_samples, cache)
        print(f"\nThe reference solution's FID with {path} ({num_samples} samples): {other['fid']:.1f} ± "
              f"{other['fid_std']:.1f}")  # fmt: skip
    real = data.images[torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))[:num_samples]]
    data_floor = fewstep.evaluate(real, data, cache_dir=cache)
    gits_started = time.perf_counter()  # uncached: the warm-up (256 x 60 evaluations), its cost matrix and the DP
    fewstep.search_schedule(model, nfe=5, solver="euler", method="gits")
    gits_seconds = time.perf_counter() - gits_started
    print(f"\n## Schedules on the learned model ({num_samples} samples, unet_mnist5k)\n")
    print(f"FID: {floor['features'] if 'features' in floor else 'LeNet'} features to mnist5k, images clipped and "
          f"quantised to uint8 as EDM's fid.py reads them, ± the bootstrap standard error. Floors: the reference "
          f"solution (ipndm_v, 100 steps, seeds 0..{num_samples - 1}) {floor['fid']:.1f} ± {floor['fid_std']:.1f}; "
          f"{num_samples} of mnist5k's own images {data_floor['fid']:.1f} ± {data_floor['fid_std']:.1f} "
          f"({time.perf_counter() - started:.0f} s). Truncation: mean L2 to the reference solution. One GITS search, "
          f"uncached (its warm-up of 256 x 60 evaluations, cost matrix, DP): {gits_seconds:.0f} s; the oss cost "
          f"counts every model evaluation, per sample, in those warm-ups.\n")  # fmt: skip
    names = ("polynomial", "logsnr", "gits", "oss")
    print("| solver | NFE | " + " | ".join(f"FID {n}" for n in names) + " | " + " | ".join(f"trunc. {n}" for n in names)
          + " | gits / best | oss / best | oss cost (GITS warm-ups) | oss search s (when it ran) |")  # fmt: skip
    print("|---|---|" + "---|" * 12)
    trunc_ratios, fid_rows = {"gits": [], "oss": []}, []
    for name in solvers:
        spec = SOLVERS[name]
        for nfe in nfes:
            plan = plan_steps(spec, nfe)
            prior = {"afs_prior": "gaussian", "afs_data": data.images} if plan.afs else {}
            schedules = {"polynomial": polynomial(plan.num_steps, 0.002, 80.0),
                         "logsnr": logsnr(plan.num_steps, 0.002, 80.0)}  # fmt: skip
            for method in ("gits", "oss"):
                schedules[method] = fewstep.search_schedule(model, nfe=nfe, solver=name, method=method,
                                                            afs_data=data.images, cache_dir=cache)  # fmt: skip
            scores = {}
            for key, sigmas in schedules.items():
                samples = fewstep.sample(model, name, sigmas, seeds, **prior)
                scores[key] = fewstep.evaluate(samples, data, reference=reference, cache_dir=cache)
            trunc = {k: v["truncation_error"] for k, v in scores.items()}
            best = min(trunc["polynomial"], trunc["logsnr"])
            for method in ("gits", "oss"):
                trunc_ratios[method].append(trunc[method] / best)
            fid_rows.append({k: (v["fid"], v["fid_std"]) for k, v in scores.items()})
            record = schedules["oss"].record
            cost = record["evaluations"] / record["gits_reference_evaluations"]
            print(f"| {name} | {nfe} | " + " | ".join(f"{scores[k]['fid']:.1f} ± {scores[k]['fid_std']:.1f}"
                                                      for k in names)
                  + " | " + " | ".join(f"{trunc[k]:.2f}" for k in names)
                  + f" | {trunc['gits'] / best:.2f} | {trunc['oss'] / best:.2f} | {cost:.2f} | "
                  f"{record['seconds']:.0f} |", flush=True)  # fmt: skip
    for method in ("gits", "oss"):
        ratios = trunc_ratios[method]
        fid_better = sum(row[method][0] <= min(row["polynomial"][0], row["logsnr"][0]) for row in fid_rows)
        differences = []  # (searched FID - best hand-crafted FID) / their combined standard error
        for row in fid_rows:
            fid, std = row[method]
            best_fid, best_std = min(row["polynomial"], row["logsnr"])
            differences.append((fid - best_fid) / (std**2 + best_std**2) ** 0.5)
        fid_worse, fid_lower = sum(d > 2 for d in differences), sum(d < -2 for d in differences)
        print(f"\n{method} / best hand-crafted truncation error: median {statistics.median(ratios):.2f}, worst "
              f"{max(ratios):.2f}, no worse in {sum(r <= 1 for r in ratios)} of {len(ratios)} cells. FID no higher "
              f"than the best hand-crafted one in {fid_better} of {len(fid_rows)} cells; lower by more than two "
              f"combined standard errors in {fid_lower}, higher by more than two in {fid_worse}.")  # fmt: skip
