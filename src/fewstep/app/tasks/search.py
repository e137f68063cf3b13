"""`task=search`: run only the schedule search (any registered search: gits, oss, ...); write schedule.json,
sigmas.txt and the search's plot; print the sigmas."""

from __future__ import annotations

from omegaconf import DictConfig

from fewstep.app.config.plan import build_plan
from fewstep.app.outputs import write_schedule
from fewstep.app.runner import LightningRunner
from fewstep.errors import FewstepError
from fewstep.schedules.registry import is_search, search_names
from fewstep.utils.logging import info


def search(cfg: DictConfig) -> dict | None:
    if not is_search(cfg.schedule.name):
        choices = " or ".join(f"schedule={name}" for name in search_names())
        raise FewstepError(f"task=search searches a schedule; add {choices} (got {cfg.schedule.name!r})")
    runner = LightningRunner(cfg.trainer)
    plan = build_plan(cfg, runner, evaluate=False)
    if not runner.is_main:
        return None
    sigmas = plan.sampler.sigmas.tolist()
    write_schedule(plan.outputs.run_dir, {"plan": plan.steps.describe(), "sigmas": sigmas}, plan.search, plan.denoiser)
    info(plan.steps.describe())
    print(f"sigmas: [{', '.join(f'{s:.6g}' for s in sigmas)}]", flush=True)
    return {"sigmas": sigmas, "indices": plan.search["indices"]}
