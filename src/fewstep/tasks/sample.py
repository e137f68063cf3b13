"""`task=sample`: sample with the chosen solver and schedule, then measure truncation error and FID."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fewstep.plotting import save_image_grid
from fewstep.schedules import polynomial
from fewstep.solvers import get_solver
from fewstep.tasks.evaluate import evaluate, prepare_features
from fewstep.tasks.setup import SamplingSetup, build_setup, container, resolve_schedule, resolved_config
from fewstep.utils.logging import info, log_run
from fewstep.utils.shards import ShardStore
from fewstep.utils.storage import atomic_save_json, atomic_write_bytes, content_key


def reference_sigmas(sigmas: torch.Tensor, num_steps: int, rho: float) -> torch.Tensor:
    """A fine polynomial schedule over the same interval as `sigmas` (ending at 0 if they do)."""
    ends_at_zero = bool(sigmas[-1] == 0)
    last_positive = float(sigmas[-2] if ends_at_zero else sigmas[-1])
    fine = polynomial(num_steps, last_positive, float(sigmas[0]), rho=rho)
    return torch.cat([fine, fine.new_zeros(1)]) if ends_at_zero else fine


def sampling_key(setup: SamplingSetup, solver_cfg: dict) -> str:
    """Everything that changes a seed's sample: resuming into a folder never mixes settings."""
    return content_key(
        {**setup.model_identity, "solver": solver_cfg, "sigmas": setup.sigmas.tolist(), "afs": setup.plan.afs}
    )


def reference_module(setup: SamplingSetup, reference: dict, seeds, batch_size: int, cache_dir: Path):
    """The high-NFE solution from the same noise, cached per (data, model, interval, reference solver)."""
    from fewstep.module import SamplingModule

    sigmas = reference_sigmas(setup.sigmas, int(reference["num_steps"]), float(reference["rho"]))
    key = content_key(
        {
            **setup.model_identity,
            "shape": setup.shape,
            "reference": reference,
            "sigmas": sigmas.tolist(),
        }
    )
    store = ShardStore(cache_dir / "reference" / key)
    spec = get_solver(reference["solver"])
    return SamplingModule(setup.denoiser, spec.fn, sigmas, setup.shape, seeds, store, batch_size)


def sample(cfg: DictConfig) -> dict | None:
    run_dir = Path(cfg.paths.output_dir)
    setup = build_setup(cfg)
    seeds = list(range(int(cfg.seed), int(cfg.seed) + int(cfg.num_samples)))

    from fewstep.module import SamplingModule, ShardWriter  # Lightning loads only once the config is valid

    prepared = prepare_features(cfg.eval, setup.dataset)  # bad feature/statistics settings fail before sampling
    trainer = instantiate(cfg.trainer, callbacks=[ShardWriter()], logger=False)
    search_record = resolve_schedule(setup, cfg, trainer)
    info(f"{setup.plan.describe()}; sigmas: {[round(s, 4) for s in setup.sigmas.tolist()]}")
    store = ShardStore(run_dir / "samples" / sampling_key(setup, container(cfg.solver)))
    run = SamplingModule(
        setup.denoiser,
        setup.spec.fn,
        setup.sigmas,
        setup.shape,
        seeds,
        store,
        cfg.batch_size,
        setup.solver_options,
        setup.afs_prior,
        setup.spec.stochastic,
    )
    trainer.predict(run, return_predictions=False)
    ref = None
    if cfg.eval.reference.solver:  # null: no truncation error (e.g. 50k samples of a large model)
        ref = reference_module(setup, container(cfg.eval.reference), seeds, cfg.batch_size, Path(cfg.paths.cache_dir))
        info(f"reference: {cfg.eval.reference.solver}, {cfg.eval.reference.num_steps} steps (cache {ref.store.root})")
        trainer.predict(ref, return_predictions=False)
    trainer.strategy.barrier()  # every shard is written before any rank reads
    evaluation = evaluate(
        trainer, seeds, run.store, ref.store if ref else None, setup.dataset, prepared, Path(cfg.paths.cache_dir),
        int(cfg.batch_size),
    )  # fmt: skip
    if not trainer.is_global_zero:
        return None

    counted = sorted(set(run.nfe_per_batch))
    if len(counted) > 1 or (counted and counted[0] != setup.plan.nfe):
        raise RuntimeError(f"NFE accounting broken: planned {setup.plan.nfe}, counted {counted}")
    metrics = {
        **evaluation,
        "nfe": counted[0] if counted else setup.plan.nfe,
        "num_steps": setup.plan.num_steps,
        "afs": setup.plan.afs,
        "solver": setup.spec.name,
        "schedule": cfg.schedule.name,
        "dataset": setup.dataset.name,
        "model": cfg.model.name,
        "num_samples": len(seeds),
        "sigmas": setup.sigmas.tolist(),
        "sampling_seconds": run.solver_seconds,
        "world_size": trainer.world_size,
    }
    write_outputs(run_dir, cfg, setup, run.store.load(seeds[: int(cfg.eval.grid_size)]), metrics, search_record)
    log_run(cfg, metrics, {"samples": run_dir / "samples.png"})
    return metrics


def write_outputs(run_dir: Path, cfg, setup: SamplingSetup, samples: torch.Tensor, metrics: dict, search=None):
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
    save_image_grid(samples, run_dir / "samples.png")
    atomic_save_json(run_dir / "metrics.json", metrics)
    shown = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items() if k != "sigmas"}
    info(f"metrics: {shown}")
