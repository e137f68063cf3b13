"""Time schedules: pure functions returning float64 sigmas (see `handcrafted`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fewstep.errors import FewstepError
from fewstep.schedules.handcrafted import (
    ays,
    beta,
    check_range,
    discrete,
    flow,
    flow_shift_factor,
    flux_mu,
    kl_optimal,
    logsnr,
    polynomial,
    time_quadratic,
    time_uniform,
    validate_sigmas,
    vp_time,
)
from fewstep.utils.options import function_options, reject_unknown

SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "polynomial": polynomial,
    "logsnr": logsnr,
    "time_uniform": time_uniform,
    "time_quadratic": time_quadratic,
    "discrete": discrete,
    "beta": beta,
    "kl_optimal": kl_optimal,
    "ays": ays,
    "flow": flow,
}


# the hand-crafted schedules defined for any sigma range (discrete needs a model's betas, ays is made for one
# model's range): what searches compare with and plots show
RANGE_FREE = ("polynomial", "logsnr", "time_uniform", "time_quadratic", "beta", "kl_optimal")

SCHEDULE_ARGUMENTS = ("num_steps", "sigma_min", "sigma_max")  # what every schedule takes; the rest are options


def make_schedule(name: str, num_steps: int, sigma_min: float, sigma_max: float, **options) -> torch.Tensor:
    """Build a hand-crafted schedule by name, rejecting options the schedule does not take."""
    if name not in SCHEDULES:
        raise FewstepError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)} (or explicit)")
    fn = SCHEDULES[name]
    reject_unknown(f"schedule {name!r}", options, function_options(fn, SCHEDULE_ARGUMENTS))
    return fn(num_steps, float(sigma_min), float(sigma_max), **options)


__all__ = [
    "RANGE_FREE",
    "SCHEDULES",
    "ays",
    "beta",
    "check_range",
    "discrete",
    "flow",
    "flow_shift_factor",
    "flux_mu",
    "kl_optimal",
    "logsnr",
    "make_schedule",
    "polynomial",
    "time_quadratic",
    "time_uniform",
    "validate_sigmas",
    "vp_time",
]
