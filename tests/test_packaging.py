"""The wheel carries the configs: built, installed into a fresh virtual environment, its `fewstep` console script
runs a job from an empty directory (no checkout on the path); a missing config folder is an error, not `{}`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fewstep import FewstepError

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).parent / "uv"


def find_links() -> str | None:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True,
                         text=True)  # fmt: skip
    return out.stdout.strip() or None


@pytest.mark.skipif(not UV.exists(), reason="the test installs with uv, as `make install` does where it can")
def test_the_wheel_runs_a_job_from_an_empty_directory(tmp_path):
    dist, venv, empty = tmp_path / "dist", tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    subprocess.run([str(UV), "build", "--wheel", "-q", "-o", str(dist), str(ROOT)], check=True, timeout=600)
    wheel = next(dist.glob("fewstep-*.whl"))
    shipped = {name.removeprefix("fewstep/conf/") for name in zipfile.ZipFile(wheel).namelist()
               if name.startswith("fewstep/conf/") and name.endswith(".yaml")}  # fmt: skip
    assert shipped == {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    subprocess.run([str(UV), "venv", "-q", str(venv)], check=True, timeout=120)
    links = ["--find-links", find_links()] if find_links() else []
    subprocess.run([str(UV), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *links,
                    "-c", str(ROOT / "constraints.txt"), str(wheel)], check=True, timeout=900)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FEWSTEP_ROOT")}
    env["WANDB_MODE"] = "offline"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import fewstep; print(fewstep.__file__)"], cwd=empty,
                           env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout  # the wheel's copy, not the checkout
    out = subprocess.run([str(venv / "bin" / "fewstep"), "experiment=quick"], cwd=empty, env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = Path(next(line for line in out.stdout.splitlines() if line.startswith("run_dir: "))[9:])
    assert run_dir.is_relative_to(empty / "outputs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["schedule"] == "gits" and metrics["nfe"] == 5 and metrics["fid"] > 0
    listing = subprocess.run([str(venv / "bin" / "fewstep"), "solvers"], cwd=empty, env=env, capture_output=True,
                             text=True, check=True)  # fmt: skip
    assert "| ipndm |" in listing.stdout


def test_the_configs_ship_inside_the_package():
    from fewstep.app.config.checks import config_dir

    folder = config_dir()
    assert folder.parent.name == "fewstep" and (folder / "task" / "sample.yaml").is_file()
    assert sorted(p.name for p in folder.resolve().iterdir()) == sorted(p.name for p in (ROOT / "conf").iterdir())


def test_a_missing_config_folder_is_an_error(tmp_path, monkeypatch):
    import importlib.resources

    from fewstep.app.config import checks

    shutil.copy(ROOT / "src" / "fewstep" / "__init__.py", tmp_path / "__init__.py")
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(FewstepError, match="fewstep's configs are missing"):
        checks.task_defaults("sample")
