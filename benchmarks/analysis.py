"""Section `analysis`: wall time and memory of `task=analyze`."""

from __future__ import annotations

import time
from pathlib import Path


def analysis(num_samples: int = 256, num_steps: int = 100) -> None:
    import resource
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, str(root / "run.py"), "task=analyze", f"task.num_samples={num_samples}",
                f"task.num_steps={num_steps}", f"hydra.run.dir={tmp}/run"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(args, cwd=root, check=True, capture_output=True)
        wall = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        stored = sum(p.stat().st_size for p in (Path(tmp) / "run" / "trajectories").glob("*.npz")) / 2**20
    print(f"\n## Trajectory analysis ({num_samples} trajectories x {num_steps} heun steps, mnist5k KDE)\n")
    print("| wall s (imports included) | peak RSS MiB (largest child process) | trajectories on disk MiB |")
    print("|---|---|---|")
    print(f"| {wall:.1f} | {peak_mib:.0f} | {stored:.0f} |")
