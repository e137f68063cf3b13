"""`task=search`: run only the schedule search (gits or oss); write schedule.json, sigmas.txt and the search's plot;
print the sigmas."""

from __future__ import annotations

from omegaconf import DictConfig

from fewstep.config.plan import build_plan
from fewstep.errors import FewstepError
from fewstep.outputs import write_schedule
from fewstep.runner import LightningRunner
from fewstep.utils.logging import info


def search(cfg: DictConfig) -> dict | None:
    if cfg.schedule.name not in ("gits", "oss"):
        raise FewstepError(f"task=search searches a schedule; add schedule=gits or schedule=oss "
                           f"(got {cfg.schedule.name!r})")  # fmt: skip
    runner = LightningRunner(cfg.trainer)
    plan = build_plan(cfg, runner, evaluate=False)
    if not runner.is_main:
        return None
    sigmas = plan.sampler.sigmas.tolist()
    write_schedule(plan.outputs.run_dir, {"plan": plan.steps.describe(), "sigmas": sigmas}, plan.search, plan.denoiser)
    info(plan.steps.describe())
    print(f"sigmas: [{', '.join(f'{s:.6g}' for s in sigmas)}]", flush=True)
    return {"sigmas": sigmas, "indices": plan.search["indices"]}
