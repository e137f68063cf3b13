"""What a run leaves in its folder, from plain values: config.yaml, schedule.json, metrics.json, samples.png,
the search's <method>.png (gits.png, oss.png), sigmas.txt, samples.npz and the link to its samples in the cache.
Every file is written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from fewstep.utils.logging import info
from fewstep.utils.storage import atomic_save_json, atomic_write_bytes


def write_config(run_dir: Path, config: dict) -> None:
    from omegaconf import OmegaConf

    atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(config).encode())


def write_schedule(run_dir: Path, schedule: dict, search: dict | None, denoiser=None, others=()) -> None:
    """schedule.json (the sigmas, the step plan, the search record under its method's name, and `export`: the
    sigmas for k-diffusion / ComfyUI and, for a discrete-time model, its integer timesteps), sigmas.txt (full
    precision), sigmas_k_diffusion.txt (ending in 0) and, for a search, its plot (<method>.png). `others`: the
    records of other searches sampled for comparison (`eval.also_search`), under `also_searched` and plotted too."""
    from fewstep.schedules.export import export_record

    table = denoiser.training_sigmas() if hasattr(denoiser, "training_sigmas") else None
    export = export_record(schedule["sigmas"], table)
    method = search["method"] if search else None
    compared = {"also_searched": {record["method"]: record for record in others}} if others else {}
    atomic_save_json(run_dir / "schedule.json",
                     {**schedule, "export": export, **({method: search} if search else {}), **compared})  # fmt: skip
    atomic_write_bytes(run_dir / "sigmas.txt", (", ".join(f"{s:.17g}" for s in export["sigmas"]) + "\n").encode())
    zero = ", ".join(f"{s:.17g}" for s in export["k_diffusion_sigmas"]) + "\n"
    atomic_write_bytes(run_dir / "sigmas_k_diffusion.txt", zero.encode())
    from fewstep.schedules.plot import plot_search

    for record in (record for record in (search, *others) if record):
        plot_search(record, run_dir / f"{record['method']}.png")


def write_results(run_dir: Path, grids: dict, metrics: dict) -> None:
    """samples.png (one panel per sampler, same seeds) and metrics.json, last: a run with metrics.json is done."""
    from fewstep.app.plots import save_sample_panels
    from fewstep.app.reporting import metrics_table

    save_sample_panels(grids, run_dir / "samples.png")
    atomic_save_json(run_dir / "metrics.json", metrics)
    info("metrics:\n" + metrics_table(metrics))


def link_samples(run_dir: Path, store_root: Path) -> None:
    """`run_dir/samples/<key>`: a link to the run's shards in the cache, so the run directory shows its samples."""
    link = run_dir / "samples" / store_root.name
    link.parent.mkdir(parents=True, exist_ok=True)
    store_root.mkdir(parents=True, exist_ok=True)
    if not link.exists() and not link.is_symlink():
        link.symlink_to(store_root.resolve(), target_is_directory=True)


def save_npz(path: Path, images: torch.Tensor) -> None:
    """`arr_0`: uint8 N x H x W x C, the layout of the ADM/EDM evaluation suites and clean-fid."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, images.permute(0, 2, 3, 1).contiguous().numpy())
    atomic_write_bytes(path, buffer.getvalue())
    info(f"samples.npz: {tuple(images.shape[:1]) + tuple(images.permute(0, 2, 3, 1).shape[1:])} uint8 in {path}")
