import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from fewstep.app.command import register_resolvers

register_resolvers()
ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Fast settings shared by tests that really sample: the 8x8 digits, the polynomial schedule (no GITS warm-up, and
# so no baseline), few samples, a short reference.
QUICK = [
    "dataset=digits",
    "schedule=polynomial",
    "num_samples=24",
    "batch_size=8",
    "eval.reference.num_steps=12",
    "eval.grid_size=16",
]


@pytest.fixture(autouse=True)
def _offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "offline"))
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb"))


def compose_config(overrides, tmp_path: Path):
    """Compose conf/config.yaml as `run.py` would, with outputs and caches under tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    return lambda *overrides: compose_config(overrides, tmp_path)


def run_cli(args, tmp_path: Path, timeout=300, env_extra=None):
    """Run `python run.py ARGS` in a subprocess with its run dir and cache inside tmp_path."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        *args,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def rank_threads(processes: int = 2) -> int:
    """Torch threads of each rank of a CPU DDP run: Lightning (and torchrun) give each process cores / processes."""
    return max(1, (os.cpu_count() or 1) // processes)


def gemm_bits_depend_on_threads() -> bool:
    """Whether this CPU's float32 matrix products give other bits with 1 thread than with 2 (seen on an AVX-512
    Xeon, not on the machines before it): there, runs agree bit for bit across processes only at equal threads."""
    import torch

    from fewstep.data import digits, seeded_noise
    from fewstep.models import KDEDenoiser

    data = digits()
    denoiser, x = KDEDenoiser(data.images), seeded_noise(torch.arange(16), data.shape) * 3.0
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = denoiser(x, 3.0)
        torch.set_num_threads(1)
        return not torch.equal(two, denoiser(x, 3.0))
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist5k_problem():
    """The default data and model (mnist5k, KDE), and a Heun-100 reference from 128 held-out seeds (0..127)."""
    import torch

    from fewstep.data import mnist5k, seeded_noise
    from fewstep.models import KDEDenoiser
    from fewstep.schedules import polynomial
    from fewstep.solvers import heun

    data = mnist5k()
    denoiser = KDEDenoiser(data.images)
    seeds = torch.arange(128)
    noise = seeded_noise(seeds, data.shape)
    reference = heun(denoiser, noise * 80.0, polynomial(100, 0.002, 80.0))
    return data, denoiser, seeds, noise, reference

