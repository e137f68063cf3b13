"""scripts/gpu_check.sh: ready for when a GPU is lent. Without one it says so in one line; its CPU rehearsal runs
every check with the CPU in the GPU's place (slow: about five minutes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_the_shell_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")]).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check itself runs")
def test_without_a_gpu_it_is_one_line():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "error: no CUDA GPU visible to torch here; run this on a GPU machine\n"


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_check(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--rehearse-on-cpu", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(rows) == 6 and all(r["verdict"] == "pass" for r in rows)
    assert "CPU REHEARSAL" in (tmp_path / "gpu_check.md").read_text()
