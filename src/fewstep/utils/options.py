"""Options checked against what takes them: unknown names rejected, values typed like the shipped defaults.

One helper for every place that accepts options (solvers, schedules, GITS settings, task configs): a typo or a
wrong type is one line naming the key and what it accepts, never silently ignored.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable

from fewstep.errors import FewstepError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes seeds below 2**63; sample seeds are seed + i


def reject_unknown(what: str, options: Iterable[str], accepted: Iterable[str]) -> None:
    """`what` (e.g. "solver 'ipndm'") takes only `accepted` options."""
    unknown = set(options) - set(accepted)
    if unknown:
        raise FewstepError(f"{what} takes options {sorted(accepted)}, not {sorted(unknown)}")


def function_options(fn: Callable, positional: Iterable[str]) -> set[str]:
    """The keyword options of a solver or schedule function: its parameters less the positional ones."""
    return set(inspect.signature(fn).parameters) - set(positional)


def signature_defaults(fn: Callable) -> dict:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}  # fmt: skip


def like(key: str, value, default):
    """`value` checked against the type of `default`; returns it (ints as ints, reals as floats)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise FewstepError(f"{key} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise FewstepError(f"{key} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise FewstepError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    return value


def integer(key: str, value, low: int, high: int | None = None, why: str = "") -> int:
    like(key, value, 0)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise FewstepError(f"{key} must be {bound}{why}, got {value}")
    return value


def options_like(prefix: str, options: dict, defaults: dict) -> dict:
    """Options typed like the defaults they override (unknown names are rejected by `reject_unknown`)."""
    return {k: like(f"{prefix}.{k}", v, defaults[k]) if k in defaults and v is not None and defaults[k] is not None
            else v for k, v in options.items()}  # fmt: skip
