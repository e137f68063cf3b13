"""Section `threads`: a two-job joblib sweep with default threads and threads=auto."""

from __future__ import annotations

import time
from pathlib import Path

import torch


def joblib_threads(num_samples: int = 64) -> None:
    """A two-job joblib sweep with a GITS search in each job, with each job on torch's default threads (every
    core: what fewstep did before `threads`) and with `threads=auto` (cores / jobs)."""
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[1]
    print(f"\n## Threads per job: a joblib sweep of two GITS jobs at once ({torch.get_num_threads()} cores here)\n")
    print("| threads | per job | sweep wall s |")
    print("|---|---|---|")
    for value, label in ((torch.get_num_threads(), "torch's default (before)"), ("auto", "auto (after)")):
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, str(root / "run.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "schedule=gits", "solver=euler,ipndm", "nfe=5", f"num_samples={num_samples}",
                       f"threads={value}", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp}/sweep",
                       f"paths.cache_dir={tmp}/cache"]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, cwd=root, check=True, capture_output=True)
            wall = time.perf_counter() - start
        per_job = value if value != "auto" else max(1, torch.get_num_threads() // 2)
        print(f"| {label} | {per_job} | {wall:.1f} |", flush=True)
