"""fewstep: few-step sampling of diffusion models (solvers, schedules, GITS, geometry, FID).

The Python API (see `fewstep.api`): `fewstep.sample`, `fewstep.search_schedule`, `fewstep.evaluate` take any
denoiser `D(x, sigma)`; solvers and schedules keep their own paths (`fewstep.solvers.ipndm`,
`fewstep.schedules.polynomial`). `fewstep.run(cfg)` runs a composed Hydra config, as `run.py` does.
"""

from fewstep.errors import FewstepError

__version__ = "0.1.0"

_API = {"sample", "search_schedule", "evaluate", "Schedule", "Sampler"}


def run(cfg):
    """Run the task named by `cfg.task.name` (what `run.py` calls)."""
    from fewstep.app.tasks import run as run_task

    return run_task(cfg)


def __getattr__(name: str):
    if name in _API:  # imported on first use: `import fewstep` stays light, and no module imports the API back
        from fewstep import api

        return getattr(api, name)
    raise AttributeError(f"module 'fewstep' has no attribute {name!r}")


__all__ = ["FewstepError", "Sampler", "Schedule", "evaluate", "run", "sample", "search_schedule"]
