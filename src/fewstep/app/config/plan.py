"""The run's plan: a composed config checked as a whole, then resolved (the GITS search included) into one
immutable value of plain values. The tasks read the plan; nothing below it reads the config again.

    check (no loading) -> dataset, denoiser (declared traits checked) -> features -> runner -> schedule -> plan
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from fewstep.app.config.build import (
    SOLVER_KEYS,
    afs_data,
    build_dataset,
    build_denoiser,
    build_sigmas,
    check_run,
    check_sigma_range,
    choice,
    container,
    eval_settings,
    model_identity,
    resolved_config,
    sample_shape,
    stand_in_sigmas,
    stored_shape,
)
from fewstep.data import ImageDataset
from fewstep.errors import FewstepError
from fewstep.metrics.settings import EvalSettings
from fewstep.models.denoiser import Traits, traits
from fewstep.schedules.registry import is_search
from fewstep.schedules.search_cache import SearchCache
from fewstep.schedules.searches import SearchContext, find_schedule
from fewstep.solvers import Sampler, StepPlan, check_options, get_solver, make_afs_prior
from fewstep.utils.storage import content_key


@dataclass(frozen=True)
class Outputs:
    """Where a run writes and whom it tells: the run and cache folders, the resolved config (config.yaml, logger
    hyperparameters) and the loggers' configs as plain dicts."""

    run_dir: Path
    cache_dir: Path
    config: dict
    loggers: tuple[tuple[str, dict], ...]
    group: str | None  # the multirun sweep, for dashboards
    name: str


@dataclass(frozen=True, eq=False)
class Comparison:
    """Another sampler on the same seeds: the hand-crafted baseline, another search's schedule (`eval.also_search`),
    or the high-NFE reference solution."""

    label: str  # "polynomial", "oss" or "reference solution (ipndm_v, 100 steps)"
    sampler: Sampler
    store_dir: Path
    search: dict | None = None  # the search's record, for another search's schedule


@dataclass(frozen=True, eq=False)
class RunPlan:
    dataset: ImageDataset
    denoiser: Any  # D(x, sigma); its declared traits are checked
    model_name: str
    identity: dict  # what caches of the model's outputs are keyed by
    shape: tuple[int, ...]  # what the solver integrates (a latent model's latents)
    stored_shape: tuple[int, ...] | None  # a sample in its shard (decoded images for a latent model)
    decodes: bool
    steps: StepPlan
    schedule: str
    schedule_config: dict
    sampler: Sampler
    search: dict | None  # the search's record (its "method" names it), if the schedule was searched
    seeds: tuple[int, ...]
    batch_size: int
    store_dir: Path  # the run's samples, cached by everything that changes them (resumable)
    baseline: Comparison | None
    searched: tuple[Comparison, ...]  # other searches' schedules (`eval.also_search`), by their method's name
    reference: Comparison | None
    eval: EvalSettings | None
    features: Any  # metrics.evaluation.Prepared: the feature network and published statistics
    grid_size: int  # images per panel of samples.png
    outputs: Outputs


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """The data and the denoiser, with what the denoiser declares checked against the config."""

    dataset: ImageDataset
    denoiser: Any
    name: str  # the model option as the user picked it (model=unet_mnist5k), for messages
    traits: Traits
    shape: tuple[int, ...]
    identity: dict


def load_model(cfg: DictConfig) -> LoadedModel:
    dataset = build_dataset(cfg)
    denoiser = build_denoiser(cfg, dataset)
    declared = traits(denoiser)
    name = choice(cfg, "model")
    check_sigma_range(declared, float(cfg.model.sigma_min), float(cfg.model.sigma_max), name)
    shape = sample_shape(declared, dataset, name, choice(cfg, "dataset"))
    identity = model_identity(container(cfg.model), dataset, denoiser, container(cfg.trainer))
    return LoadedModel(dataset, denoiser, name, declared, shape, identity)


def outputs_of(cfg: DictConfig) -> Outputs:
    from hydra.core.hydra_config import HydraConfig

    group = Path(HydraConfig.get().sweep.dir).name if in_sweep() else None
    loggers = tuple((str(name), container(node)) for name, node in (cfg.get("logger") or {}).items()
                    if node and "_target_" in node)  # fmt: skip
    run_dir = Path(cfg.paths.output_dir)
    return Outputs(run_dir, Path(cfg.paths.cache_dir), resolved_config(cfg), loggers, group, run_dir.name)


def reference_sigmas(sigmas: torch.Tensor, num_steps: int, rho: float) -> torch.Tensor:
    """A fine polynomial schedule over the same interval as `sigmas` (ending at 0 if they do)."""
    from fewstep.schedules import polynomial

    ends_at_zero = bool(sigmas[-1] == 0)
    last_positive = float(sigmas[-2] if ends_at_zero else sigmas[-1])
    fine = polynomial(num_steps, last_positive, float(sigmas[0]), rho=rho)
    return torch.cat([fine, fine.new_zeros(1)]) if ends_at_zero else fine


def build_plan(cfg: DictConfig, runner=None, evaluate: bool = True) -> RunPlan:
    """The whole config checked first (no loading), then resolved. `runner` (a `fewstep.app.runner.LightningRunner`)
    runs the GITS warm-up across ranks and broadcasts the search; it is started only after the data, the model and
    the feature network have loaded, so that a config error never waits for Lightning. Without one, a search runs
    in this process (`LocalRunner`)."""
    from fewstep.app.config.checks import check_common, check_nfe
    from fewstep.solvers.registry import dry_run
    from fewstep.utils.options import options_like, signature_defaults

    # 1. checks, before anything loads
    check_common(cfg)
    check_run(cfg)
    spec = get_solver(cfg.solver.name)
    solver_cfg = container(cfg.solver)
    options = check_options(spec, {k: v for k, v in solver_cfg.items() if k not in SOLVER_KEYS})
    options = options_like("solver", options, signature_defaults(spec.fn))
    # an option given as {_target_: ..., _partial_: true} is a user callable (e.g. an ER-SDE noise scale phi)
    from hydra.utils import instantiate

    options = {k: instantiate(v) if isinstance(v, dict) and "_target_" in v else v for k, v in options.items()}
    sigma_min, sigma_max = float(cfg.model.sigma_min), float(cfg.model.sigma_max)
    schedule_cfg = container(cfg.schedule)
    sigmas, steps = build_sigmas(schedule_cfg, spec, check_nfe(cfg), solver_cfg.get("afs", "auto"),
                                 cfg.denoise_to_zero, sigma_min, sigma_max)  # fmt: skip
    planned = sigmas if sigmas is not None else stand_in_sigmas(steps, sigma_min, sigma_max)  # GITS: searched later
    dry_run(spec, options, planned)
    settings = eval_settings(cfg.eval) if evaluate else None
    baseline_name = baseline_schedule(cfg) if evaluate else None
    if baseline_name is not None:  # its options are checked here, before the model loads and a search runs
        base_options = container(cfg.eval.get("baseline_options") or {})
        try:
            base_sigmas, _ = build_sigmas({**base_options, "name": baseline_name}, spec, steps.nfe, steps.afs,
                                          steps.denoise_to_zero, sigma_min, sigma_max)  # fmt: skip
        except FewstepError as err:
            raise FewstepError(f"eval.baseline={baseline_name} with eval.baseline_options={base_options}: "
                               f"{err}") from None
    also_searched = also_searches(cfg, spec, steps) if evaluate else []

    # 2. data and model, their declared traits checked against the config
    model = load_model(cfg)
    dataset, denoiser, declared, shape = model.dataset, model.denoiser, model.traits, model.shape
    identity = model.identity
    afs_prior = None
    if steps.afs:
        afs_prior = make_afs_prior(solver_cfg.get("afs_prior", "gaussian"), afs_data(dataset, shape))
    sampler = Sampler(spec, planned, options, afs_prior)
    features = None
    if settings is not None:
        from fewstep.metrics.evaluation import prepare_features  # torchmetrics loads only now

        features = prepare_features(settings, dataset)  # bad feature/statistics settings fail before sampling

    # 3. the searched schedule (and the other searches compared with it), through the runner
    search = None
    batch_size = int(cfg.batch_size)
    if runner is None and (sigmas is None or also_searched):
        from fewstep.app.runner import LocalRunner

        runner = LocalRunner()

    def searched(name: str, options: dict):
        sampler_key = {"solver": solver_cfg, "afs_prior": type(afs_prior).__name__}  # what picks the AFS step
        context = SearchContext(
            sampler, denoiser, shape, sigma_min, sigma_max, steps, sampler_key,
            cache=SearchCache.for_search(cfg.paths.cache_dir, name, identity, shape),
            warmup=runner.warmup(denoiser, shape, batch_size), place=lambda: runner.place(denoiser),
            is_main=runner.is_main, broadcast=runner.broadcast,
        )  # fmt: skip
        return find_schedule(name, options, context)

    if sigmas is None:
        found = searched(schedule_cfg["name"], schedule_cfg)
        search, sigmas = found.record, found.sigmas
        sampler = sampler.with_sigmas(sigmas)
    others = {name: searched(name, {}) for name in also_searched}  # at the search's shipped defaults

    # 4. what is sampled, where it is stored, and what it is compared with
    cache_dir = Path(cfg.paths.cache_dir)
    searched_comparisons = tuple(
        Comparison(name, sampler.with_sigmas(found.sigmas),
                   samples_dir(cache_dir, identity, solver_cfg, found.sigmas, steps.afs), found.record)
        for name, found in others.items()
    )  # fmt: skip
    seeds = tuple(range(int(cfg.seed), int(cfg.seed) + int(cfg.num_samples)))
    baseline = reference = None
    if baseline_name is not None:
        label = baseline_name + (f"({', '.join(f'{k}={v}' for k, v in base_options.items())})" if base_options else "")
        baseline = Comparison(label, sampler.with_sigmas(base_sigmas),
                              samples_dir(cache_dir, identity, solver_cfg, base_sigmas, steps.afs))  # fmt: skip
    if evaluate and cfg.eval.reference.solver:  # null: no truncation error (e.g. 50k samples of a large model)
        reference = reference_comparison(container(cfg.eval.reference), sigmas, identity, shape, cache_dir)
    return RunPlan(
        dataset=dataset, denoiser=denoiser, model_name=str(cfg.model.name), identity=identity, shape=shape,
        stored_shape=stored_shape(declared, shape), decodes=declared.decodes, steps=steps,
        schedule=str(cfg.schedule.name), schedule_config=schedule_cfg, sampler=sampler, search=search, seeds=seeds,
        batch_size=batch_size, store_dir=samples_dir(cache_dir, identity, solver_cfg, sigmas, steps.afs),
        baseline=baseline, searched=searched_comparisons, reference=reference, eval=settings, features=features,
        grid_size=int(cfg.eval.grid_size) if evaluate else 0, outputs=outputs_of(cfg),
    )  # fmt: skip


def baseline_schedule(cfg: DictConfig) -> str | None:
    """The hand-crafted schedule compared on the same seeds (`eval.baseline`); None when it is off or is the run's
    own schedule."""
    name = cfg.eval.get("baseline")
    if not name or name == cfg.schedule.name:
        return None
    if name == "explicit" or is_search(name):
        raise FewstepError(f"eval.baseline={name} is not a hand-crafted schedule; use polynomial, logsnr, "
                           "time_uniform, time_quadratic, beta or kl_optimal (or null for no baseline)")  # fmt: skip
    return str(name)


def in_sweep() -> bool:
    """Whether this job is one of a Hydra multirun's."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN"


def also_searches(cfg: DictConfig, spec, steps: StepPlan) -> list[str]:
    """The searches whose schedules are sampled on the run's seeds too (`eval.also_search`), checked with the
    solver and NFE before anything loads, less the run's own schedule. `auto`: oss beside a single run (not a
    sweep's job, where the schedules are jobs of their own) of schedule=gits on a closed-form denoiser (kde,
    gaussian: a search and a row of samples cost seconds there), where oss applies to the solver."""
    from fewstep.schedules.registry import REGISTRY
    from fewstep.schedules.searches import check_search, shown_beside

    value = cfg.eval.get("also_search")
    own = str(cfg.schedule.name)
    if value == "auto":
        beside = shown_beside(own)
        if beside is None or in_sweep() or cfg.model.get("parametrization") != "exact":
            return []
        try:
            check_search(beside, {}, spec, steps)
        except FewstepError:  # a stochastic solver, a step count its grid cannot give: the run alone
            return []
        return [beside]
    names = [] if value is None else [value] if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str) or not is_search(name):
            raise FewstepError(f"eval.also_search: {name!r} is not a search; use a list of {sorted(REGISTRY)}, auto "
                               "(oss beside a run of schedule=gits) or [] for none")  # fmt: skip
        try:
            check_search(name, {}, spec, steps)
        except FewstepError as err:
            raise FewstepError(f"eval.also_search={name}: {err}") from None
    return [name for name in dict.fromkeys(names) if name != own]


def samples_dir(cache_dir: Path, identity: dict, solver_cfg: dict, sigmas: torch.Tensor, afs: bool) -> Path:
    """Samples are cached by every setting that changes a seed's sample, so re-running the same command resumes
    where a stopped run left off, and a sweep's baseline is another job's run."""
    key = content_key({**identity, "solver": solver_cfg, "sigmas": sigmas.tolist(), "afs": afs})
    return cache_dir / "samples" / key


def reference_comparison(reference: dict, sigmas, identity: dict, shape, cache_dir: Path) -> Comparison:
    """The high-NFE solution from the same noise, cached per (data, model, interval, reference solver)."""
    fine = reference_sigmas(sigmas, int(reference["num_steps"]), float(reference["rho"]))
    key = content_key({**identity, "shape": shape, "reference": reference, "sigmas": fine.tolist()})
    spec = get_solver(reference["solver"])
    label = f"reference solution ({spec.name}, {reference['num_steps']} steps)"
    return Comparison(label, Sampler(spec, fine), cache_dir / "reference" / key)
