"""A solver-aware schedule search (`schedule=oss`): the DP over the sampling solver's own states (after Optimal
Stepsize Distillation, Pei et al. 2025), on GITS's grid and teacher, for every deterministic solver.

One way in: `search(settings, sampler=..., denoiser=..., shape=..., sigma_min=..., sigma_max=..., num_steps=...)`.
"""

from fewstep.schedules.oss.kernel import DISTANCES, Replay, median_path, run_to, solver_aware_dp
from fewstep.schedules.oss.search import candidates, check_steps, planned_evaluations, search, warmup_size
from fewstep.schedules.oss.settings import DEFAULTS, OssSettings, oss_settings

__all__ = [
    "DEFAULTS",
    "DISTANCES",
    "OssSettings",
    "Replay",
    "candidates",
    "check_steps",
    "median_path",
    "oss_settings",
    "planned_evaluations",
    "run_to",
    "search",
    "solver_aware_dp",
    "warmup_size",
]
