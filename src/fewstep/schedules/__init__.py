"""Time schedules: pure functions returning float64 sigmas (see `handcrafted`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from fewstep.errors import FewstepError
from fewstep.schedules.handcrafted import (
    check_range,
    discrete,
    logsnr,
    polynomial,
    time_quadratic,
    time_uniform,
    validate_sigmas,
    vp_time,
)

SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "polynomial": polynomial,
    "logsnr": logsnr,
    "time_uniform": time_uniform,
    "time_quadratic": time_quadratic,
    "discrete": discrete,
}


def make_schedule(name: str, num_steps: int, sigma_min: float, sigma_max: float, **options) -> torch.Tensor:
    """Build a hand-crafted schedule by name, rejecting options the schedule does not take."""
    if name not in SCHEDULES:
        raise FewstepError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)} (or explicit)")
    fn = SCHEDULES[name]
    accepted = set(inspect.signature(fn).parameters) - {"num_steps", "sigma_min", "sigma_max"}
    unknown = set(options) - accepted
    if unknown:
        raise FewstepError(f"schedule {name!r} takes options {sorted(accepted)}, not {sorted(unknown)}")
    return fn(num_steps, float(sigma_min), float(sigma_max), **options)


__all__ = [
    "SCHEDULES",
    "check_range",
    "discrete",
    "logsnr",
    "make_schedule",
    "polynomial",
    "time_quadratic",
    "time_uniform",
    "validate_sigmas",
    "vp_time",
]
