"""Config nodes into plain objects: the dataset, the denoiser, the solver's step plan and hand-crafted sigmas, the
evaluation settings and the model's identity. `config.plan.build_plan` assembles them into the run's plan."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fewstep.data import ImageDataset
from fewstep.errors import FewstepError
from fewstep.metrics.settings import EvalSettings
from fewstep.models.denoiser import Traits, inside_range, weights_fingerprint
from fewstep.schedules import make_schedule, validate_sigmas
from fewstep.schedules.registry import is_search
from fewstep.schedules.searches import check_search
from fewstep.solvers import SolverSpec, StepPlan, get_solver, plan_for_schedule, plan_steps

SOLVER_KEYS = {"name", "afs", "afs_prior"}


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


def sample_shape(declared: Traits, dataset: ImageDataset, model_name: str, dataset_choice: str) -> tuple[int, ...]:
    """What the solver integrates. A network declares the `image_shape` it makes (checked against the dataset's,
    unless the dataset declares none) and a latent model also its `sample_shape`; closed-form models sample in
    the dataset's shape."""
    image_shape = declared.image_shape
    if image_shape is not None and dataset.shape and image_shape != dataset.shape:
        raise FewstepError(
            f"model={model_name} makes {'x'.join(map(str, image_shape))} images but dataset={dataset_choice} has "
            f"{'x'.join(map(str, dataset.shape))}; choose the dataset the model was trained on (or dataset=none)"
        )
    if declared.sample_shape is not None:
        return declared.sample_shape
    if image_shape is None and not dataset.shape:
        raise FewstepError(f"dataset={dataset_choice} gives no image shape and model={model_name} declares none")
    return image_shape or dataset.shape


def stored_shape(declared: Traits, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """A sample's shape in its shard: the solver's shape, or the decoded image's for a latent model."""
    return declared.image_shape if declared.decodes else shape


def check_sigma_range(declared: Traits, sigma_min: float, sigma_max: float, model_name: str) -> None:
    """A network only knows the noise levels it was trained on (`sigma_range`); the config must stay inside."""
    if declared.sigma_range is None:
        return
    low, high = declared.sigma_range
    if not inside_range(sigma_min, sigma_max, (low, high)):
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
    if is_search(schedule["name"]):  # searched later, with the model (see config.plan.build_plan)
        check_search(schedule["name"], options, spec, plan)  # bad options and impossible steps fail before any work
        return None, plan
    from fewstep.schedules import SCHEDULES
    from fewstep.utils.options import options_like, signature_defaults

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
        launcher = HydraConfig.get().launcher
        ranks_made_by_launcher = "submitit" in str(launcher.get("_target_", "")) and (
            int(launcher.get("tasks_per_node") or 1) * int(launcher.get("nodes") or 1) > 1)  # fmt: skip
        if not ranks_made_by_launcher:
            raise FewstepError(
                "trainer=ddp inside a multirun (-m) needs a launcher that starts the ranks itself (hydra/launcher="
                "slurm, tasks_per_node = trainer.devices): Lightning's own launcher would re-run the whole sweep in "
                "every process; or sweep single-process jobs"
            )


def eval_settings(eval_cfg: DictConfig) -> EvalSettings:
    """`eval` as plain values, checked before anything is loaded."""
    from fewstep.utils.options import like

    def count(key: str, low: int) -> int:
        value = eval_cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise FewstepError(f"eval.{key} must be an integer >= {low}, got {value!r}")
        return value

    save_npz = eval_cfg.get("save_npz", False)
    if not isinstance(save_npz, bool):
        raise FewstepError(f"eval.save_npz must be true or false, got {save_npz!r}")
    features = eval_cfg.features
    if eval_cfg.get("reference_stats"):
        from fewstep.metrics.settings import check_statistics_file  # a missing or damaged file fails now

        check_statistics_file(eval_cfg.reference_stats)
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


def model_identity(model: dict, dataset: ImageDataset, denoiser, trainer: dict) -> dict:
    """What caches of model outputs are keyed by: data, model (its config and, for a network, its weights), and
    the numerics that change the outputs."""
    from fewstep.models.denoiser import ROW_BLOCK

    weights = weights_fingerprint(denoiser)
    return {
        "dataset": dataset.fingerprint(),
        "model": model,
        "weights": weights,
        **({"row_block": ROW_BLOCK} if weights is not None else {}),  # how a network is evaluated (bind_seeds)
        "precision": str(trainer.get("precision")),
        "accelerator": str(trainer.get("accelerator")),
    }


def stand_in_sigmas(plan: StepPlan, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """A schedule with the plan's step count, for the solver's dry run before GITS has searched the real one."""
    positive = plan.num_steps - int(plan.denoise_to_zero)
    sigmas = make_schedule("polynomial", max(positive, 1), sigma_min, sigma_max)
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if plan.denoise_to_zero else sigmas


def afs_data(dataset: ImageDataset, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The data whose moments the Gaussian AFS prior uses, when the model samples in the data's own space
    (otherwise, e.g. in a latent space, the prior is N(0, 0.5^2): EDM's sigma_data)."""
    if len(dataset.images) and dataset.shape == shape:
        return dataset.images
    return None
