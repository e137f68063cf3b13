"""Sweep summaries (the README's own sweep commands run in tests/test_readme.py) and the joblib launcher."""

import csv
import subprocess
import sys

import pytest

from fewstep.sweep import floor, markdown, pivot

from .conftest import ROOT


def test_pivot_and_markdown_put_solver_schedule_rows_and_nfe_columns():
    rows = [
        {"solver": "euler", "schedule": "gits", "nfe": 5, "fid": 2.0, "fid_std": 0.25, "fid_reference": 1.0},
        {"solver": "euler", "schedule": "gits", "nfe": 4, "fid": 3.0, "fid_std": 0.5, "fid_reference": 1.0},
        {"solver": "ipndm", "schedule": "logsnr", "nfe": 5, "fid": 1.25, "fid_std": 0.125, "fid_reference": 1.0},
        {"solver": "ipndm", "schedule": "gits", "nfe": 5, "fid": 1.0, "variant": "seed=1"},
        {"solver": "ipndm", "schedule": "gits", "nfe": 5, "fid": 2.0, "variant": "seed=1"},  # two jobs, one cell
    ]
    nfes, table = pivot(rows, "fid")
    assert nfes == [4, 5] and table[("euler", "gits")] == {4: (3.0, 0.5), 5: (2.0, 0.25)}
    assert table[("ipndm", "gits seed=1")][5] == (1.5, pytest.approx(0.7071, rel=1e-3))  # mean and std over jobs
    text = markdown(nfes, table, "fid", floor(rows, "fid"))
    assert "| euler | gits | **3 ± 0.5** | 2 ± 0.25 |" in text  # the best of each column in bold
    assert "| ipndm | logsnr |  | **1.25 ± 0.12** |" in text and "| floor | reference solution | 1 | 1 |" in text


SMALL = [
    "dataset=digits",
    "num_samples=16",
    "batch_size=8",
    "eval.reference.num_steps=12",
    "trainer.enable_progress_bar=false",
]


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
