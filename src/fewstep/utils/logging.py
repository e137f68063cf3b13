"""Rank-zero logging and the run's loggers (CSV by default)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("fewstep")


@rank_zero_only
def info(message: str) -> None:
    log.info(message)


def _flatten(prefix: str, node, out: dict) -> dict:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = node
    return out


def log_metrics_to_loggers(cfg: DictConfig, metrics: dict, run_dir: Path) -> None:
    """Send the config and the scalar metrics to every logger configured under `logger`."""
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if not logger_cfg or "_target_" not in logger_cfg:
            continue
        logger = instantiate(logger_cfg)
        logger.log_hyperparams(_flatten("", OmegaConf.to_container(cfg, resolve=True), {}))
        logger.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        logger.finalize("success")
        log.info("logged metrics to %s logger", name)
