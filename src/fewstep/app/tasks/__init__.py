"""Tasks: one function each, called by `fewstep.run(cfg)` with the composed config; each resolves it into its
frozen plan (`app.config.plan.build_plan`, `app.config.task_plans`) first and reads only the plan."""

from __future__ import annotations

from omegaconf import DictConfig

from fewstep.errors import FewstepError


def run(cfg: DictConfig):
    from fewstep.app.tasks.analyze import analyze
    from fewstep.app.tasks.sample import sample
    from fewstep.app.tasks.search import search
    from fewstep.app.tasks.train import train
    from fewstep.app.tasks.train_features import train_features

    tasks = {"sample": sample, "search": search, "train": train, "train_features": train_features, "analyze": analyze}
    name = cfg.task.name
    if name not in tasks:
        raise FewstepError(f"unknown task {name!r}; choose one of {sorted(tasks)}")
    return tasks[name](cfg)  # each builds its frozen plan, which checks the whole config first
