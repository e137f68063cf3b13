"""Deterministic probability-flow ODE solvers in the sigma parametrisation: dx/dsigma = (x - D(x, sigma))/sigma.

Every solver is a pure function `solver(denoiser, x, sigmas, *, callback=None, afs=None, **options) -> x`:
`x` is the state at sigmas[0]; the return value is the state at sigmas[-1]. A final sigma of 0 is allowed:
2-evaluation solvers (heun, dpm) then take a single Euler call, i.e. return the denoiser output, as EDM does;
1-evaluation solvers take their usual update (their slopes were evaluated at sigma > 0).
`afs`, when given, is a closed-form denoiser that answers the first evaluation of the trajectory
(see `fewstep.solvers.afs`). `callback(info)` receives every step.
The algorithms follow the GITS reference code (zju-pi/diff-sampler, solvers.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from fewstep.errors import FewstepError

Callback = Callable[[dict], None] | None


def sigma_values(sigmas: torch.Tensor) -> list:
    """The sigmas as float64 Python numbers (sigma arithmetic stays in double precision), or as 0-d float64 tensors
    where `sigmas` requires grad, so that a solver's end state is differentiable in its schedule (`schedule=ld3`)."""
    return list(sigmas.unbind(0)) if sigmas.requires_grad else sigmas.tolist()


def log(value):
    """math.log, or torch.log for a tensor sigma (see `sigma_values`)."""
    return torch.log(value) if isinstance(value, torch.Tensor) else math.log(value)


def expm1(value):
    return torch.expm1(value) if isinstance(value, torch.Tensor) else math.expm1(value)


def step_pairs(sigmas: torch.Tensor):
    values = sigma_values(sigmas)
    return enumerate(zip(values[:-1], values[1:], strict=True))


def model_for_step(denoiser, afs, i: int):
    return afs if (afs is not None and i == 0) else denoiser


def report_step(callback: Callback, i, sigma, sigma_next, x, denoised, x_next) -> None:
    if callback is not None:
        callback({"i": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "denoised": denoised, "x_next": x_next})


def euler(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None, afs=None) -> torch.Tensor:
    """Euler's method (= DDIM): 1 evaluation per step, order 1."""
    for i, (s, s_next) in step_pairs(sigmas):
        denoised = model_for_step(denoiser, afs, i)(x, s)
        # x + (s_next - s)(x - D)/s, written without the cancellation of x against the step: a flow model's first
        #   step from sigma_max = 1000 would otherwise lose 1000 x float32's precision
        x_next = denoised if s_next == 0 else denoised + (s_next / s) * (x - denoised)
        report_step(callback, i, s, s_next, x, denoised, x_next)
        x = x_next
    return x


def heun_step(denoiser, x: torch.Tensor, s: float, s_next: float, denoised: torch.Tensor) -> torch.Tensor:
    """One Heun step from (x, s) with D(x, s) = `denoised` given: Euler, then the trapezoid correction (1 more
    evaluation); a step to 0 is the Euler step alone, i.e. `denoised`."""
    if s_next == 0:
        return denoised
    d = (x - denoised) / s
    x_euler = x + (s_next - s) * d
    d_next = (x_euler - denoiser(x_euler, s_next)) / s_next
    return x + (s_next - s) * (0.5 * d + 0.5 * d_next)


def heun(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None, afs=None) -> torch.Tensor:
    """Heun's 2nd-order method (EDM, Karras et al. 2022): 2 evaluations per step; a step to 0 is Euler."""
    for i, (s, s_next) in step_pairs(sigmas):
        denoised = model_for_step(denoiser, afs, i)(x, s)
        x_next = heun_step(denoiser, x, s, s_next, denoised)
        report_step(callback, i, s, s_next, x, denoised, x_next)
        x = x_next
    return x


def dpm(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None, afs=None, r: float = 0.5
) -> torch.Tensor:
    """DPM-Solver-2 (Lu et al. 2022), singlestep, noise prediction: 2 evaluations per step; a step to 0 is Euler.

    The intermediate point sits at sigma_mid = sigma_next^r * sigma^(1-r) (r = 1/2: midpoint in log-SNR).
    In the VE parametrisation its exponential integrator reduces to these Euler-like updates.
    """
    if not 0 < r <= 1:
        raise FewstepError(f"dpm option r must lie in (0, 1], got {r}")
    for i, (s, s_next) in step_pairs(sigmas):
        denoised = model_for_step(denoiser, afs, i)(x, s)
        if s_next == 0:
            x_next = denoised
        else:
            d = (x - denoised) / s
            s_mid = s_next**r * s ** (1 - r)
            x_mid = x + (s_mid - s) * d
            d_mid = (x_mid - denoiser(x_mid, s_mid)) / s_mid
            x_next = x + (s_next - s) * ((1 / (2 * r)) * d_mid + (1 - 1 / (2 * r)) * d)
        report_step(callback, i, s, s_next, x, denoised, x_next)
        x = x_next
    return x


# Adams-Bashforth coefficients for equal steps, newest slope first: (numerators, denominator).
_ADAMS_BASHFORTH = {1: ((1,), 1), 2: ((3, -1), 2), 3: ((23, -16, 5), 12), 4: ((55, -59, 37, -9), 24)}


def ipndm(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    callback: Callback = None,
    afs=None,
    max_order: int = 4,
    history: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """Improved PNDM (Zhang & Chen 2022): Adams-Bashforth on past slopes, 1 evaluation per step.

    The order grows 1, 2, 3, ... up to `max_order` (<= 4) as slopes accumulate. `history` (oldest first)
    seeds the buffer with slopes of earlier steps, to continue a trajectory at full order. The coefficients
    assume equal steps (see `ipndm_v` in the solvers issue for the variable-step version).
    """
    if max_order not in _ADAMS_BASHFORTH:
        raise FewstepError(f"ipndm max_order must be 1, 2, 3 or 4, got {max_order}")
    slopes = list(history)[-(max_order - 1) :] if max_order > 1 else []
    for i, (s, s_next) in step_pairs(sigmas):
        denoised = model_for_step(denoiser, afs, i)(x, s)
        d = (x - denoised) / s
        numerators, denominator = _ADAMS_BASHFORTH[min(max_order, len(slopes) + 1)]
        recent = [d, *reversed(slopes)]
        slope = sum(c * g for c, g in zip(numerators, recent, strict=False)) / denominator
        x_next = x + (s_next - s) * slope
        report_step(callback, i, s, s_next, x, denoised, x_next)
        if max_order > 1:
            slopes = [*slopes, d][-(max_order - 1) :]
        x = x_next
    return x
