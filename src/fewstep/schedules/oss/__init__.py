"""A solver-aware schedule search (`schedule=oss`): the DP over the sampling solver's own states (after Optimal
Stepsize Distillation, Pei et al. 2025), on GITS's grid and teacher, for every deterministic solver.

One way in: `oss_search(settings, sampler=..., denoiser=..., shape=..., sigma_min=..., sigma_max=..., num_steps=...)`;
in the search contract it is `SEARCH` (`fewstep.schedules.searches`).
"""

from fewstep.schedules.oss.kernel import DISTANCES, Replay, median_path, run_to, solver_aware_dp
from fewstep.schedules.oss.method import SEARCH, candidates, oss_search, planned_evaluations, warmup_size
from fewstep.schedules.oss.settings import DEFAULTS, OssSettings, oss_settings

__all__ = [
    "DEFAULTS",
    "DISTANCES",
    "SEARCH",
    "OssSettings",
    "Replay",
    "candidates",
    "median_path",
    "oss_search",
    "oss_settings",
    "planned_evaluations",
    "run_to",
    "solver_aware_dp",
    "warmup_size",
]
