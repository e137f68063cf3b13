"""Searched schedules into the tools people sample with: diffusers schedulers, k-diffusion and ComfyUI.

- k-diffusion / ComfyUI custom sigmas: the sigmas, largest first, ending in 0 (their samplers take the last step
  to 0 themselves).
- diffusers: a scheduler whose `set_timesteps` takes `sigmas=` (EulerDiscreteScheduler, Heun, ...) gets the
  sigmas as they are, its last one included (diffusers does not append its own); one that takes only
  `timesteps=` (DPMSolverMultistepScheduler, UniPC, ...) gets the integer timesteps whose training sigmas are
  nearest (the reference code's discrete conversion), with the rounding reported; DDIMScheduler, which steps by
  equal strides, is refused. A schedule outside the scheduler's trained sigma range is refused too: diffusers
  would clamp sigma 80 to its last timestep without a word.
- diffusers' rectified-flow schedulers (FlowMatchEulerDiscreteScheduler, SD3 and Flux pipelines) count time as
  t = sigma / (1 + sigma) and always take their last step to t = 0: they get the schedule's times without its final
  0 (a schedule that does not denoise to zero is refused: the scheduler would add a step), passed through the
  inverse of the scheduler's own `shift`, so its shift lands on the searched times. DPMSolverMultistep and
  UniPCMultistep with `use_flow_sigmas=True` (and final_sigmas_type "zero") recompute their own times whatever they
  are given: fewstep sets them to the schedule's times directly after `set_timesteps`, and their integer timesteps
  (the model's time input, round(1000 t)) to the nearest, with the rounding reported.
"""

from __future__ import annotations

import inspect
import math

import torch

from fewstep.errors import FewstepError
from fewstep.models.flow import flow_time


def with_final_zero(sigmas) -> list[float]:
    """k-diffusion's and ComfyUI's convention: the sigmas, ending in 0."""
    values = [float(s) for s in sigmas]
    return values if values and values[-1] == 0 else [*values, 0.0]


def training_sigmas(alphas_cumprod) -> torch.Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t) of a discrete-time model, float64, increasing with t."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
    return ((1 - abar) / abar).sqrt()


def nearest_timesteps(sigmas, table: torch.Tensor) -> tuple[list[int], float]:
    """The integer timestep nearest (in log sigma) to each positive sigma on a model's increasing training sigmas
    `table`, and the largest relative sigma error that rounding makes. Two sigmas on one timestep are an error."""
    table = torch.as_tensor(table, dtype=torch.float64).log()
    positive = torch.tensor([float(s) for s in sigmas if s > 0], dtype=torch.float64)
    steps = (positive.log()[:, None] - table[None, :]).abs().argmin(dim=1)
    if len(set(steps.tolist())) != len(steps):
        raise FewstepError(f"sigmas {positive.tolist()} fall on repeated integer timesteps {steps.tolist()}: the "
                           "model has too few training timesteps for this schedule; use a scheduler that takes "
                           "sigmas=")  # fmt: skip
    error = float(((table[steps].exp() - positive) / positive).abs().max())
    return [int(t) for t in steps], error


def check_range(sigmas, alphas_cumprod, what: str) -> None:
    table = training_sigmas(alphas_cumprod)
    positive = [float(s) for s in sigmas if s > 0]
    low, high = float(table[0]), float(table[-1])
    if max(positive) > high * (1 + 1e-3) or min(positive) < low * (1 - 1e-3):
        raise FewstepError(f"the schedule spans sigma [{min(positive):.6g}, {max(positive):.6g}] but {what} was "
                           f"trained on [{low:.6g}, {high:.6g}]: it would clamp the sigmas outside to its end "
                           "timesteps; search with sigma_min/sigma_max inside that range (a discrete-time model's "
                           "own range: model.sigma_min/model.sigma_max)")  # fmt: skip


def is_flow_match(scheduler) -> bool:
    """FlowMatchEulerDiscreteScheduler and its kin: `set_timesteps(sigmas=)` takes flow times and shifts them."""
    return type(scheduler).__name__.startswith("FlowMatch")


def is_flow_scheduler(scheduler) -> bool:
    """A diffusers scheduler of rectified flows (its sigmas are flow times t in [0, 1])."""
    return is_flow_match(scheduler) or bool(scheduler.config.get("use_flow_sigmas"))


def same_values(got: list[float], expected: list[float]) -> bool:
    """A scheduler kept the values it was given (up to its float32 storage)."""
    return len(got) == len(expected) and all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)
                                             for a, b in zip(got, expected, strict=True))  # fmt: skip


def flow_inputs(sigmas, scheduler) -> list[float]:
    """What to pass as `sigmas=` to a rectified-flow scheduler's `set_timesteps` (or to an SD3 / Flux pipeline's
    call) so that it runs `sigmas` (fewstep's, largest first, ending in 0): the flow times t = sigma / (1 + sigma)
    without the final 0 (the scheduler appends it), un-shifted by the scheduler's static `shift`."""
    name = type(scheduler).__name__
    values = [float(s) for s in sigmas]
    if not values or values[-1] != 0:
        raise FewstepError(f"{name} always takes its last step to t = 0 (it appends the 0 itself), so it would add a "
                           "step to this schedule, which ends at sigma_min: export a schedule that denoises to zero "
                           "(denoise_to_zero=true)")  # fmt: skip
    config = scheduler.config
    if config.get("final_sigmas_type", "zero") != "zero":
        raise FewstepError(f"{name} has final_sigmas_type={config['final_sigmas_type']!r}: set it to 'zero' (the "
                           "schedule ends with a step to 0)")  # fmt: skip
    if config.get("use_dynamic_shifting"):
        raise FewstepError(f"{name} has use_dynamic_shifting=True: the pipeline would shift the searched times again "
                           f"by its mu; use {name}.from_config(config, use_dynamic_shifting=False)")  # fmt: skip
    shift = float(config.get("shift", 1.0)) if is_flow_match(scheduler) else 1.0
    times = [flow_time(s) for s in values[:-1]]
    return [t / (shift - (shift - 1) * t) for t in times]  # the inverse of t -> shift t / (1 + (shift - 1) t)


def configure_flow(scheduler, sigmas) -> dict:
    name = type(scheduler).__name__
    times = flow_inputs(sigmas, scheduler)
    expected = [flow_time(s) for s in sigmas[:-1]] + [0.0]
    if not is_flow_match(scheduler):  # use_flow_sigmas: the scheduler's own times, then ours written over them
        scheduler.set_timesteps(num_inference_steps=len(times))
        train = int(scheduler.config.num_train_timesteps)
        timesteps = [round(t * train) for t in times]
        if len(set(timesteps)) != len(timesteps):
            raise FewstepError(f"flow times {times} fall on repeated integer timesteps {timesteps} of {name}: use "
                               "FlowMatchEulerDiscreteScheduler, which takes float times")  # fmt: skip
        scheduler.sigmas = torch.tensor(expected, dtype=torch.float32)
        scheduler.timesteps = torch.tensor(timesteps, dtype=torch.int64)
        rounding = max(abs(k / train - t) for k, t in zip(timesteps, times, strict=True))
        return {"sigmas": [float(t) for t in scheduler.sigmas], "timesteps": timesteps, "time_rounding": rounding}
    scheduler.set_timesteps(sigmas=times)
    got = [float(t) for t in scheduler.sigmas]
    if not same_values(got, expected):
        raise FewstepError(f"{name} rewrote the flow times ({got} instead of {expected}): switch off its "
                           "use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas / shift_terminal / "
                           "invert_sigmas")  # fmt: skip
    return {"sigmas": got}


def configure_diffusers(scheduler, sigmas) -> dict:
    """Set `scheduler` to run `sigmas` (a float64 list, largest first; its last value is the scheduler's last
    sigma: 0 to denoise, or sigma_min). Returns what was set: {"sigmas": ...} or {"timesteps": ..., "error": ...}."""
    name = type(scheduler).__name__
    if is_flow_scheduler(scheduler):
        return configure_flow(scheduler, [float(s) for s in sigmas])
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None:
        raise FewstepError(f"{name} has no alphas_cumprod: not a discrete-time diffusers scheduler")
    check_range(sigmas, alphas, name)
    accepts = inspect.signature(scheduler.set_timesteps).parameters
    if "sigmas" in accepts:
        scheduler.set_timesteps(sigmas=[float(s) for s in sigmas])
        got = [float(s) for s in scheduler.sigmas]
        if not same_values(got, [float(s) for s in sigmas]):
            raise FewstepError(f"{name} rewrote the sigmas ({got} instead of {list(sigmas)}): switch off its "
                               "use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas")  # fmt: skip
        return {"sigmas": got}
    if "timesteps" in accepts:
        timesteps, error = nearest_timesteps(sigmas, training_sigmas(alphas))
        scheduler.set_timesteps(timesteps=timesteps)
        return {"timesteps": timesteps, "sigma_rounding": error}
    raise FewstepError(f"{name}.set_timesteps takes neither sigmas= nor timesteps=, so it cannot run a searched "
                       "schedule (DDIMScheduler steps by equal strides); use EulerDiscreteScheduler (Euler in "
                       "sigma is DDIM) or DPMSolverMultistepScheduler")  # fmt: skip


def export_record(sigmas, table: torch.Tensor | None = None) -> dict:
    """What schedule.json carries for other tools: the sigmas at full precision, with the final 0 (k-diffusion,
    ComfyUI), and for a discrete-time model (its training sigmas `table`) the nearest integer timesteps."""
    values = [float(s) for s in sigmas]
    record = {"sigmas": values, "k_diffusion_sigmas": with_final_zero(values)}
    if table is not None:
        timesteps, error = nearest_timesteps(values, table)
        record.update(timesteps=timesteps, timesteps_sigma_rounding=error)
    return record
