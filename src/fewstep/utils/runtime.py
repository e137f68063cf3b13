"""Process-level niceties for command-line runs."""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.utilities import rank_zero_only


def quiet_lightning() -> None:
    """Drop Lightning's banner lines and the dataloader-worker hint, which say nothing about sampling."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*predict_dataloader.*num_workers.*")
    warnings.filterwarnings("ignore", ".*Couldn't infer the batch indices.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")


@rank_zero_only
def print_run_dir(cfg) -> None:
    print(f"run_dir: {cfg.paths.output_dir}", flush=True)
