"""The learned discretisation (`schedule=ld3`, after LD3, Tong et al. ICLR 2025): `ld3_search(settings, sampler=...,
denoiser=..., ...)`, and its entry in the search contract (`SEARCH`).

The schedule's K logits (`kernel.sigmas_of`) are learned by backpropagating through the sampling solver itself
(its history, second evaluations and AFS step: the solvers are differentiable in their sigmas) against the teacher's
samples from the same noise, as LD3's trainer does: RMSprop with momentum, gradient clipping, a batch of 2, a
validation after every step keeping the best logits, and on `patience` validations without improvement the best
logits reloaded and the learning rate decayed. LD3's soft teacher lets each training sample's noise move within a
small ball (`prior_bound`) where that lowers its loss. Left out: LD3's second ("decoupled") discretisation of the
model's evaluation times (its version 2), which no fewstep solver takes, and moving the validation noise.

It runs on the main process; with several processes the others wait for its result in `broadcast`. Learned
schedules are cached like the other searches' (sealed, checked before use) under `<cache>/ld3`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from fewstep.data.seeds import seed_range, seeded_noise
from fewstep.errors import FewstepError, NonFiniteError
from fewstep.models.denoiser import CountingDenoiser
from fewstep.schedules.ld3.kernel import logits_of, per_sample_loss, project_to_ball, sigmas_of
from fewstep.schedules.ld3.plot import plot_training
from fewstep.schedules.ld3.settings import DEFAULTS, Ld3Settings, ld3_settings
from fewstep.schedules.oss.settings import GITS_REFERENCE_WARMUP
from fewstep.schedules.registry import SearchMethod
from fewstep.schedules.search_cache import SearchCache
from fewstep.schedules.searches import SearchContext, cached_on_main, needs_steps, run_on_main
from fewstep.schedules.teacher import base_grid, check_teacher
from fewstep.schedules.teacher_cache import TeacherRuns
from fewstep.solvers.nfe import SolverSpec, StepPlan
from fewstep.solvers.sampler import Sampler
from fewstep.utils.logging import info

RECORD_VERSION = 1


def check_solver(spec: SolverSpec) -> None:
    if spec.stochastic:
        raise FewstepError(f"schedule=ld3 learns a schedule for a deterministic solver; {spec.name} is stochastic "
                           "(use schedule=gits, or an ODE solver such as euler, heun, ipndm, dpmpp)")  # fmt: skip


def check(settings: Ld3Settings, spec: SolverSpec, steps: StepPlan) -> None:
    check_solver(spec)
    check_teacher(settings)
    if steps.num_steps - int(steps.denoise_to_zero) < 1:
        raise FewstepError(f"{needs_steps(steps)} from sigma_max to sigma_min; schedule=ld3 needs at least one")


def soft_teacher(settings: Ld3Settings, shape: tuple[int, ...], num_steps: int) -> tuple[float, float]:
    """(prior_bound, shift_lr): the settings', or LD3's defaults (utils.adjust_hyper): 0.001 x values per sample /
    steps^2 and 12 / steps."""
    values = math.prod(shape)
    bound = 0.001 * values / num_steps**2 if settings.prior_bound is None else float(settings.prior_bound)
    shift = 12.0 / num_steps if settings.shift_lr is None else float(settings.shift_lr)
    return bound, shift


def ld3_search(
    settings: Ld3Settings | dict | None,
    *,
    sampler: Sampler,
    denoiser,
    shape: tuple[int, ...],
    sigma_min: float,
    sigma_max: float,
    num_steps: int,
    total_steps: int | None = None,
    to_zero: bool = False,
    device="cpu",
    sampler_key: dict | None = None,
    cache: SearchCache | None = None,
    is_main: bool = True,
    broadcast: Callable = lambda payload: payload,
) -> dict:
    """The schedule of `num_steps` steps from sigma_max to sigma_min learned for `sampler` (its solver, options and
    AFS prior), as a record (sigmas, the teacher's grid, the training history, cost in evaluations and seconds).
    With `to_zero` the sampling run takes a final step to 0 after sigma_min, and so does every training run."""
    settings = ld3_settings(settings)
    check_solver(sampler.spec)
    if num_steps < 1:
        raise FewstepError(f"schedule=ld3 needs at least one step from sigma_max to sigma_min, got {num_steps}")
    total_steps = num_steps + int(to_zero) if total_steps is None else int(total_steps)
    grid = base_grid(settings, sigma_min, sigma_max)
    what = {"ld3": settings.as_dict(), "record": RECORD_VERSION, "sampler": sampler_key or {"solver": sampler.name},
            "num_steps": num_steps, "total_steps": total_steps, "to_zero": to_zero}  # fmt: skip

    def compute() -> dict:
        teacher = TeacherRuns("ld3", settings, grid, denoiser, shape, device, cache)
        record = run_search(settings, sampler, denoiser, shape, grid, num_steps, to_zero, teacher)
        return {**record, "total_steps": total_steps}

    return cached_on_main("ld3", cache, what, grid, num_steps, (sigma_min, sigma_max), compute, is_main, broadcast,
                          on_grid=False)  # fmt: skip


def run_search(settings: Ld3Settings, sampler: Sampler, denoiser, shape, grid: torch.Tensor, num_steps: int,
               to_zero: bool, teacher: TeacherRuns) -> dict:  # fmt: skip
    """The learning; `teacher` runs (or reads from the cache) the teacher's samples of the training and validation
    seeds."""
    from fewstep.schedules import RANGE_FREE, make_schedule

    device = teacher.device
    started = time.perf_counter()
    n = len(grid)
    sigma_max, sigma_min = float(grid[0]), float(grid[-1])
    train_seeds = torch.tensor(seed_range(settings.warmup_seed, settings.num_train), dtype=torch.long)
    valid_seeds = torch.tensor(seed_range(settings.warmup_seed + settings.num_train, settings.num_validation),
                               dtype=torch.long)  # fmt: skip
    spent = dict.fromkeys(("teacher", "train_forward", "train_backward", "soft_teacher", "validation"), 0)

    def targets_of(seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return seeded_noise(seeds, shape).to(device), teacher.samples(seeds.tolist())

    original, train_targets = targets_of(train_seeds)
    valid_noise, valid_targets = targets_of(valid_seeds)
    latents = original.clone()

    def path(theta: torch.Tensor) -> torch.Tensor:
        sigmas = sigmas_of(theta, sigma_min, sigma_max)
        return torch.cat([sigmas, sigmas.new_zeros(1)]) if to_zero else sigmas

    def losses(theta, noise, seeds, targets, part: str) -> torch.Tensor:
        counters = []

        def counted(bound):  # the seed-bound model, counted: the rows of its calls
            counters.append(CountingDenoiser(bound))
            return counters[-1]

        samples = sampler.solve(denoiser, noise * sigma_max, seeds, sigmas=path(theta), wrap=counted)
        spent[part] += counters[0].rows
        return per_sample_loss(samples, targets, settings.loss)

    def validate(theta) -> float:
        with torch.no_grad():
            value = float(losses(theta, valid_noise, valid_seeds, valid_targets, "validation").mean())
        if not math.isfinite(value):
            raise NonFiniteError(f"ld3 search: non-finite validation loss at sigmas {path(theta).tolist()}; "
                                 "nothing was cached")  # fmt: skip
        return value

    names = list(RANGE_FREE) if settings.init == "best" else [settings.init]
    starts = {name: make_schedule(name, num_steps, sigma_min, sigma_max) for name in names}
    init_values = {name: validate(logits_of(sigmas)) for name, sigmas in starts.items()}
    init_name = min(init_values, key=lambda name: init_values[name])  # init=best: the best on the validation seeds
    init = starts[init_name]
    theta = torch.nn.Parameter(logits_of(init))
    optimizer = torch.optim.RMSprop([theta], lr=settings.lr, momentum=settings.momentum)
    bound, shift = soft_teacher(settings, shape, num_steps)
    best_value = init_value = init_values[init_name]
    best_theta, worse, lr = theta.detach().clone(), 0, float(settings.lr)
    history = [[0, None, init_value, lr]]
    order = torch.Generator().manual_seed(int(settings.warmup_seed))
    iteration = 0
    for round_index in range(int(settings.rounds)):
        if round_index:  # LD3: each round after the first starts from the best logits so far
            with torch.no_grad():
                theta.copy_(best_theta)
            worse = 0
        for rows in torch.randperm(len(train_seeds), generator=order).split(int(settings.batch_size)):
            iteration += 1
            noise = latents[rows].clone().requires_grad_(bound > 0)
            per_sample = losses(theta, noise, train_seeds[rows], train_targets[rows], "train_forward")
            loss = per_sample.mean()
            if not bool(torch.isfinite(loss)):
                raise NonFiniteError(f"ld3 search: non-finite training loss at sigmas {path(theta.detach()).tolist()}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_([theta], float(settings.clip))
            optimizer.step()
            optimizer.zero_grad()
            if bound > 0:  # the soft teacher: a noise move within the bound, kept where it lowers the loss
                with torch.no_grad():
                    moved = project_to_ball(noise - shift * noise.grad, original[rows], bound)
                    after = losses(theta.detach(), moved, train_seeds[rows], train_targets[rows], "soft_teacher")
                    better = after < per_sample.detach()
                    latents[rows[better]] = moved[better]
            value = validate(theta.detach())
            if value < best_value:
                best_value, best_theta, worse = value, theta.detach().clone(), 0
            else:
                worse += 1
            if worse >= int(settings.patience):  # LD3: reload the best, decay the learning rate
                with torch.no_grad():
                    theta.copy_(best_theta)
                worse, lr = 0, max(lr * float(settings.lr_decay), float(settings.min_lr))
                for group in optimizer.param_groups:
                    group["lr"] = lr
            history.append([iteration, float(loss.detach()), value, lr])
    spent["teacher"] = teacher.computed
    spent["train_backward"] = spent["train_forward"]  # every training forward call is backpropagated once
    sigmas = sigmas_of(best_theta, sigma_min, sigma_max)
    evaluations = sum(spent.values())
    seconds = time.perf_counter() - started
    gits_evaluations = GITS_REFERENCE_WARMUP * (n - 1)
    info(f"ld3 search ({sampler.name}, {num_steps} steps, {iteration} steps of learning on {len(train_seeds)} "
         f"samples, {len(valid_seeds)} validation samples): validation {settings.loss} {init_value:.4g} "
         f"({init_name}) -> {best_value:.4g}; {evaluations} model evaluations (forward and backward) = "
         f"{evaluations / gits_evaluations:.2f} GITS reference warm-ups"
         + (f" (the teacher's {teacher.reused} reused from the cache)" if teacher.reused else "")
         + f", {seconds:.1f} s")  # fmt: skip
    return {
        "method": "ld3", "sigmas": sigmas.tolist(), "indices": None, "grid": grid.tolist(), "path_cost": best_value,
        "init": init_name, "init_value": init_value, "init_values": init_values, "init_sigmas": init.tolist(),
        "num_steps": num_steps, "to_zero": to_zero, "solver": sampler.name, "settings": settings.as_dict(),
        "prior_bound": bound, "shift_lr": shift, "iterations": iteration, "history": history,
        "validation_seeds": [int(valid_seeds[0]), len(valid_seeds)], "evaluations": evaluations,
        "evaluations_by_part": spent, "teacher_reused": teacher.reused, "gits_reference_evaluations": gits_evaluations,
        "seconds": seconds,
    }  # fmt: skip


def run(settings: Ld3Settings, context: SearchContext) -> dict:
    """ld3 in the search contract: on the main process (placing the model there), broadcast to the others."""
    return run_on_main(ld3_search, settings, context)


SEARCH = SearchMethod(
    name="ld3", defaults=DEFAULTS, settings=ld3_settings, check=check, run=run, plot=plot_training,
    summary="learned discretisation (LD3, Tong et al. 2025): backpropagation through the solver to the teacher",
)  # fmt: skip
