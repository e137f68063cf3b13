"""GITS (Chen et al., ICML 2024) as a library: settings, base grid, teacher, cost, DP, AFS insertion, caches.

One way in: `search(settings, sigma_min=..., sigma_max=..., num_steps=..., warmup=...)`, where `warmup(job)`
returns the summed costs of the job's teacher trajectories (`local_warmup` here; rank-sharded under Lightning).
`fewstep.search_schedule` wraps it for any denoiser `D(x, sigma)`.
"""

from fewstep.schedules.gits.afs import afs_insertion
from fewstep.schedules.gits.cache import GitsCache
from fewstep.schedules.gits.kernel import (
    METRICS,
    best_path,
    chord_deviation,
    cost_sums,
    dynamic_programming,
    teacher_trajectory,
)
from fewstep.schedules.gits.schedule import Schedule
from fewstep.schedules.gits.search import (
    WARMUP_NAN_CAUSE,
    WarmupJob,
    base_grid,
    check_steps,
    local_warmup,
    search,
    search_path,
    teacher,
    warmup_batch,
)
from fewstep.schedules.gits.settings import DEFAULTS, GitsSettings, gits_settings

__all__ = [
    "DEFAULTS",
    "METRICS",
    "WARMUP_NAN_CAUSE",
    "GitsCache",
    "GitsSettings",
    "Schedule",
    "WarmupJob",
    "afs_insertion",
    "base_grid",
    "best_path",
    "check_steps",
    "chord_deviation",
    "cost_sums",
    "dynamic_programming",
    "gits_settings",
    "local_warmup",
    "search",
    "search_path",
    "teacher",
    "teacher_trajectory",
    "warmup_batch",
]
