"""`task=train`: train a small EDM-preconditioned U-Net on an embedded dataset with Lightning.

python run.py task=train dataset=digits task.steps=300           # writes unet_digits.pt + unet_digits.json
python run.py task=train dataset=mnist5k task.install=true        # also replaces the shipped unet_mnist5k.pt
python run.py task=train trainer=ddp trainer.devices=2            # data-parallel (gloo on CPU)
python run.py task=train dataset=mnist5k task.objective=flow task.sigma_max=999 task.install=true  # flow_mnist5k.pt

The checkpoint holds the EMA weights and the network's config; it loads with torch.load(weights_only=True)
through `model=unet` (`model.denoiser.path=...`). An interrupted run continues from
`checkpoints/last.ckpt` with `task.resume=true` and the same `hydra.run.dir`. `task.init_from=unet_mnist5k.pt` (a
shipped name or a task=train .pt) continues training a finished model: its EMA weights start both the trained and
the EMA network (a fresh optimizer), and the new log keeps the old one under `previous`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from fewstep.app.config.task_plans import build_train_plan
from fewstep.app.loggers import build_loggers, finish_logger
from fewstep.errors import FewstepError
from fewstep.models.training import init_from
from fewstep.models.unet import WEIGHTS_DIR, build_unet, checkpoint
from fewstep.utils.logging import info
from fewstep.utils.storage import atomic_save_json, atomic_torch_save

EVAL_IMAGES = 1024  # images in the fixed-noise evaluation loss (same noise before and after training)


def fixed_noise_loss(model, images: torch.Tensor, settings) -> float:
    """The EDM loss on the first EVAL_IMAGES images with noise from a fixed seed: comparable across models.
    (The U-Net has no dropout or batch norm, so train and eval modes compute the same function.)"""
    from fewstep.models.training import training_loss

    generator = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        batch = images[:EVAL_IMAGES].to(next(model.parameters()).device)
        return training_loss(model, batch, settings.objective, settings.p_mean, settings.p_std, settings.logit_mean,
                             settings.logit_std, generator).item()  # fmt: skip


def train(cfg) -> dict | None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from fewstep.app.lightning_modules import DiffusionTraining

    plan = build_train_plan(cfg)
    dataset, config, settings = plan.dataset, plan.network, plan.settings
    run_dir = plan.outputs.run_dir
    L.seed_everything(settings.seed, verbose=False)
    module = DiffusionTraining(
        build_unet(config), settings.lr, settings.warmup_steps, settings.p_mean, settings.p_std,
        settings.ema_halflife_images, settings.ema_rampup, settings.objective, settings.logit_mean, settings.logit_std,
    )  # fmt: skip
    module.network = config
    previous = init_from(module, settings.init_from, config)
    module.initial_loss = fixed_noise_loss(module.ema, dataset.images, settings)
    loader = DataLoader(
        TensorDataset(dataset.images),
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=len(dataset.images) > settings.batch_size,
        generator=torch.Generator().manual_seed(settings.seed),
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = settings.resume and last.is_file()
    if settings.resume and not resume:
        info(f"task.resume=true but {last} does not exist: training from scratch")
    if resume:
        check_resumable(last, config)
    loggers = [logger for _, logger in build_loggers(plan.outputs, {"dataset": dataset.name, "model": "unet"})]
    trainer = instantiate(
        plan.trainer_config,
        max_steps=settings.steps,
        max_epochs=-1,
        use_distributed_sampler=True,
        enable_checkpointing=True,
        callbacks=[
            ModelCheckpoint(
                dirpath=last.parent,
                save_last=True,
                save_top_k=0,
                enable_version_counter=False,  # a new run overwrites last.ckpt instead of writing last-v1.ckpt
                every_n_train_steps=settings.checkpoint_every,
            )
        ],  # fmt: skip
        logger=loggers or False,
        log_every_n_steps=settings.log_every,
    )
    start = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=str(last) if resume else None)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return None

    ema = module.ema.cpu()
    record = {
        "dataset": dataset.fingerprint(),
        "network": config,
        "parameters": sum(p.numel() for p in ema.parameters()),
        "task": plan.task_config,
        "trainer": {"world_size": trainer.world_size, "accelerator": str(plan.trainer_config.get("accelerator"))},
        "steps": int(trainer.global_step),
        "images_seen": module.images_seen,
        "seconds": seconds,
        "fixed_noise_loss_before": module.initial_loss,
        "fixed_noise_loss_after": fixed_noise_loss(ema, dataset.images, settings),
        "loss_every": settings.log_every,
        "loss_history": _averages(module.losses, settings.log_every),
        "resumed": resume,
        **({"init_from": previous} if previous else {}),
        "command": plan.command,
    }
    name = f"{'flow' if settings.objective == 'flow' else 'unet'}_{dataset.name}"
    weights = atomic_torch_save(run_dir / f"{name}.pt", checkpoint(ema, config, {"images_seen": module.images_seen}))
    atomic_save_json(run_dir / f"{name}.json", record)
    _save_samples(ema, dataset.shape, run_dir / "samples.png")
    for logger in loggers:
        logger.log_metrics({k: float(record[k]) for k in ("fixed_noise_loss_before", "fixed_noise_loss_after")})
        finish_logger(logger)
    if settings.install:
        for path in (weights, run_dir / f"{name}.json"):
            shutil.copy(path, WEIGHTS_DIR / path.name)
        info(f"installed as the shipped model in {WEIGHTS_DIR}")
    info(
        f"{settings.objective} U-Net on {dataset.name}: {record['steps']} steps in {seconds:.0f} s, fixed-noise loss "
        f"{module.initial_loss:.4f} -> {record['fixed_noise_loss_after']:.4f}; weights {weights}"
    )
    atomic_save_json(run_dir / "config.json", plan.config)
    return {k: record[k] for k in ("steps", "seconds", "fixed_noise_loss_before", "fixed_noise_loss_after")}


def check_resumable(last: Path, config: dict) -> None:
    """A resume continues the same network on the same data, or stops with an error saying why."""
    try:
        saved = torch.load(last, map_location="cpu", weights_only=True).get("fewstep", {}).get("network")
    except Exception as err:
        raise FewstepError(f"cannot resume from {last} ({type(err).__name__}: {err}); it is damaged: delete it "
                           "or train without task.resume") from err  # fmt: skip
    if saved != config:
        changed = sorted(k for k in {**(saved or {}), **config} if (saved or {}).get(k) != config.get(k))
        raise FewstepError(f"cannot resume from {last}: it was trained with other settings ({', '.join(changed)}); "
                           "use the same task/dataset options, another hydra.run.dir, or no task.resume")  # fmt: skip


def _averages(values: list[float], every: int) -> list[float]:
    return [sum(chunk) / len(chunk) for chunk in (values[i : i + every] for i in range(0, len(values), every))]


def _save_samples(model, shape, path: Path, num: int = 64) -> None:
    """A grid of samples from seeds 0..num-1 with Heun, 18 steps ending at 0 (35 NFE): how the model looks."""
    from fewstep.app.plots import save_image_grid
    from fewstep.data import seeded_noise
    from fewstep.models.flow import flow_denoiser
    from fewstep.models.unet import FlowVelocity
    from fewstep.schedules import polynomial
    from fewstep.solvers import Sampler, get_solver

    if isinstance(model, FlowVelocity):
        model = flow_denoiser(model, sigma_range=model.sigma_range)
    sigmas = torch.cat([polynomial(17, *model.sigma_range, rho=7.0), torch.zeros(1, dtype=torch.float64)])
    seeds = torch.arange(num)
    with torch.no_grad():
        save_image_grid(Sampler(get_solver("heun"), sigmas)(model, seeded_noise(seeds, shape), seeds), path)
