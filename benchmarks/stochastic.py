"""Section `stochastic`: stochastic samplers against ODE solvers (FID, FD)."""

from __future__ import annotations

import torch

from fewstep.data import seeded_noise
from fewstep.schedules import polynomial
from fewstep.solvers import SOLVERS, make_afs_prior, plan_steps


def data_statistics(data) -> dict:
    """name -> (feature map, (mean, cov) of the data): LeNet features ("fid") and pixels ("fd"), both on images
    quantised as EDM writes them (what fewstep scores)."""
    from fewstep.metrics import FeatureStats, build_features
    from fewstep.metrics.quantize import as_scored

    lenet = build_features("lenet", data.name)
    reference = {}
    for name, features in (("fid", lambda x: lenet(as_scored(x))), ("fd", lambda x: as_scored(x).flatten(1))):
        stats = FeatureStats(128 if name == "fid" else data.images[0].numel()).update(features(data.images))
        reference[name] = (features, stats.mean_cov())
    return reference


def distances_to_data(reference: dict, sample_batch, seeds: torch.Tensor, batch: int) -> list[float]:
    """[FID (LeNet), FD (pixels)] of sample_batch(seed chunk) over all seeds, to the data."""
    from fewstep.metrics import FeatureStats, frechet_distance

    stats = {key: FeatureStats(ref[1][0].shape[0]) for key, ref in reference.items()}
    for chunk in seeds.split(batch):
        out = sample_batch(chunk)
        for key, (features, _) in reference.items():
            stats[key].update(features(out))
    return [frechet_distance(*stats[key].mean_cov(), *reference[key][1]) for key in ("fid", "fd")]


def stochastic_table(denoiser, data, num_samples: int = 512, batch: int = 128) -> None:
    from fewstep.solvers import per_sample_noise

    reference = data_statistics(data)
    solvers = [("er_sde", {"order": 1}), ("er_sde", {"order": 2}), ("er_sde", {"order": 3}),
               ("euler_ancestral", {}), ("edm_stochastic", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0,
               "s_noise": 1.003}), ("dpmpp", {}), ("unipc", {})]  # fmt: skip
    print(f"\n## Stochastic vs ODE samplers: distance to the data ({num_samples} samples, KDE on mnist5k)\n")
    print("| solver | options | NFE | steps | FID (LeNet) | FD (pixels) |")
    print("|---|---|---|---|---|---|")
    for nfe in (10, 20, 50):
        for name, options in solvers:
            spec = SOLVERS[name]
            plan = plan_steps(spec, nfe)
            sigmas = polynomial(plan.num_steps, 0.002, 80.0)
            afs = make_afs_prior("gaussian", data.images) if plan.afs else None

            def sample_batch(chunk):
                x = seeded_noise(chunk, data.shape) * 80.0
                extra = {"noise": per_sample_noise(chunk, data.shape)} if spec.stochastic else {}  # noqa: B023
                return spec.fn(denoiser, x, sigmas, afs=afs, **options, **extra)  # noqa: B023

            distances = distances_to_data(reference, sample_batch, torch.arange(num_samples), batch)
            shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "-"
            print(f"| {name} | {shown} | {nfe} | {plan.num_steps} | {distances[0]:.2f} | {distances[1]:.2f} |")
