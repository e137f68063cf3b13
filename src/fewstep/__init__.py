"""fewstep: few-step sampling of diffusion models (solvers, schedules, GITS, geometry, FID)."""

from fewstep.errors import FewstepError

__version__ = "0.1.0"


def run(cfg):
    """Run the task named by `cfg.task.name` (what `run.py` calls)."""
    from fewstep.tasks import run as run_task

    return run_task(cfg)


__all__ = ["FewstepError", "run"]
