"""The run's loggers (CSV by default; W&B and TensorBoard on request, several at once).

Kept free of Lightning imports at module level: importing Lightning costs seconds, and config errors should
not wait for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from fewstep.utils.logging import log


def _flatten(prefix: str, node, out: dict) -> dict:
    if isinstance(node, dict):
        for k, v in node.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = node
    return out


def run_identity(outputs, metrics: dict) -> dict:
    """Name, tags and group of a run for dashboards; the group is the multirun sweep, if any."""
    tags = [f"{key}:{metrics[key]}" for key in ("dataset", "model", "solver", "schedule", "nfe") if key in metrics]
    return {"name": outputs.name, "group": outputs.group, "tags": tags}


def _log_extras(logger, metrics: dict, images: dict[str, Path]) -> None:
    """The schedule as a table and the PNGs as images, where the logger can show them."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    sigmas = metrics.get("sigmas", [])
    images = {name: path for name, path in images.items() if Path(path).is_file()}
    if isinstance(logger, WandbLogger):
        if sigmas:
            logger.log_table("schedule", columns=["step", "sigma"], data=[[i, s] for i, s in enumerate(sigmas)])
        for name, path in images.items():
            logger.log_image(name, images=[str(path)])
    elif isinstance(logger, TensorBoardLogger):
        if sigmas:
            logger.experiment.add_text("schedule", ", ".join(f"{s:.6g}" for s in sigmas))
        import matplotlib.pyplot as plt

        for name, path in images.items():
            logger.experiment.add_image(name, plt.imread(path)[..., :3], dataformats="HWC")


def log_run(outputs, metrics: dict, images: dict[str, Path] | None = None) -> None:
    """Send the config, scalar metrics, schedule and images (name -> PNG) to every logger of `outputs`
    (a `config.plan.Outputs`: plain values).

    Called after metrics.json is written: a logger that fails is a warning, not a failed run (the results are
    safe on disk)."""
    for name, logger_cfg in outputs.loggers:
        try:
            logger = build_logger(name, logger_cfg, outputs, metrics)
            logger.log_hyperparams({**_flatten("", outputs.config, {}), "sweep_group": outputs.group or ""})
            logger.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
            _log_extras(logger, metrics, images or {})
            finish_logger(logger)
        except Exception as err:  # noqa: BLE001 - any logger failure; the results are already written
            while err.__cause__ is not None:  # hydra's instantiate wraps the logger's own error
                err = err.__cause__
            first = (str(err).strip().splitlines() or [""])[0]
            log.warning("the %s logger failed (%s: %s); the results are in %s", name, type(err).__name__, first,
                        outputs.run_dir)  # fmt: skip
            continue
        log.info("logged the run to the %s logger", name)


def build_logger(name: str, logger_cfg: dict, outputs, metrics: dict):
    """One Lightning logger; a W&B one named, tagged and grouped by `run_identity`, and offline (with a warning)
    where it could not reach its server."""
    extra = {}
    if logger_cfg["_target_"].endswith("WandbLogger"):
        identity = run_identity(outputs, metrics)
        extra = {"name": identity["name"], "group": identity["group"], "tags": identity["tags"]}
        reason = wandb_offline_reason(logger_cfg)
        if reason:
            log.warning("W&B: %s; logging offline to %s (upload later with `wandb sync`)", reason,
                        logger_cfg.get("save_dir"))  # fmt: skip
            extra["offline"] = True
    from hydra.utils import instantiate

    return instantiate(logger_cfg, **extra)


def build_loggers(outputs, metrics: dict) -> list[tuple[str, object]]:
    """The Lightning loggers of `outputs`."""
    return [(name, build_logger(name, node, outputs, metrics)) for name, node in outputs.loggers]


def wandb_offline_reason(logger_cfg) -> str | None:
    """Why an online W&B run would fail or stall (no API key, no route to the server), or None. Checked in a few
    seconds, instead of W&B's own minutes-long retries."""
    if logger_cfg.get("offline") or os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return None
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host, port = url.hostname or "api.wandb.ai", url.port or (443 if url.scheme == "https" else 80)
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has(host):
        return "no API key (run `wandb login` or set WANDB_API_KEY)"
    import socket

    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as err:
        return f"{host}:{port} cannot be reached ({err})"
    return None


def _netrc_has(host: str) -> bool:
    import netrc

    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def finish_logger(logger) -> None:
    logger.finalize("success")
    if type(logger).__name__ == "WandbLogger":  # W&B keeps a global run: close it, so nothing leaks into the next job
        import wandb

        wandb.finish()
