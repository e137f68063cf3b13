"""Sweep summaries (the README's own sweep commands run in tests/test_readme.py) and the joblib launcher."""

import csv
import subprocess
import sys

import pytest

from fewstep.app.sweep import floor, markdown, pivot

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
        "schedule=polynomial",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert sorted(r["solver"] for r in rows) == ["dpmpp", "euler"]
    assert "| dpmpp | polynomial |" in (sweep / "summary.md").read_text()


def test_summary_of_a_sweep_directory(tmp_path):
    """summarize() on job folders as a sweep leaves them: tables per metric, plots, and the sample comparison."""
    import json

    import torch

    from fewstep.app.shards import ShardStore
    from fewstep.app.sweep import summarize

    for number, (solver, schedule, nfe, fid) in enumerate([("euler", "gits", 4, 30.0), ("euler", "polynomial", 4, 50.0),
                                                           ("euler", "gits", 6, 20.0)]):  # fmt: skip
        job = tmp_path / f"{number}_{solver}_{schedule}_nfe{nfe}"
        metrics = {"solver": solver, "schedule": schedule, "nfe": nfe, "fid": fid, "fid_std": 2.0, "seed": 0,
                   "truncation_error": fid / 10, "truncation_error_std": 0.1, "fid_reference": 10.0,
                   "fid_reference_std": 1.0, "num_samples": 4, "features": "lenet", "model": "kde",
                   "dataset": "digits", "sigmas": [80.0, 0.002]}  # fmt: skip
        (job / "samples" / "key").mkdir(parents=True)
        (job / "metrics.json").write_text(json.dumps(metrics))
        ShardStore(job / "samples" / "key").write(torch.arange(4), torch.rand(4, 1, 8, 8) * 2 - 1)
    summarize(tmp_path, ["fid", "truncation_error"])
    text = (tmp_path / "summary.md").read_text()
    assert "| euler | gits | **30 ± 2** | **20 ± 2** |" in text and "| euler | polynomial | 50 ± 2 |  |" in text
    assert "| floor | reference solution | 10 ± 1 | 10 ± 1 |" in text  # the reference solution's FID
    assert "| floor | reference solution | 0 | 0 |" in text  # its truncation error is 0 by definition
    assert "4 samples per job (seeds from 0), FID in the lenet feature space, model kde on digits" in text
    for name in ("fid_vs_nfe.png", "truncation_error_vs_nfe.png", "samples_compare.png", "summary.csv"):
        assert (tmp_path / name).stat().st_size > 100, name
