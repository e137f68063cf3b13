"""The learned discretisation (`schedule=ld3`, after LD3, Tong et al. ICLR 2025): a schedule's step sizes learned by
backpropagating through the sampling solver to the teacher's samples, for every deterministic solver.

One way in: `ld3_search(settings, sampler=..., denoiser=..., shape=..., sigma_min=..., sigma_max=..., num_steps=...)`;
in the search contract it is `SEARCH` (`fewstep.schedules.searches`).
"""

from fewstep.schedules.ld3.kernel import logits_of, per_sample_loss, project_to_ball, sigmas_of
from fewstep.schedules.ld3.method import SEARCH, ld3_search
from fewstep.schedules.ld3.settings import DEFAULTS, LOSSES, Ld3Settings, ld3_settings

__all__ = [
    "DEFAULTS",
    "LOSSES",
    "SEARCH",
    "Ld3Settings",
    "ld3_search",
    "ld3_settings",
    "logits_of",
    "per_sample_loss",
    "project_to_ball",
    "sigmas_of",
]
