"""Every command the README shows, run exactly as written, in order, from a fresh copy of the repository (the
tracked files, as a clone has them): a later command may use what an earlier one wrote (the U-Net trained, then
sampled). Only size overrides (`SIZES`) are appended. Commands that need a file that is not here (a real
checkpoint, published statistics) run too and must stop with one clear error line that names what is missing.

`make run` is `python run.py` (also in the list) after the install, and `make test` is what CI runs; neither is
re-run here (the install would point the shared virtual environment at the temporary copy).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

README = ROOT / "README.md"
# what may be appended: sizes only, never a path or a directory (tests must not hide a needed override)
SIZES = {"num_samples": "24", "task.steps": "20", "hydra.sweeper.n_trials": "2"}
# commands that need what is not here, and the words their error must contain
NEEDS_FILES = {"/data/": "/data/"}


def readme_commands() -> list[list[str]]:
    """argv of every `python ...` line in the README's bash blocks (continuation lines joined, comments cut)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["python"]:
                commands.append(argv)
    return commands


def with_sizes(argv: list[str]) -> list[str]:
    """`python` is this interpreter; a run.py command gets the size overrides that apply to it (Hydra takes the
    last value given, so a size the README sets is overridden, never removed)."""
    if argv[1] != "run.py":
        return [sys.executable, *argv[1:]]
    task = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("task=")), "sample")
    applies = {"num_samples": task != "train", "task.steps": task == "train",
               "hydra.sweeper.n_trials": any("optuna" in arg for arg in argv)}  # fmt: skip
    return [sys.executable, *argv[1:], *(f"{key}={value}" for key, value in SIZES.items() if applies[key])]


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    """The tracked files (and new ones not ignored), as a clone would hold them; no outputs, no caches."""
    copy = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


COMMANDS = readme_commands()


def test_the_readme_shows_the_commands_it_documents():
    text = " ".join(" ".join(argv) for argv in COMMANDS)
    for needed in ("run.py -m", "hydra/launcher=joblib", "experiment=optuna_coeff", "trainer=ddp", "task=analyze",
                   "task=search", "task=train", "eval.save_npz=true", "model=unet_mnist5k"):  # fmt: skip
        assert needed in text, needed


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(argv[1:])[:80] for argv in COMMANDS])
def test_readme_command_runs_as_written(argv, fresh_copy):
    env = {k: v for k, v in os.environ.items() if k != "FEWSTEP_ROOT"}
    env["PYTHONWARNINGS"] = "ignore"
    result = subprocess.run(with_sizes(argv), cwd=fresh_copy, env=env, capture_output=True, text=True, timeout=900)
    missing = next((words for marker, words in NEEDS_FILES.items() if any(marker in arg for arg in argv)), None)
    if missing is not None:  # a real checkpoint or published statistics: not here, so a clear error
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr and missing in result.stderr.strip().splitlines()[-1]
        return
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    check_outputs(argv, result.stdout, fresh_copy)


def check_outputs(argv: list[str], stdout: str, root: Path) -> None:
    """What the README promises each kind of command leaves behind."""
    if "-m" in argv:
        (sweep,) = sorted((root / "outputs" / "multiruns").glob("*/*"), key=lambda p: p.stat().st_mtime)[-1:]
        summary = (sweep / "summary.md").read_text()
        assert "±" in summary and "| floor | reference solution |" in summary and "samples per job" in summary
        assert (sweep / "samples_compare.png").stat().st_size > 1000
        assert (sweep / "fid_vs_nfe.png").is_file() and (sweep / "truncation_error_vs_nfe.png").is_file()
        rows = list(csv.DictReader(open(sweep / "summary.csv")))
        if "experiment=optuna_coeff" in argv:  # one row per trial, one warm-up for all of them
            assert "best_value" in (sweep / "optimization_results.yaml").read_text()
            assert len(rows) == 2 and all(row["variant"].startswith("schedule.coeff=") for row in rows)
        return
    if "-m" in argv or not stdout.strip().splitlines()[-1].startswith("run_dir: "):
        return
    run_dir = Path(stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    task = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("task=")), "sample")
    if task != "sample":
        return
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("fid", "fid_std", "kid", "kid_std", "fid_vs_reference", "truncation_error"):
        assert key in metrics, key
    assert "| schedule " in stdout and "floor: " in stdout
    if "eval.save_npz=true" in argv:
        import numpy as np

        images = np.load(run_dir / "samples.npz")["arr_0"]
        assert images.dtype == np.uint8 and images.shape == (metrics["num_samples"], 28, 28, 1)
    if len(argv) == 2:  # the default job: GITS against its baseline on the same seeds
        assert metrics["schedule"] == "gits" and metrics["baseline_schedule"] == "polynomial"
        assert "baseline_fid" in metrics and (run_dir / "gits.png").is_file()
