"""Section `determinism`: how far samples and metrics move with the batch size and the number of processes."""

from __future__ import annotations

from pathlib import Path

import torch

from fewstep.data import seeded_noise
from fewstep.models import KDEDenoiser
from fewstep.schedules import polynomial


def determinism(data, num_samples: int = 256) -> None:
    """How far samples and metrics move with the batch size and the number of processes (README, Determinism)."""
    import json
    import subprocess
    import sys
    import tempfile

    from fewstep.models import load_unet
    from fewstep.models.denoiser import bind_seeds, for_seeds
    from fewstep.solvers import ipndm

    print("\n## Determinism\n")
    print("Samples of seeds 0..63 (ipndm, NFE 5, polynomial), batch 7 against batch 64: max |difference|.\n")
    print("| model | evaluation | max abs difference |")
    print("|---|---|---|")
    sigmas = polynomial(5, 0.002, 80.0)
    seeds = torch.arange(64)
    models = {"kde (mnist5k)": KDEDenoiser(data.images), "unet_mnist5k": load_unet("unet_mnist5k.pt")}
    for name, model in models.items():
        for label, bind in (("fixed 16-row blocks (fewstep)", bind_seeds), ("plain batches", None)):
            if bind is None and name.startswith("kde"):
                continue  # the KDE pads its own products: it has no plain variant
            outs = []
            for batch in (7, 64):
                parts = []
                for chunk in seeds.split(batch):
                    x = seeded_noise(chunk, data.shape) * 80.0
                    den = bind(model, chunk, "cpu") if bind else for_seeds(model, chunk)
                    with torch.no_grad():
                        parts.append(ipndm(den, x, sigmas))
                outs.append(torch.cat(parts))
            print(f"| {name} | {label} | {(outs[0] - outs[1]).abs().max().item():.3g} |")

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        metrics = {}
        for devices in (1, 2):
            args = [sys.executable, str(root / "run.py"), f"num_samples={num_samples}",
                    "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp}/run{devices}",
                    f"paths.cache_dir={tmp}/cache{devices}"]  # fmt: skip
            if devices == 2:
                args += ["trainer=ddp", "trainer.devices=2"]
            subprocess.run(args, cwd=root, check=True, capture_output=True)
            metrics[devices] = json.loads((Path(tmp) / f"run{devices}" / "metrics.json").read_text())
    one, two = metrics[1], metrics[2]
    rows = [(k, abs(two[k] - v) / max(abs(v), 1e-300)) for k, v in one.items()
            if isinstance(v, float) and k != "sampling_seconds"]  # fmt: skip
    rows.sort(key=lambda kv: -kv[1])
    print(
        f"\nThe default job ({num_samples} samples, GITS warm-up included), 2 processes (`trainer=ddp`) against 1: "
        "relative difference of each metric, largest first.\n"
    )
    print("| metric | relative difference |")
    print("|---|---|")
    for key, rel in rows[:8]:
        print(f"| {key} | {rel:.2g} |")
    print(f"\nlargest: {rows[0][1]:.2g} ({rows[0][0]}); searched sigmas identical: {one['sigmas'] == two['sigmas']}")
