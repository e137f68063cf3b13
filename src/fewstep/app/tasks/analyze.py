"""`task=analyze`: the geometry of sampling trajectories for any dataset x model (Chen et al. 2023, 2024).

Trajectories x(sigma) and the denoising trajectory D(x(sigma), sigma) are recorded on a fine polynomial grid by
the Lightning prediction loop (seeds sharded over ranks), each batch reduced at once to per-sample measures and
written with them to `trajectories/batch-*.npz`, so memory is bounded by one batch. Rank 0 then summarises:
metrics.json (flat keys) and one PNG per view; both go to the active loggers.
"""

from __future__ import annotations

import torch

from fewstep.app.config.task_plans import build_analyze_plan
from fewstep.app.loggers import log_run
from fewstep.app.runner import LightningRunner
from fewstep.geometry import (
    chord_deviation_curves,
    distance_to_final,
    effective_modes,
    mean_shift_step,
    pca_explained_variance,
    score_deviation,
    shape_similarity,
    turning_angles,
)
from fewstep.geometry.recording import BATCH_PATTERN, read_batch, refuse_used_folder
from fewstep.models import KDEDenoiser
from fewstep.solvers import Sampler
from fewstep.utils.logging import info
from fewstep.utils.storage import atomic_save_json


def _per_sample(batch, denoiser, shape, optimal=None) -> dict:
    """Every measure of one batch, per sample (and per sigma where it is a curve)."""
    out = {
        "pca": pca_explained_variance(batch.states, k=3),  # (B, 3)
        "deviation": chord_deviation_curves(batch.states),  # (T+1, B)
        "turning": turning_angles(batch.states),  # (T-1, B)
    }
    out["distance_sampling"], out["distance_denoising"] = distance_to_final(batch.states, batch.denoised)
    if optimal is not None:
        out["score_deviation"] = score_deviation(denoiser, optimal, batch.states, batch.sigmas, shape=shape)
    kde = optimal if optimal is not None else denoiser if isinstance(denoiser, KDEDenoiser) else None
    if kde is not None:
        sigmas = batch.sigmas.tolist()
        out["modes"] = torch.stack([effective_modes(kde.weights(batch.states[i].reshape(-1, *shape), sigmas[i]))
                                    for i in range(len(sigmas) - 1)])  # fmt: skip
    return out


def _concat(parts: list[dict]) -> dict:
    return {key: torch.cat([p[key] for p in parts], dim=0 if key == "pca" else 1) for key in parts[0]}


def _median(t: torch.Tensor) -> float:
    return float(t.double().median())


def summarize(m: dict, sigmas: torch.Tensor) -> dict:
    top = m["pca"]
    shape = shape_similarity(m["deviation"])
    mid = [i for i, s in enumerate(sigmas.tolist()[:-1]) if 1.0 <= s <= 5.0]
    closer = (m["distance_denoising"] < m["distance_sampling"])[:-1].double().mean().item()
    metrics = {
        **{
            f"pca_top{k + 1}_{stat}": float(getattr(top[:, k].double(), stat)())
            for k in range(3)
            for stat in ("min", "median", "max")
        },  # fmt: skip
        "pca_top3_above_0.85_fraction": float((top[:, 2] > 0.85).double().mean()),
        # PC 1 is mostly the straight noise -> sample line; how much of what it leaves do PCs 2-3 capture?
        "pca_beyond_top1_captured_by_2_3_median": _median((top[:, 2] - top[:, 0]) / (1 - top[:, 0]).clamp(min=1e-300)),
        "chord_deviation_max_median": _median(m["deviation"].max(0).values),
        "chord_deviation_argmax_sigma_median": _median(sigmas[shape["argmax"]]),
        "shape_spread": float(shape["spread"]),
        "turning_angle_max_median": _median(m["turning"].max(0).values),
        "denoising_closer_fraction": closer,
        "distance_sampling_at_sigma_1_5_median": _median(m["distance_sampling"][mid]) if mid else None,
        "distance_denoising_at_sigma_1_5_median": _median(m["distance_denoising"][mid]) if mid else None,
        "sigmas": sigmas.tolist(),
        "chord_deviation_mean_curve": shape["mean"].tolist(),
        "distance_sampling_median_curve": m["distance_sampling"].double().median(1).values.tolist(),
        "distance_denoising_median_curve": m["distance_denoising"].double().median(1).values.tolist(),
    }
    if "modes" in m:
        metrics["effective_modes_median_curve"] = m["modes"].double().median(1).values.tolist()
    if "score_deviation" in m:
        metrics["score_deviation_median_curve"] = m["score_deviation"].double().median(1).values.tolist()
        metrics["score_deviation_max_median"] = _median(m["score_deviation"].max(0).values)
    return metrics


def mean_shift_check(data: torch.Tensor, x: torch.Tensor, sigmas=(0.05, 0.5, 5.0, 50.0)) -> float:
    """Max |D_KDE(x, sigma) - one Gaussian mean-shift step of bandwidth sigma| in float64."""
    kde = KDEDenoiser(data, dtype="float64")
    flat = data.reshape(len(data), -1).double()
    return max((kde(x.double(), s).flatten(1) - mean_shift_step(x.double().flatten(1), flat, s)).abs().max().item()
               for s in sigmas)  # fmt: skip


def analyze(cfg) -> dict | None:
    plan = build_analyze_plan(cfg)
    runner = LightningRunner(plan.trainer_config)
    dataset, denoiser, shape = plan.model.dataset, plan.model.denoiser, plan.model.shape
    spec, sigmas, seeds, optimal, outputs = plan.solver, plan.sigmas, list(plan.seeds), plan.optimal, plan.outputs
    folder = outputs.run_dir / "trajectories"
    refuse_used_folder(folder)

    from fewstep.app.lightning_modules import TrajectoryModule  # Lightning loads only now

    trainer = runner.trainer
    module = TrajectoryModule(denoiser, Sampler(spec, sigmas), shape, seeds, plan.batch_size, folder,
                              _per_sample, {"optimal": optimal} if optimal is not None else {})  # fmt: skip
    trainer.predict(module, return_predictions=False)
    trainer.strategy.barrier()  # every batch is written before rank 0 reads
    if not trainer.is_global_zero:
        return None
    files = sorted(folder.glob(BATCH_PATTERN))
    first = read_batch(files[0])[0]
    measures = _concat([{k.removeprefix("measure_"): v for k, v in read_batch(f, trajectories=False)[1].items()}
                        for f in files])  # fmt: skip
    metrics = {"dataset": dataset.name, "model": plan.model_name, "solver": spec.name,
               "num_samples": len(seeds), "num_steps": len(sigmas) - 1, **summarize(measures, sigmas)}  # fmt: skip
    if plan.model_name == "kde" or optimal is not None:
        middle = first.states[len(sigmas) // 2][:4].reshape(-1, *shape)  # points along a trajectory
        metrics["mean_shift_max_abs_error"] = mean_shift_check(dataset.images[:500], middle)
    from fewstep.app.plots import plot_geometry

    images = plot_geometry(first, measures, sigmas, shape, outputs.run_dir)
    atomic_save_json(outputs.run_dir / "metrics.json", metrics)
    log_run(outputs, metrics, images)
    info("geometry: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics
