"""Rank-zero logging: `info` prints on the main process only (the launchers' rank variables tell which)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("fewstep")

_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def global_rank() -> int:
    """This process's rank as the launchers (Lightning, torchrun, SLURM) announce it; 0 when alone."""
    for name in _RANK_VARIABLES:
        if name in os.environ:
            return int(os.environ[name])
    return 0


def info(message: str) -> None:
    if global_rank() == 0:
        log.info(message)
