"""Tasks: one function each, called by `fewstep.run(cfg)` with the composed config."""

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
    from fewstep.app.config.checks import check_common

    check_common(cfg)
    return tasks[name](cfg)
