"""Sections `overhead` and `lightning`: what the solvers and Lightning add to the denoiser calls."""

from __future__ import annotations

import logging
import warnings

import torch
from timing import DETERMINISTIC, Recorder, median_seconds, min_seconds

from fewstep.data import seed_range, seeded_noise
from fewstep.schedules import polynomial
from fewstep.solvers import SOLVERS, Sampler, make_afs_prior, plan_steps


def solver_overhead(denoiser, data, batch: int, repeats: int) -> None:
    x = seeded_noise(torch.arange(batch), data.shape) * 80.0
    reference = SOLVERS["heun"].fn(denoiser, x, polynomial(100, 0.002, 80.0))
    print(f"\n## Solvers: truncation error and overhead (KDE on mnist5k, N={len(data.images)}, batch {batch})\n")
    print("Truncation error: mean L2 to a Heun-100 reference from the same noise (polynomial schedule).\n")
    print(
        "| solver | NFE | steps | AFS | truncation error | sampler ms | same denoiser calls alone ms | overhead ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for nfe in (5, 10):
        for name, spec in DETERMINISTIC.items():
            plan = plan_steps(spec, nfe)
            sigmas = polynomial(plan.num_steps, 0.002, 80.0)
            afs = make_afs_prior("gaussian", data.images) if plan.afs else None
            recorder = Recorder(denoiser)
            out = spec.fn(recorder, x, sigmas, afs=afs)
            assert len(recorder.calls) == plan.nfe
            error = (out - reference).flatten(1).norm(dim=1).mean().item()
            t_solver = median_seconds(lambda: spec.fn(denoiser, x, sigmas, afs=afs), repeats)  # noqa: B023
            t_calls = median_seconds(lambda: [denoiser(*c) for c in recorder.calls], repeats)  # noqa: B023
            print(
                f"| {name} | {nfe} | {plan.num_steps} | {plan.afs} | {error:.3f} | {t_solver * 1e3:.1f} | "
                f"{t_calls * 1e3:.1f} | {t_solver / t_calls:.3f} |"
            )


def lightning_overhead(denoiser, data, batch: int, tmp: str) -> None:
    import lightning as L

    from fewstep.app.lightning_modules import SamplingModule, ShardWriter
    from fewstep.app.shards import ShardStore

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    spec = SOLVERS["ipndm"]
    sigmas = polynomial(10, 0.002, 80.0)
    seeds = seed_range(0, 4 * batch)

    def bare():
        for start in range(0, len(seeds), batch):
            chunk = torch.tensor(seeds[start : start + batch])
            spec.fn(denoiser, seeded_noise(chunk, data.shape) * 80.0, sigmas)

    def with_lightning(folder=[0]):  # noqa: B006 - a fresh store each call, so nothing is resumed
        folder[0] += 1
        module = SamplingModule(
            denoiser, Sampler(spec, sigmas), data.shape, seeds, ShardStore(f"{tmp}/{folder[0]}"), batch
        )
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            use_distributed_sampler=False,
            callbacks=[ShardWriter()],
        )
        trainer.predict(module, return_predictions=False)

    # the minimum of 5: background noise only ever adds time (medians of 3 were too noisy here)
    t_bare, t_lightning = min_seconds(bare, 5), min_seconds(with_lightning, 5)
    print(f"\n## Lightning overhead (ipndm, NFE 10, {len(seeds)} samples in batches of {batch})\n")
    print("| bare solver loop s | Trainer.predict + shard writes s | ratio |")
    print("|---|---|---|")
    print(f"| {t_bare:.3f} | {t_lightning:.3f} | {t_lightning / t_bare:.3f} |")
