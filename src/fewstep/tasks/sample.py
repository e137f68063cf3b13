"""`task=sample`: sample with the chosen solver and schedule (and, on the same seeds, a hand-crafted baseline),
then measure truncation error, FID/KID with their spread, and the distance to the reference solution."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fewstep.errors import FewstepError, NonFiniteError
from fewstep.schedules import polynomial
from fewstep.solvers import get_solver
from fewstep.tasks.setup import (
    SamplingSetup,
    build_setup,
    build_sigmas,
    container,
    eval_settings,
    resolve_schedule,
    resolved_config,
)
from fewstep.utils.logging import info, log_run
from fewstep.utils.storage import atomic_save_json, atomic_write_bytes, content_key


def reference_sigmas(sigmas: torch.Tensor, num_steps: int, rho: float) -> torch.Tensor:
    """A fine polynomial schedule over the same interval as `sigmas` (ending at 0 if they do)."""
    ends_at_zero = bool(sigmas[-1] == 0)
    last_positive = float(sigmas[-2] if ends_at_zero else sigmas[-1])
    fine = polynomial(num_steps, last_positive, float(sigmas[0]), rho=rho)
    return torch.cat([fine, fine.new_zeros(1)]) if ends_at_zero else fine


def sampling_key(setup: SamplingSetup, solver_cfg: dict, sigmas: torch.Tensor) -> str:
    """Everything that changes a seed's sample: resuming into a folder never mixes settings."""
    return content_key({**setup.model_identity, "solver": solver_cfg, "sigmas": sigmas.tolist(), "afs": setup.plan.afs})


def sample_store(cache_dir: Path, setup: SamplingSetup, solver_cfg: dict, sigmas: torch.Tensor):
    """Samples are cached by every setting that changes them (`sampling_key`), so re-running the same command
    resumes where a stopped run left off, and a sweep's baseline is another job's run."""
    from fewstep.utils.shards import ShardStore

    return ShardStore(cache_dir / "samples" / sampling_key(setup, solver_cfg, sigmas), stored_shape(setup))


def link_into_run(run_dir: Path, store) -> None:
    """`run_dir/samples/<key>`: a link to the run's shards in the cache, so the run directory shows its samples."""
    link = run_dir / "samples" / store.root.name
    link.parent.mkdir(parents=True, exist_ok=True)
    store.root.mkdir(parents=True, exist_ok=True)
    if not link.exists() and not link.is_symlink():
        link.symlink_to(store.root.resolve(), target_is_directory=True)


def stored_shape(setup: SamplingSetup) -> tuple[int, ...] | None:
    """A sample's shape in its shard: the solver's shape, or the decoded image's for a latent model."""
    if getattr(setup.denoiser, "decode", None) is None:
        return setup.shape
    image_shape = getattr(setup.denoiser, "image_shape", None)
    return tuple(image_shape) if image_shape is not None else None


def baseline_sigmas(cfg: DictConfig, setup: SamplingSetup) -> tuple[str, torch.Tensor] | None:
    """The hand-crafted schedule compared on the same seeds (`eval.baseline`), with the run's NFE plan; None when
    it is off or is the run's own schedule."""
    name = cfg.eval.get("baseline")
    if not name or name == cfg.schedule.name:
        return None
    if name in ("gits", "explicit"):
        raise FewstepError(f"eval.baseline={name} is not a hand-crafted schedule; use polynomial, logsnr, "
                           "time_uniform or time_quadratic (or null for no baseline)")  # fmt: skip
    plan = setup.plan
    sigmas, _ = build_sigmas({"name": str(name)}, setup.spec, plan.nfe, plan.afs, plan.denoise_to_zero,
                             float(cfg.model.sigma_min), float(cfg.model.sigma_max))  # fmt: skip
    return str(name), sigmas


def sampling_module(setup: SamplingSetup, sigmas, seeds, store, batch_size: int, description: str):
    from fewstep.module import SamplingModule

    return SamplingModule(setup.denoiser, setup.spec.fn, sigmas, setup.shape, seeds, store, batch_size,
                          setup.solver_options, setup.afs_prior, setup.spec.stochastic, description)  # fmt: skip


def reference_module(setup: SamplingSetup, sigmas, reference: dict, seeds, batch_size: int, cache_dir: Path):
    """The high-NFE solution from the same noise, cached per (data, model, interval, reference solver)."""
    from fewstep.module import SamplingModule
    from fewstep.utils.shards import ShardStore

    fine = reference_sigmas(sigmas, int(reference["num_steps"]), float(reference["rho"]))
    key = content_key({**setup.model_identity, "shape": setup.shape, "reference": reference, "sigmas": fine.tolist()})
    spec = get_solver(reference["solver"])
    description = f"reference solution ({spec.name}, {reference['num_steps']} steps)"
    return SamplingModule(setup.denoiser, spec.fn, fine, setup.shape, seeds, ShardStore(cache_dir / "reference" / key,
                          stored_shape(setup)),
                          batch_size, description=description)  # fmt: skip


def sample(cfg: DictConfig) -> dict | None:
    started = time.perf_counter()
    run_dir, cache_dir = Path(cfg.paths.output_dir), Path(cfg.paths.cache_dir)
    settings = eval_settings(cfg.eval)
    setup = build_setup(cfg)
    baseline = baseline_sigmas(cfg, setup)
    seeds = list(range(int(cfg.seed), int(cfg.seed) + int(cfg.num_samples)))
    batch_size = int(cfg.batch_size)

    from fewstep.metrics.evaluation import evaluate, prepare_features  # torchmetrics and Lightning load only now
    from fewstep.module import build_trainer, total_seconds

    prepared = prepare_features(settings, setup.dataset)  # bad feature/statistics settings fail before sampling
    trainer = build_trainer(cfg.trainer)
    search_record = resolve_schedule(setup, cfg, trainer)
    info(f"{setup.plan.describe()}; sigmas: {[round(s, 4) for s in setup.sigmas.tolist()]}")
    solver_cfg = container(cfg.solver)
    label = f"{setup.spec.name} on {cfg.schedule.name}, {len(seeds)} samples"
    store = sample_store(cache_dir, setup, solver_cfg, setup.sigmas)
    if trainer.is_global_zero:
        link_into_run(run_dir, store)
    runs = {"": sampling_module(setup, setup.sigmas, seeds, store, batch_size, f"sampling: {label}")}
    if baseline is not None:  # every job of a sweep with the same model, solver and NFE shares it
        name, sigmas = baseline
        store = sample_store(cache_dir, setup, solver_cfg, sigmas)
        runs["baseline_"] = sampling_module(setup, sigmas, seeds, store, batch_size,
                                            f"baseline: {setup.spec.name} on {name}, {len(seeds)} samples")  # fmt: skip
    for module in runs.values():
        trainer.predict(module, return_predictions=False)
    reference = None
    if cfg.eval.reference.solver:  # null: no truncation error (e.g. 50k samples of a large model)
        reference = reference_module(setup, setup.sigmas, container(cfg.eval.reference), seeds, batch_size, cache_dir)
        trainer.predict(reference, return_predictions=False)
    sampling_seconds = total_seconds(trainer, runs[""])
    trainer.strategy.barrier()  # every shard is written before any rank reads
    evaluation = evaluate(trainer, seeds, {prefix: run.store for prefix, run in runs.items()},
                          reference.store if reference else None, setup.dataset, prepared, cache_dir, batch_size,
                          settings)  # fmt: skip
    if not trainer.is_global_zero:
        return None

    for run in runs.values():
        counted = sorted(set(run.nfe_per_batch))
        if len(counted) > 1 or (counted and counted[0] != setup.plan.nfe):
            raise RuntimeError(f"NFE accounting broken: planned {setup.plan.nfe}, counted {counted}")
    metrics = {
        **evaluation,
        "nfe": setup.plan.nfe,
        "num_steps": setup.plan.num_steps,
        "afs": setup.plan.afs,
        "solver": setup.spec.name,
        "schedule": cfg.schedule.name,
        "dataset": setup.dataset.name,
        "model": cfg.model.name,
        "num_samples": len(seeds),
        "seed": int(cfg.seed),
        "sigmas": setup.sigmas.tolist(),
        "sampling_seconds": sampling_seconds,
        "world_size": trainer.world_size,
    }
    not_finite = sorted(k for k, v in evaluation.items() if isinstance(v, float) and not math.isfinite(v)
                        and not k.endswith("_std"))  # fmt: skip
    if not_finite:  # nothing is written: a NaN must never reach metrics.json, a table or a logger
        raise NonFiniteError(f"evaluation: non-finite {', '.join(not_finite)} for seeds {seeds[0]}..{seeds[-1]}; the "
                             "samples are finite, so the statistics are degenerate (too few samples for the feature "
                             "dimension?) or eval.reference_stats is broken")  # fmt: skip
    if baseline is not None:
        metrics["baseline_schedule"], metrics["baseline_sigmas"] = baseline[0], baseline[1].tolist()
    if reference is not None:
        metrics["reference"] = reference.description
    from fewstep.reporting import panel_title

    shown = seeds[: int(cfg.eval.grid_size)]
    grids = {panel_title(metrics, cfg.schedule.name, ""): runs[""].store.load(shown)}
    if baseline is not None:  # the baseline's panel above the run's: same seeds, compared by eye
        grids = {panel_title(metrics, f"{baseline[0]} (baseline)", "baseline_"): runs["baseline_"].store.load(shown),
                 **grids}  # fmt: skip
    write_outputs(run_dir, cfg, setup, grids, metrics, search_record)
    if settings.save_npz:
        from fewstep.metrics.quantize import quantize

        save_npz(run_dir / "samples.npz", quantize(runs[""].store.load(seeds)))
    images = {"samples": run_dir / "samples.png"}
    if search_record:
        images["gits"] = run_dir / "gits.png"
    log_run(cfg, metrics, images)
    from fewstep.reporting import run_table

    print(run_table(metrics), flush=True)
    info(f"wall time {time.perf_counter() - started:.1f} s")
    return metrics


def save_npz(path: Path, images: torch.Tensor) -> None:
    """`arr_0`: uint8 N x H x W x C, the layout of the ADM/EDM evaluation suites and clean-fid."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, images.permute(0, 2, 3, 1).contiguous().numpy())
    atomic_write_bytes(path, buffer.getvalue())
    info(f"samples.npz: {tuple(images.shape[:1]) + tuple(images.permute(0, 2, 3, 1).shape[1:])} uint8 in {path}")


def write_outputs(run_dir: Path, cfg, setup: SamplingSetup, grids: dict, metrics: dict, search=None):
    from fewstep.plotting import plot_gits, save_sample_panels
    from fewstep.reporting import metrics_table

    atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(resolved_config(cfg)).encode())
    atomic_save_json(
        run_dir / "schedule.json",
        {
            "solver": setup.spec.name,
            "schedule": container(cfg.schedule),
            "sigmas": setup.sigmas.tolist(),
            "num_steps": setup.plan.num_steps,
            "nfe": setup.plan.nfe,
            "afs": setup.plan.afs,
            "denoise_to_zero": setup.plan.denoise_to_zero,
            "plan": setup.plan.describe(),
            **({"gits": search} if search else {}),
        },
    )
    save_sample_panels(grids, run_dir / "samples.png")
    if search:
        plot_gits(search, run_dir / "gits.png")
    atomic_save_json(run_dir / "metrics.json", metrics)
    info("metrics:\n" + metrics_table(metrics))
