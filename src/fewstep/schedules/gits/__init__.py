"""GITS (Chen et al., ICML 2024) as a library: settings, warm-up, cost, DP, AFS insertion and its cache entries.

One way in: `gits_search(settings, sigma_min=..., sigma_max=..., num_steps=..., warmup=...)`, where `warmup(job)`
returns the summed costs of the job's teacher trajectories (`fewstep.schedules.searches.local_warmup`;
rank-sharded under Lightning).
In the search contract it is `SEARCH` (`fewstep.schedules.searches`); `fewstep.search_schedule` wraps it for any
denoiser `D(x, sigma)`.
"""

from fewstep.schedules.gits.afs import afs_insertion
from fewstep.schedules.gits.kernel import METRICS, best_path, cost_sums, dynamic_programming
from fewstep.schedules.gits.method import SEARCH, gits_search, search_path
from fewstep.schedules.gits.settings import DEFAULTS, GitsSettings, gits_settings
from fewstep.schedules.gits.warmup import WarmupJob, warmup_batch

__all__ = [
    "DEFAULTS",
    "METRICS",
    "SEARCH",
    "GitsSettings",
    "WarmupJob",
    "afs_insertion",
    "best_path",
    "cost_sums",
    "dynamic_programming",
    "gits_search",
    "gits_settings",
    "search_path",
    "warmup_batch",
]
