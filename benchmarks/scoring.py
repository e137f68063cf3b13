"""Section `scoring`: FID on raw floats against FID on images as EDM scores them."""

from __future__ import annotations

import torch
from gits_tables import gits_sigmas

from fewstep.data import seeded_noise
from fewstep.schedules import polynomial
from fewstep.solvers import SOLVERS, plan_steps


def scoring(denoiser, data, cost: torch.Tensor, settings: dict, num_samples: int = 256) -> None:
    """FID with LeNet features before (raw float samples) and after (clipped and quantised as EDM writes PNGs)."""
    from fewstep.metrics import FeatureStats, build_features, frechet_distance
    from fewstep.metrics.quantize import as_scored

    lenet = build_features("lenet", data.name)

    def fid(samples: torch.Tensor, scored: bool) -> float:
        view = as_scored if scored else (lambda x: x)
        ours = FeatureStats(128).update(lenet(view(samples)))
        theirs = FeatureStats(128).update(lenet(view(data.images)))
        return frechet_distance(*ours.mean_cov(), *theirs.mean_cov())

    x = seeded_noise(torch.arange(num_samples), data.shape) * 80.0
    explicit = torch.tensor([80.0, 17.5, 3.0, 0.4, 0.05, 0.002], dtype=torch.float64)
    readme = torch.tensor([80.0, 10.0, 2.0, 0.5, 0.1, 0.002], dtype=torch.float64)
    runs = [("ipndm", "polynomial", polynomial(5, 0.002, 80.0)),
            ("ipndm", "explicit [80,17.5,3,0.4,0.05,0.002]", explicit),
            ("ipndm", "explicit [80,10,2,0.5,0.1,0.002]", readme),
            ("ipndm", "gits", None), ("dpmpp", "polynomial", polynomial(5, 0.002, 80.0)), ("dpmpp", "gits", None),
            ("euler", "polynomial", polynomial(5, 0.002, 80.0)), ("euler", "gits", None)]  # fmt: skip
    print(f"\n## Scoring: raw float samples vs images as EDM writes them ({num_samples} samples, KDE on mnist5k, "
          "NFE 5, FID with LeNet features)\n")  # fmt: skip
    print("| solver | schedule | pixels beyond [-1, 1] by > 1/255 | min / max pixel | FID raw (before) | "
          "FID scored (after) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    reference = SOLVERS["heun"].fn(denoiser, x, polynomial(100, 0.002, 80.0))
    rows = [("heun", "polynomial, 100 steps (reference)", reference)]
    for name, schedule, sigmas in runs:
        spec = SOLVERS[name]
        plan = plan_steps(spec, 5)
        if sigmas is None:
            sigmas = gits_sigmas(cost, settings, spec, plan, data, denoiser, None)
        rows.append((name, schedule, torch.cat([spec.fn(denoiser, chunk, sigmas) for chunk in x.split(64)])))
    for name, schedule, samples in rows:
        outside = (samples.abs() > 1 + 1 / 255).double().mean().item()
        print(f"| {name} | {schedule} | {outside:.2%} | {samples.min().item():.2f} / {samples.max().item():.2f} | "
              f"{fid(samples, False):.1f} | {fid(samples, True):.1f} |")  # fmt: skip
