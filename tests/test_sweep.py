"""A small multirun sweep ends with a summary table and plot in the sweep directory."""

import csv
import subprocess
import sys

import pytest

from fewstep.sweep import markdown, pivot

from .conftest import ROOT


def test_pivot_and_markdown_put_solver_schedule_rows_and_nfe_columns():
    rows = [
        {"solver": "euler", "schedule": "gits", "nfe": 5, "fd": 2.0},
        {"solver": "euler", "schedule": "gits", "nfe": 4, "fd": 3.0},
        {"solver": "ipndm", "schedule": "logsnr", "nfe": 5, "fd": 1.5},
    ]
    nfes, table = pivot(rows, "fd")
    assert nfes == [4, 5] and table[("euler", "gits")] == {4: 3.0, 5: 2.0}
    text = markdown(nfes, table, "fd")
    assert "| euler | gits | 3 | 2 |" in text and "| ipndm | logsnr |  | 1.5 |" in text


def test_multirun_writes_summary_table_and_plot(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "experiment=quick",
        "num_samples=8",
        "solver=euler,ipndm",
        "nfe=3,5",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 4 and {r["solver"] for r in rows} == {"euler", "ipndm"}
    table = (sweep / "summary.md").read_text()
    assert "| solver | schedule | NFE 3 | NFE 5 |" in table and "| ipndm | polynomial |" in table
    assert (sweep / "fid_vs_nfe.png").stat().st_size > 1000


SMALL = [
    "dataset=digits",
    "num_samples=16",
    "batch_size=8",
    "eval.reference.num_steps=12",
    "trainer.enable_progress_bar=false",
]


def test_optuna_sweep_over_the_gits_coeff(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "experiment=optuna_coeff",
        *SMALL,
        "hydra.sweeper.n_trials=3",
        "schedule.num_warmup=12",
        "schedule.grid_size=21",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    best = (sweep / "optimization_results.yaml").read_text()
    assert "schedule.coeff" in best and "best_value" in best
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 3 and all(r["variant"].startswith("schedule.coeff=") for r in rows)
    assert (sweep / "summary.md").read_text().count("| ipndm | gits schedule.coeff=") == 3  # one row per trial
    assert len(list((tmp_path / "cache" / "gits" / "costs").glob("*.pt"))) == 1  # one warm-up for all trials


@pytest.mark.slow  # ~40 s: two fresh processes import Lightning; run by `make test-full`
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *SMALL,
        "solver=euler,dpmpp",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert sorted(r["solver"] for r in rows) == ["dpmpp", "euler"]
    assert "| dpmpp | polynomial |" in (sweep / "summary.md").read_text()
