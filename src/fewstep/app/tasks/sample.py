"""`task=sample`: sample with the chosen solver and schedule (and, on the same seeds, a hand-crafted baseline),
then measure truncation error, FID/KID with their spread, and the distance to the reference solution."""

from __future__ import annotations

import math
import time

from omegaconf import DictConfig

from fewstep.app.config.plan import RunPlan, build_plan
from fewstep.app.loggers import log_run
from fewstep.app.outputs import link_samples, save_npz, write_config, write_results, write_schedule
from fewstep.app.runner import LightningRunner
from fewstep.app.shards import ShardStore
from fewstep.errors import NonFiniteError
from fewstep.utils.logging import info


def sample(cfg: DictConfig) -> dict | None:
    started = time.perf_counter()
    runner = LightningRunner(cfg.trainer)
    plan = build_plan(cfg, runner)
    trainer = runner.trainer
    info(f"{plan.steps.describe()}; sigmas: {[round(s, 4) for s in plan.sampler.sigmas.tolist()]}")

    from fewstep.app.lightning_modules import SamplingModule, total_seconds
    from fewstep.metrics.evaluation import Ranks, evaluate

    def module(sampler, store_dir, description):
        store = ShardStore(store_dir, plan.stored_shape)
        return SamplingModule(plan.denoiser, sampler, plan.shape, list(plan.seeds), store, plan.batch_size,
                              description, plan.decodes)  # fmt: skip

    label = f"{plan.sampler.name} on {plan.schedule}, {len(plan.seeds)} samples"
    runs = {"": module(plan.sampler, plan.store_dir, f"sampling: {label}")}
    if plan.baseline is not None:  # every job of a sweep with the same model, solver and NFE shares it
        label = f"baseline: {plan.sampler.name} on {plan.baseline.label}, {len(plan.seeds)} samples"
        runs["baseline_"] = module(plan.baseline.sampler, plan.baseline.store_dir, label)
    for other in plan.searched:  # another search's schedule, on the same seeds
        label = f"{other.label}: {plan.sampler.name} on its schedule, {len(plan.seeds)} samples"
        runs[f"{other.label}_"] = module(other.sampler, other.store_dir, label)
    if trainer.is_global_zero:
        link_samples(plan.outputs.run_dir, plan.store_dir)
    for run in runs.values():
        trainer.predict(run, return_predictions=False)
    reference = None
    if plan.reference is not None:
        reference = module(plan.reference.sampler, plan.reference.store_dir, plan.reference.label)
        trainer.predict(reference, return_predictions=False)
    sampling_seconds = total_seconds(trainer, runs[""])
    trainer.strategy.barrier()  # every shard is written before any rank reads
    ranks = Ranks(trainer.global_rank, trainer.world_size, trainer.strategy.root_device)
    evaluation = evaluate(ranks, list(plan.seeds), {prefix: run.store for prefix, run in runs.items()},
                          reference.store if reference else None, plan.dataset, plan.features, plan.outputs.cache_dir,
                          plan.batch_size, plan.eval)  # fmt: skip
    if not trainer.is_global_zero:
        return None
    for run in runs.values():
        counted = sorted(set(run.nfe_per_batch))
        if len(counted) > 1 or (counted and counted[0] != plan.steps.nfe):
            raise RuntimeError(f"NFE accounting broken: planned {plan.steps.nfe}, counted {counted}")
    metrics = run_metrics(plan, evaluation, sampling_seconds, trainer.world_size)
    write_run(plan, runs, metrics)
    images = {"samples": plan.outputs.run_dir / "samples.png"}
    for record in [plan.search, *(other.search for other in plan.searched)]:
        if record:
            images[record["method"]] = plan.outputs.run_dir / f"{record['method']}.png"
    log_run(plan.outputs, metrics, images)
    from fewstep.app.reporting import run_table

    print(run_table(metrics), flush=True)
    info(f"wall time {time.perf_counter() - started:.1f} s")
    return metrics


def run_metrics(plan: RunPlan, evaluation: dict, sampling_seconds: float, world_size: int) -> dict:
    """metrics.json: the evaluation and what was run. A non-finite figure is an error: nothing is written."""
    seeds = plan.seeds
    not_finite = sorted(k for k, v in evaluation.items() if isinstance(v, float) and not math.isfinite(v)
                        and not k.endswith("_std"))  # fmt: skip
    if not_finite:  # a NaN must never reach metrics.json, a table or a logger
        raise NonFiniteError(f"evaluation: non-finite {', '.join(not_finite)} for seeds {seeds[0]}..{seeds[-1]}; the "
                             "samples are finite, so the statistics are degenerate (too few samples for the feature "
                             "dimension?) or eval.reference_stats is broken")  # fmt: skip
    metrics = {
        **evaluation,
        "nfe": plan.steps.nfe,
        "num_steps": plan.steps.num_steps,
        "afs": plan.steps.afs,
        "solver": plan.sampler.name,
        "schedule": plan.schedule,
        "dataset": plan.dataset.name,
        "model": plan.model_name,
        "num_samples": len(seeds),
        "seed": seeds[0],
        "sigmas": plan.sampler.sigmas.tolist(),
        "sampling_seconds": sampling_seconds,
        "world_size": world_size,
    }
    if plan.baseline is not None:
        metrics["baseline_schedule"] = plan.baseline.label
        metrics["baseline_sigmas"] = plan.baseline.sampler.sigmas.tolist()
    if plan.searched:
        metrics["also_searched"] = [other.label for other in plan.searched]
        for other in plan.searched:
            metrics[f"{other.label}_sigmas"] = other.sampler.sigmas.tolist()
    if plan.reference is not None:
        metrics["reference"] = plan.reference.label
    return metrics


def write_run(plan: RunPlan, runs: dict, metrics: dict) -> None:
    from fewstep.app.reporting import panel_title

    run_dir = plan.outputs.run_dir
    shown = list(plan.seeds[: plan.grid_size])
    grids = {panel_title(metrics, plan.schedule, ""): runs[""].store.load(shown)}
    for other in plan.searched:
        grids[panel_title(metrics, other.label, f"{other.label}_")] = runs[f"{other.label}_"].store.load(shown)
    if plan.baseline is not None:  # the baseline's panel above the run's: same seeds, compared by eye
        grids = {panel_title(metrics, f"{plan.baseline.label} (baseline)", "baseline_"):
                 runs["baseline_"].store.load(shown), **grids}  # fmt: skip
    write_config(run_dir, plan.outputs.config)
    write_schedule(run_dir, schedule_record(plan), plan.search, plan.denoiser,
                   [other.search for other in plan.searched])  # fmt: skip
    write_results(run_dir, grids, metrics)
    if plan.eval.save_npz:
        from fewstep.metrics.quantize import quantize

        save_npz(run_dir / "samples.npz", quantize(runs[""].store.load(list(plan.seeds))))


def schedule_record(plan: RunPlan) -> dict:
    steps = plan.steps
    return {"solver": plan.sampler.name, "schedule": plan.schedule_config, "sigmas": plan.sampler.sigmas.tolist(),
            "num_steps": steps.num_steps, "nfe": steps.nfe, "afs": steps.afs, "denoise_to_zero": steps.denoise_to_zero,
            "plan": steps.describe()}  # fmt: skip
