"""Lightning's process-level chatter, quietened (the command line's own handling is in `fewstep.app.command`)."""

from __future__ import annotations

import logging
import warnings


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
