"""Section `evaluation`: feature throughput and a whole job in 1 and 2 processes."""

from __future__ import annotations

import time
from pathlib import Path

import torch


def evaluation(data, num_processes_samples: int = 512) -> None:
    import json
    import subprocess
    import sys
    import tempfile

    from fewstep.metrics import build_features
    from fewstep.metrics.inception import default_weights

    print("\n## Evaluation\n")
    print("| feature extractor | images | seconds | images/s |")
    print("|---|---|---|---|")
    for name, count in (("lenet", 2048), ("inception", 16)):
        if name == "inception" and default_weights() is None:
            print("| inception | - | - | weights not installed |")
            continue
        net = build_features(name, data.name)
        images = data.images[:count]
        net(images[:2])  # warm-up
        start = time.perf_counter()
        with torch.no_grad():
            for chunk in images.split(64):
                net(chunk)
        seconds = time.perf_counter() - start
        print(f"| {name} | {count} | {seconds:.2f} | {count / seconds:.1f} |")

    root = Path(__file__).resolve().parents[1]
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for devices in (1, 2):
            args = [
                sys.executable,
                str(root / "run.py"),
                f"num_samples={num_processes_samples}",
                "trainer.enable_progress_bar=false",
                f"hydra.run.dir={tmp}/run{devices}",
                f"paths.cache_dir={tmp}/cache{devices}",
            ]
            if devices == 2:
                args += ["trainer=ddp", "trainer.devices=2"]
            start = time.perf_counter()
            subprocess.run(args, cwd=root, check=True, capture_output=True)
            walls[devices] = time.perf_counter() - start
            metrics = json.loads((Path(tmp) / f"run{devices}" / "metrics.json").read_text())
            walls[f"fid{devices}"] = metrics["fid"]
    print(
        f"\nWhole `run.py` job (mnist5k KDE, ipndm, NFE 5, {num_processes_samples} samples, reference "
        "solution and dataset statistics computed, imports included):\n"
    )
    print("| processes | wall s | fid |")
    print("|---|---|---|")
    for devices in (1, 2):
        print(f"| {devices} | {walls[devices]:.1f} | {walls[f'fid{devices}']:.4f} |")
    print(f"\nspeed-up of 2 processes over 1: {walls[1] / walls[2]:.2f} (a 2-core machine)")
