"""Rank-zero logging and the run's loggers (CSV by default).

Kept free of Lightning imports: importing Lightning costs seconds, and config errors should not wait for it.
"""

from __future__ import annotations

import logging
import os

from hydra.utils import instantiate
from omegaconf import DictConfig

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


def _flatten(prefix: str, node, out: dict) -> dict:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = node
    return out


def log_metrics_to_loggers(cfg: DictConfig, metrics: dict) -> None:
    """Send the config and the scalar metrics to every logger configured under `logger`."""
    from fewstep.tasks.setup import resolved_config

    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if not logger_cfg or "_target_" not in logger_cfg:
            continue
        logger = instantiate(logger_cfg)
        logger.log_hyperparams(_flatten("", resolved_config(cfg), {}))
        logger.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        logger.finalize("success")
        log.info("logged metrics to %s logger", name)
