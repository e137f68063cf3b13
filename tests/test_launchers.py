"""External launchers: torchrun (and SLURM) ranks agree on one run directory without hydra.run.dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fewstep.app.command import STAMP_FORMAT, run_stamp

from .conftest import ROOT


def test_run_stamp_is_shared_by_the_ranks_of_one_launch(tmp_path, monkeypatch):
    from datetime import datetime

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    one = run_stamp({})
    datetime.strptime(one, STAMP_FORMAT)  # one process: its own clock, as DATE/TIME
    launch = {"TORCHELASTIC_RUN_ID": "abc", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    first = run_stamp({**launch, "RANK": "0"})
    time.sleep(0.01)
    assert run_stamp({**launch, "RANK": "1"}) == first
    stale = tmp_path / "fewstep-stamp-torchrun-old"
    stale.write_text("2000-01-01/00-00-00-000000")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    old = {"TORCHELASTIC_RUN_ID": "old", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1"}
    assert run_stamp(old, wait_seconds=0.2) == "torchrun-old/run"  # an earlier launch's stamp is not taken
    nodes = {"TORCHELASTIC_RUN_ID": "xyz", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "3"}
    assert run_stamp(nodes) == "torchrun-xyz/run"  # several nodes share no file: the launch id names the run
    slurm = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4", "SLURM_NNODES": "2", "SLURM_PROCID": "2"}
    assert run_stamp(slurm) == "slurm-77-0/run"


@pytest.mark.slow  # 40 s; the default suite keeps DDP through the README's trainer=ddp and GITS on two processes,
# and torchrun's run naming through test_run_stamp_is_shared_by_the_ranks_of_one_launch
def test_torchrun_writes_one_run_dir_whose_fid_equals_one_process(tmp_path):
    """The README's torchrun command as written (no hydra.run.dir), from a working directory of its own; then the
    one-process run of the same config in the same directory."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "run.py"), "num_samples=64",
               "trainer.devices=2", "trainer.strategy=ddp"]  # fmt: skip
    two = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    runs = sorted((tmp_path / "outputs" / "runs").glob("*/*"))
    assert len(runs) == 1, runs  # both ranks wrote into one folder
    cache = tmp_path / "outputs" / "cache"
    for kind in ("samples", "reference"):  # samples are cached by key: set the 2-process ones aside, so it samples
        (cache / kind).rename(cache / f"{kind}_two_processes")
    # torchrun gives each rank one thread; the one-process run gets the same (some CPUs' float32 matrix products
    # give other bits with other thread counts: conftest.gemm_bits_depend_on_threads)
    one = subprocess.run([sys.executable, str(ROOT / "run.py"), "num_samples=64"], cwd=tmp_path,
                         env={**env, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    (single,) = [r for r in sorted((tmp_path / "outputs" / "runs").glob("*/*")) if r != runs[0]]
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (runs[0], single))
    assert a["world_size"] == 2 and b["world_size"] == 1
    assert a["sigmas"] == b["sigmas"]
    assert abs(a["fid"] - b["fid"]) <= 1e-9 * abs(b["fid"]), (a["fid"], b["fid"])
    # a new step count from the cached cost matrix: a DP on rank 0, broadcast before any prediction made the group
    search = subprocess.run([*command[:4], str(ROOT / "run.py"), "task=search", "nfe=6", "trainer.devices=2",
                             "trainer.strategy=ddp"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert search.returncode == 0, search.stderr[-3000:]
    assert "GITS cost matrix reused" in search.stdout + search.stderr
    (searched,) = [r for r in (tmp_path / "outputs" / "runs").glob("*/*") if r not in (runs[0], single)]
    assert json.loads((searched / "schedule.json").read_text())["gits"]["num_steps"] == 6


def test_threads_split_the_cores_between_parallel_jobs(make_cfg, monkeypatch):
    import pytest
    import torch
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from fewstep import FewstepError
    from fewstep.app import command

    monkeypatch.setattr("fewstep.app.config.checks.available_cores", lambda: 8)
    before = torch.get_num_threads()

    def threads(*overrides, multirun=True):
        cfg = make_cfg(*overrides)
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.mode = "MULTIRUN" if multirun else "RUN"
        HydraConfig().set_config(cfg)
        return command.set_threads(cfg)

    try:
        assert threads("hydra/launcher=joblib", "hydra.launcher.n_jobs=2") == 4 and torch.get_num_threads() == 4
        assert threads("hydra/launcher=joblib", "hydra.launcher.n_jobs=-1") == 1  # joblib's -1: every core a job
        assert threads("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", multirun=False) is None  # one run
        assert threads("hydra/launcher=local_jobs", "hydra.launcher.cpus_per_task=3") == 3
        assert threads("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=6") == 6  # overridden
        with pytest.raises(FewstepError, match="threads must be auto or a positive integer"):
            threads("threads=0")
    finally:
        torch.set_num_threads(before)


def test_ddp_inside_a_sweep_only_with_a_launcher_that_starts_the_ranks(make_cfg):
    import pytest
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from fewstep import FewstepError
    from fewstep.app.config.build import check_run

    def check(*overrides):
        cfg = make_cfg("trainer=ddp", *overrides)
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.mode = "MULTIRUN"
        HydraConfig().set_config(cfg)
        check_run(cfg)

    with pytest.raises(FewstepError, match="needs a launcher that starts the ranks itself"):
        check("hydra/launcher=joblib")
    check("hydra/launcher=slurm", "hydra.launcher.tasks_per_node=2")  # SLURM starts one task per rank: allowed


def test_the_wandb_sweep_drives_run_py_with_valid_overrides(make_cfg):
    import itertools

    import yaml

    spec = yaml.safe_load((ROOT / "sweeps" / "wandb.yaml").read_text())
    assert spec["program"] == "run.py" and spec["command"][-1] == "${args_no_hyphens}"
    grid = {key: value.get("values", [value.get("value")]) for key, value in spec["parameters"].items()}
    for combination in itertools.product(*grid.values()):  # every job's overrides compose into a valid config
        cfg = make_cfg(*(f"{key}={value}" for key, value in zip(grid, combination, strict=True)))
        assert cfg.solver.name == combination[0] and cfg.schedule.name == combination[1]
