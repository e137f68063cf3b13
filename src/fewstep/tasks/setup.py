"""Turn a composed config into plain objects: dataset, denoiser, solver, step plan and sigmas.

Nothing downstream of this module reads the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fewstep.data import ImageDataset
from fewstep.errors import FewstepError
from fewstep.metrics.settings import EvalSettings
from fewstep.schedules import make_schedule, validate_sigmas
from fewstep.solvers import (
    SolverSpec,
    StepPlan,
    check_options,
    get_solver,
    make_afs_prior,
    plan_for_schedule,
    plan_steps,
)

_SOLVER_KEYS = {"name", "afs", "afs_prior"}


@dataclass
class SamplingSetup:
    dataset: ImageDataset
    denoiser: Any
    model_identity: dict
    spec: SolverSpec
    solver_options: dict
    plan: StepPlan
    sigmas: torch.Tensor | None  # None until the GITS search has run
    afs_prior: Any
    shape: tuple[int, ...]  # what the solver integrates: the image shape, or a latent model's latent shape


def container(node: DictConfig | dict) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def resolved_config(cfg: DictConfig) -> dict:
    """The run's config, resolved, without Hydra's own node (present when composed with the hydra config)."""
    return {k: container(v) if isinstance(v, DictConfig) else v for k, v in cfg.items() if k != "hydra"}


def instantiate_checked(node, **kwargs):
    """hydra's instantiate, with our own errors (bad checkpoint, missing opt-in, ...) passed through unwrapped."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, FewstepError):
            raise err.__cause__ from None
        raise


def build_dataset(cfg: DictConfig) -> ImageDataset:
    return instantiate_checked(cfg.dataset)


def build_denoiser(cfg: DictConfig, dataset: ImageDataset):
    """The model's denoiser. Factories with a `data` parameter (closed-form models) receive the dataset's images."""
    import inspect

    from hydra.utils import get_object

    target = get_object(cfg.model.denoiser._target_)
    if "data" not in inspect.signature(target).parameters:
        return instantiate_checked(cfg.model.denoiser)
    if not len(dataset.images):
        raise FewstepError(f"model={choice(cfg, 'model')} is built from the data, but dataset="
                           f"{choice(cfg, 'dataset')} has no images")  # fmt: skip
    return instantiate_checked(cfg.model.denoiser, data=dataset.images)


def choice(cfg: DictConfig, group: str) -> str:
    """The option of a config group as the user picks it (`model=unet_mnist5k`): what a hint must name."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        picked = HydraConfig.get().runtime.choices.get(group)
        if picked:
            return str(picked)
    node = cfg.get(group)
    return str(node.get("name", "?")) if isinstance(node, DictConfig) else "?"


def sample_shape(denoiser, dataset: ImageDataset, model_name: str, dataset_choice: str) -> tuple[int, ...]:
    """What the solver integrates. A network declares the `image_shape` it makes (checked against the dataset's,
    unless the dataset declares none) and a latent model also its `sample_shape`; closed-form models sample in
    the dataset's shape."""
    image_shape = getattr(denoiser, "image_shape", None)
    if image_shape is not None:
        image_shape = tuple(int(d) for d in image_shape)
        if dataset.shape and image_shape != dataset.shape:
            raise FewstepError(
                f"model={model_name} makes {'x'.join(map(str, image_shape))} images but dataset={dataset_choice} has "
                f"{'x'.join(map(str, dataset.shape))}; choose the dataset the model was trained on (or dataset=none)"
            )
    declared = getattr(denoiser, "sample_shape", None)
    if declared is not None:
        return tuple(int(d) for d in declared)
    if image_shape is None and not dataset.shape:
        raise FewstepError(f"dataset={dataset_choice} gives no image shape and model={model_name} declares none")
    return image_shape or dataset.shape


def check_sigma_range(denoiser, sigma_min: float, sigma_max: float, model_name: str) -> None:
    """A network only knows the noise levels it was trained on (`sigma_range`); the config must stay inside."""
    trained = getattr(denoiser, "sigma_range", None)
    if trained is None:
        return
    low, high = (float(v) for v in trained)
    tolerance = 1e-4
    if sigma_min < low * (1 - tolerance) or sigma_max > high * (1 + tolerance):
        raise FewstepError(
            f"model={model_name} was trained for sigma in [{low:.6g}, {high:.6g}], but model.sigma_min={sigma_min:g} "
            f"and model.sigma_max={sigma_max:g}; set them inside that range (e.g. model.sigma_min={low:.6g} "
            f"model.sigma_max={high:.6g})"
        )


def build_sigmas(
    schedule: dict, spec: SolverSpec, nfe: int, afs, denoise_to_zero: bool, sigma_min: float, sigma_max: float
) -> tuple[torch.Tensor | None, StepPlan]:
    options = {k: v for k, v in schedule.items() if k != "name"}
    if schedule["name"] == "explicit":
        sigmas = validate_sigmas(options.get("sigmas") or [], sigma_min, sigma_max)
        if denoise_to_zero and sigmas[-1] != 0:
            raise FewstepError("with schedule=explicit the list decides the last step: end it with 0 instead of "
                               "setting denoise_to_zero=true")  # fmt: skip
        plan = plan_for_schedule(spec, len(sigmas), afs, bool(sigmas[-1] == 0), nfe)
        if plan.nfe != nfe:
            raise FewstepError(
                f"the explicit schedule has {len(sigmas)} sigmas = {plan.num_steps} steps, which costs "
                f"{spec.name} {plan.nfe} NFE, but nfe={nfe}; set nfe={plan.nfe} or change the list"
            )
        return sigmas, plan
    plan = plan_steps(spec, nfe, afs, denoise_to_zero)
    if schedule["name"] == "gits":  # searched later, with the model (see fewstep.tasks.search)
        from fewstep.tasks.search import gits_settings

        settings = gits_settings(schedule)  # reject bad options and impossible step counts before any work
        steps = plan.num_steps - int(denoise_to_zero) - int(bool(settings["afs_insert"]) and plan.afs)
        if not 1 <= steps <= int(settings["grid_size"]) - 1:
            raise FewstepError(
                f"nfe={nfe} needs {plan.num_steps - int(denoise_to_zero)} steps from sigma_max to sigma_min, which a "
                f"GITS grid of {settings['grid_size']} points cannot provide; change nfe or schedule.grid_size"
            )
        return None, plan
    from fewstep.schedules import SCHEDULES
    from fewstep.tasks.checks import options_like, signature_defaults

    if schedule["name"] in SCHEDULES:
        options = options_like("schedule", options, signature_defaults(SCHEDULES[schedule["name"]]))
    positive_steps = plan.num_steps - int(denoise_to_zero)
    if positive_steps == 0:
        sigmas = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        sigmas = make_schedule(schedule["name"], positive_steps, sigma_min, sigma_max, **options)
    if denoise_to_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas, plan


def resolve_schedule(setup: SamplingSetup, cfg: DictConfig, trainer) -> dict | None:
    """Fill in `setup.sigmas` for a searched schedule (GITS); returns the search record, if any."""
    if setup.sigmas is not None:
        return None
    from fewstep.tasks.search import search_schedule

    sigma_range = (float(cfg.model.sigma_min), float(cfg.model.sigma_max))
    setup.sigmas, record = search_schedule(
        trainer, setup, container(cfg.schedule), setup.plan, sigma_range, cfg.paths.cache_dir, int(cfg.batch_size)
    )
    return record


def check_run(cfg: DictConfig) -> None:
    """Settings that would otherwise fail late or hang: checked before anything is loaded."""
    for role, name in (("eval.reference.solver", cfg.eval.reference.solver),
                       ("schedule.teacher", cfg.schedule.get("teacher"))):  # fmt: skip
        if name is not None and get_solver(name).stochastic:
            raise FewstepError(f"{role}={name} is stochastic; a reference or teacher trajectory must be an ODE "
                               "solution: use heun, ipndm, dpmpp, ...")  # fmt: skip
    strategy = cfg.trainer.get("strategy")
    is_ddp = "ddp" in str(strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy).lower()
    from hydra.core.hydra_config import HydraConfig

    if is_ddp and HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN":
        raise FewstepError("trainer=ddp inside a multirun (-m) is not supported: Lightning's launcher would re-run "
                           "the whole sweep in every process; sweep single-process jobs, or launch each job "
                           "with torchrun/SLURM")  # fmt: skip


def eval_settings(eval_cfg: DictConfig) -> EvalSettings:
    """`eval` as plain values, checked before anything is loaded."""
    from fewstep.tasks.checks import like

    def count(key: str, low: int) -> int:
        value = eval_cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise FewstepError(f"eval.{key} must be an integer >= {low}, got {value!r}")
        return value

    save_npz = eval_cfg.get("save_npz", False)
    if not isinstance(save_npz, bool):
        raise FewstepError(f"eval.save_npz must be true or false, got {save_npz!r}")
    features = eval_cfg.features
    return EvalSettings(
        features=str(features.name),
        features_path=features.get("path"),
        features_allow_code=like("eval.features.allow_code", features.get("allow_code", False), False),
        reference_stats=eval_cfg.get("reference_stats"),
        bootstrap=count("bootstrap", 0),
        kid_subsets=count("kid_subsets", 1),
        kid_subset_size=count("kid_subset_size", 2),
        save_npz=save_npz,
    )


def model_identity(cfg: DictConfig, dataset: ImageDataset, denoiser=None) -> dict:
    """What caches of model outputs are keyed by: data, model (its config and, for a network, its weights), and
    the numerics that change the outputs."""
    from fewstep.models.denoiser import ROW_BLOCK

    weights = weights_fingerprint(denoiser)
    return {
        "dataset": dataset.fingerprint(),
        "model": container(cfg.model),
        "weights": weights,
        **({"row_block": ROW_BLOCK} if weights is not None else {}),  # how a network is evaluated (bind_seeds)
        "precision": str(cfg.trainer.get("precision")),
        "accelerator": str(cfg.trainer.get("accelerator")),
    }


def weights_fingerprint(denoiser) -> str | None:
    """A hash of a network's parameters: a retrained checkpoint at the same path never reuses stale caches.
    Closed-form denoisers are identified by the dataset already."""
    from fewstep.models import GaussianDenoiser, KDEDenoiser
    from fewstep.utils.storage import tensor_fingerprint

    if not isinstance(denoiser, torch.nn.Module) or isinstance(denoiser, KDEDenoiser | GaussianDenoiser):
        return None
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in denoiser.state_dict().items():
        digest.update(f"{name}:{tensor_fingerprint(tensor)}".encode())
    # what a wrapper adds to the weights: a discrete model's sigma table and output parametrisation
    for attribute in ("prediction_type", "timestep", "sigma_range", "guidance_scale", "image_shape", "sample_shape"):
        digest.update(f"{attribute}={getattr(denoiser, attribute, None)!r}".encode())
    log_sigmas = getattr(denoiser, "_log_sigmas", None)
    if isinstance(log_sigmas, dict) and log_sigmas:
        digest.update(tensor_fingerprint(next(iter(log_sigmas.values()))).encode())
    return digest.hexdigest()[:16]


def build_setup(cfg: DictConfig) -> SamplingSetup:
    from fewstep.tasks.checks import check_common, check_nfe, dry_run, options_like, signature_defaults

    check_common(cfg)
    check_run(cfg)
    spec = get_solver(cfg.solver.name)
    solver_cfg = container(cfg.solver)
    options = check_options(spec, {k: v for k, v in solver_cfg.items() if k not in _SOLVER_KEYS})
    options = options_like("solver", options, signature_defaults(spec.fn))
    # an option given as {_target_: ..., _partial_: true} is a user callable (e.g. an ER-SDE noise scale phi)
    options = {k: instantiate(v) if isinstance(v, dict) and "_target_" in v else v for k, v in options.items()}
    sigmas, plan = build_sigmas(
        container(cfg.schedule),
        spec,
        check_nfe(cfg),
        solver_cfg.get("afs", "auto"),
        cfg.denoise_to_zero,
        float(cfg.model.sigma_min),
        float(cfg.model.sigma_max),
    )
    dry_run(spec, options, sigmas if sigmas is not None else _stand_in_sigmas(plan, cfg))
    dataset = build_dataset(cfg)
    denoiser = build_denoiser(cfg, dataset)
    model_choice = choice(cfg, "model")
    check_sigma_range(denoiser, float(cfg.model.sigma_min), float(cfg.model.sigma_max), model_choice)
    shape = sample_shape(denoiser, dataset, model_choice, choice(cfg, "dataset"))
    afs_prior = None
    if plan.afs:
        afs_prior = make_afs_prior(solver_cfg.get("afs_prior", "gaussian"), afs_data(dataset, shape))
    identity = model_identity(cfg, dataset, denoiser)
    return SamplingSetup(dataset, denoiser, identity, spec, options, plan, sigmas, afs_prior, shape)


def _stand_in_sigmas(plan: StepPlan, cfg: DictConfig) -> torch.Tensor:
    """A schedule with the plan's step count, for the solver's dry run before GITS has searched the real one."""
    positive = plan.num_steps - int(plan.denoise_to_zero)
    sigmas = make_schedule("polynomial", max(positive, 1), float(cfg.model.sigma_min), float(cfg.model.sigma_max))
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if plan.denoise_to_zero else sigmas


def afs_data(dataset: ImageDataset, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The data whose moments the Gaussian AFS prior uses, when the model samples in the data's own space
    (otherwise, e.g. in a latent space, the prior is N(0, 0.5^2): EDM's sigma_data)."""
    if len(dataset.images) and dataset.shape == shape:
        return dataset.images
    return None
