"""The frozen plans of the tasks that do not sample a schedule: `task=train`, `task=train_features` and
`task=analyze`. As `build_plan` does for sampling, each checks the whole config first, then resolves it into plain,
immutable values; the task reads its plan and never the config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from fewstep.app.config.build import build_dataset, container, resolved_config
from fewstep.app.config.checks import check_common
from fewstep.app.config.plan import LoadedModel, Outputs, load_model, outputs_of
from fewstep.data import ImageDataset
from fewstep.errors import FewstepError
from fewstep.solvers import SolverSpec, get_solver


@dataclass(frozen=True)
class TrainSettings:
    """`task=train`'s options, typed."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    p_mean: float  # ln(sigma) ~ N(p_mean, p_std^2) (EDM)
    p_std: float
    objective: str  # edm | flow
    logit_mean: float  # flow: t = sigmoid(N(logit_mean, logit_std^2)) (SD3)
    logit_std: float
    ema_halflife_images: float
    ema_rampup: float | None
    checkpoint_every: int
    log_every: int
    resume: bool
    seed: int
    install: bool
    init_from: str | None


@dataclass(frozen=True, eq=False)
class TrainPlan:
    dataset: ImageDataset
    network: dict  # the U-Net's config, written into its checkpoint
    settings: TrainSettings
    task_config: dict  # the task's options as given, for the training log
    trainer_config: dict  # Lightning's Trainer (with its _target_)
    command: str  # the command line that made the run, for the training log
    config: dict  # the resolved config (config.json)
    outputs: Outputs


def network_config(task: DictConfig, dataset: ImageDataset) -> dict:
    flow = {"objective": "flow"} if task.get("objective", "edm") == "flow" else {}  # EDM configs stay as they were
    return {
        **flow,
        "in_channels": dataset.shape[0],
        "channels": list(task.channels),
        "emb_dim": int(task.emb_dim),
        "groups": int(task.groups),
        "sigma_data": float(task.sigma_data),
        "sigma_range": [float(task.sigma_min), float(task.sigma_max)],
        "image_shape": list(dataset.shape),
        "dataset": dataset.fingerprint(),
    }


def build_train_plan(cfg: DictConfig) -> TrainPlan:
    check_common(cfg)
    task = cfg.task
    if int(task.steps) < 1 or int(task.batch_size) < 1:
        raise FewstepError(f"task.steps and task.batch_size must be positive, got {task.steps} and {task.batch_size}")
    dataset = build_dataset(cfg)
    if len(dataset.images) < 2:
        raise FewstepError(f"dataset {dataset.name!r} has no images to train on")
    rampup = task.ema_rampup
    objective = str(task.get("objective", "edm"))
    if objective not in ("edm", "flow"):
        raise FewstepError(f"task.objective must be edm or flow (a rectified flow, as SD3), got {objective!r}")
    settings = TrainSettings(
        steps=int(task.steps), batch_size=int(task.batch_size), lr=float(task.lr), warmup_steps=int(task.warmup_steps),
        p_mean=float(task.p_mean), p_std=float(task.p_std), objective=objective,
        logit_mean=float(task.get("logit_mean", 0.0)), logit_std=float(task.get("logit_std", 1.0)),
        ema_halflife_images=float(task.ema_halflife_images),
        ema_rampup=None if rampup is None else float(rampup), checkpoint_every=int(task.checkpoint_every),
        log_every=int(task.log_every), resume=bool(task.resume), seed=int(task.seed), install=bool(task.install),
        init_from=task.get("init_from"),
    )  # fmt: skip
    return TrainPlan(dataset, network_config(task, dataset), settings, container(task), container(cfg.trainer),
                     " ".join(["python run.py", *(_overrides() or ["task=train"])]), resolved_config(cfg),
                     outputs_of(cfg))  # fmt: skip


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


@dataclass(frozen=True, eq=False)
class FeaturesPlan:
    dataset: ImageDataset
    options: dict  # train_lenet's epochs, batch_size, lr, seed
    install: bool
    outputs: Outputs


def build_features_plan(cfg: DictConfig) -> FeaturesPlan:
    check_common(cfg)
    dataset = build_dataset(cfg)
    if dataset.labels is None:
        raise FewstepError(f"dataset {dataset.name!r} has no labels; LeNet features need a labelled dataset")
    options = {k: cfg.task[k] for k in ("epochs", "batch_size", "lr", "seed")}
    return FeaturesPlan(dataset, options, bool(cfg.task.install), outputs_of(cfg))


@dataclass(frozen=True, eq=False)
class AnalyzePlan:
    model: LoadedModel
    model_name: str  # the model config's name (kde, unet_mnist5k, ...)
    solver: SolverSpec
    sigmas: torch.Tensor  # the fine polynomial grid the trajectories are recorded on
    seeds: tuple[int, ...]
    batch_size: int
    optimal: Any  # the data's optimal (KDE) denoiser, for the score deviation; None where it does not apply
    trainer_config: dict  # Lightning's Trainer (with its _target_)
    outputs: Outputs


def build_analyze_plan(cfg: DictConfig) -> AnalyzePlan:
    from fewstep.models import KDEDenoiser
    from fewstep.schedules import polynomial

    check_common(cfg)
    task = cfg.task
    spec = get_solver(task.solver)
    if spec.stochastic:
        raise FewstepError(f"task.solver={spec.name} is stochastic; trajectory geometry is that of the ODE: "
                           "use heun, euler, dpmpp, ...")  # fmt: skip
    sigmas = polynomial(int(task.num_steps), float(cfg.model.sigma_min), float(cfg.model.sigma_max), rho=task.rho)
    model = load_model(cfg)
    dataset, denoiser = model.dataset, model.denoiser
    # the optimal denoiser of the data, for the score deviation (where the model samples in the data's space)
    optimal = None
    if not isinstance(denoiser, KDEDenoiser) and len(dataset.images) and dataset.shape == model.shape:
        optimal = KDEDenoiser(dataset.images)
    seeds = tuple(range(int(cfg.seed), int(cfg.seed) + int(task.num_samples)))
    return AnalyzePlan(model, str(cfg.model.name), spec, sigmas, seeds, int(cfg.batch_size), optimal,
                       container(cfg.trainer), outputs_of(cfg))  # fmt: skip
