"""Loggers: CSV, TensorBoard and W&B (offline) at once; W&B runs are tagged, grouped per sweep, never shared."""

import subprocess
import sys

from .conftest import QUICK, ROOT, run_cli


def wandb_record(run_dir) -> bytes:
    (record,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return record.read_bytes()


def test_many_loggers_offline(tmp_path):
    env = {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wb"),
        "WANDB_CACHE_DIR": str(tmp_path / "wb"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wb"),
    }
    result = run_cli([*QUICK, "logger=many", "trainer.enable_progress_bar=false"], tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert "truncation_error" in (run_dir / "csv" / "metrics.csv").read_text()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    record = wandb_record(run_dir)
    for text in (b"truncation_error", b"solver:ipndm", b"nfe:5", b"dataset:digits", b"schedule", b"samples"):
        assert text in record, text


def test_wandb_runs_do_not_leak_between_multirun_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        *QUICK,
        "num_samples=8",
        "nfe=3,6",
        "logger=wandb",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    env = {
        **__import__("os").environ,
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wb"),
        "WANDB_CACHE_DIR": str(tmp_path / "wb"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wb"),
    }
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 2
    records = [wandb_record(job) for job in jobs]
    assert b"nfe:3" in records[0] and b"nfe:6" not in records[0]
    assert b"nfe:6" in records[1] and b"nfe:3" not in records[1]
    assert all(sweep.name.encode() in r for r in records)  # grouped by the sweep
