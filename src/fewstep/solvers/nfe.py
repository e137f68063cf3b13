"""NFE accounting: which step counts a solver can spend a given budget of denoiser evaluations on.

NFE = nfe_per_step * num_steps
      - 1 if AFS (the first evaluation is answered in closed form)
      - 1 if denoise_to_zero and the solver spends 2 per step (its last step, to sigma = 0, is one Euler call)
An NFE that cannot be spent exactly is an error that lists the NFEs that can; it is never rounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fewstep.errors import FewstepError


@dataclass(frozen=True)
class SolverSpec:
    name: str
    fn: Callable
    nfe_per_step: int
    order: int
    summary: str
    stochastic: bool = False  # takes `noise=`, a per-sample source of standard normal draws


@dataclass(frozen=True)
class StepPlan:
    solver: str
    num_steps: int
    afs: bool
    denoise_to_zero: bool
    nfe: int
    nfe_per_step: int

    def describe(self) -> str:
        parts = [f"{self.num_steps} steps x {self.nfe_per_step} NFE"]
        if self.denoise_to_zero and self.nfe_per_step == 2:
            parts.append("- 1 (last step to sigma=0 is a single Euler call)")
        if self.afs:
            parts.append("- 1 saved by AFS (analytical first step)")
        return f"{self.solver}: " + " ".join(parts) + f" = {self.nfe} denoiser evaluations"


def nfe_of(spec: SolverSpec, num_steps: int, afs: bool, denoise_to_zero: bool) -> int:
    nfe = spec.nfe_per_step * num_steps - int(afs)
    if denoise_to_zero and spec.nfe_per_step == 2:
        nfe -= 1
    return nfe


def _afs_choices(spec: SolverSpec, afs: str | bool) -> list[bool]:
    if afs == "auto":  # AFS only where it is the way to reach an NFE (odd budgets of 2-per-step solvers)
        return [False, True] if spec.nfe_per_step > 1 else [False]
    if isinstance(afs, bool):
        return [afs]
    raise FewstepError(f"solver.afs must be true, false or auto, got {afs!r}")


def spendable_nfes(spec: SolverSpec, afs: str | bool, denoise_to_zero: bool, up_to: int = 12) -> list[int]:
    values = {
        nfe_of(spec, steps, choice, denoise_to_zero)
        for choice in _afs_choices(spec, afs)
        for steps in range(1, up_to + 2)
    }
    return sorted(v for v in values if 1 <= v <= up_to)


def plan_steps(spec: SolverSpec, nfe: int, afs: str | bool = "auto", denoise_to_zero: bool = False) -> StepPlan:
    """The step plan that spends exactly `nfe` evaluations, or a clear error naming the NFEs that work."""
    if (
        isinstance(nfe, bool)
        or not isinstance(nfe, int | float)
        or not math.isfinite(nfe)
        or int(nfe) != nfe
        or nfe < 1
    ):
        raise FewstepError(f"nfe must be a positive integer, got {nfe!r}")
    nfe = int(nfe)
    for choice in _afs_choices(spec, afs):
        for steps in range(1, nfe + 2):
            if nfe_of(spec, steps, choice, denoise_to_zero) == nfe:
                return StepPlan(spec.name, steps, choice, denoise_to_zero, nfe, spec.nfe_per_step)
    possible = ", ".join(map(str, spendable_nfes(spec, afs, denoise_to_zero)))
    hint = ""
    if spec.nfe_per_step > 1 and afs is False:
        hint = " Set solver.afs=auto (or true) to reach odd NFEs with the analytical first step."
    raise FewstepError(
        f"solver {spec.name!r} cannot spend nfe={nfe} exactly (afs={afs}, denoise_to_zero={denoise_to_zero}): "
        f"it costs {spec.nfe_per_step} NFE per step, so it can spend nfe in {{{possible}, ...}}.{hint}"
    )


def plan_for_schedule(
    spec: SolverSpec, num_sigmas: int, afs: str | bool, denoise_to_zero: bool, nfe: int | None = None
) -> StepPlan:
    """The plan implied by an explicit sigma list (its length fixes the step count); with `afs=auto`, AFS is
    used where that is what makes the list cost `nfe`."""
    steps = num_sigmas - 1
    choices = _afs_choices(spec, afs)
    matching = [c for c in choices if nfe_of(spec, steps, c, denoise_to_zero) == nfe]
    choice = (matching or choices)[0]
    return StepPlan(
        spec.name, steps, choice, denoise_to_zero, nfe_of(spec, steps, choice, denoise_to_zero), spec.nfe_per_step
    )
