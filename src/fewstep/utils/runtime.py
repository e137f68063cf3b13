"""Process-level niceties for command-line runs."""

from __future__ import annotations

import logging
import warnings

from fewstep.utils.logging import global_rank


def quiet_lightning() -> None:
    """Drop Lightning's banner lines and hints that say nothing about sampling."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric",
        "lightning.pytorch.accelerators",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",
        ".*Couldn't infer the batch indices.*",
        ".*LeafSpec.*is deprecated.*",
        ".*litlogger.*",
        ".*predict returned None.*",
        ".*Total length of `DataLoader` across ranks is zero.*",  # expected when every seed is cached
    ):
        warnings.filterwarnings("ignore", pattern)


def register_resolvers() -> None:
    """`${fewstep.cwd:}`: the directory the command was started from. Hydra's `${hydra:runtime.cwd}` is not set
    yet when a multirun's sweep directory is resolved, so `paths.root_dir` cannot use it."""
    import os

    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("fewstep.cwd", os.getcwd, replace=True)


def print_run_dir(cfg) -> None:
    if global_rank() == 0:
        print(f"run_dir: {cfg.paths.output_dir}", flush=True)
