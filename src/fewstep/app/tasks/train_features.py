"""`task=train_features`: train the LeNet feature network on a labelled embedded dataset.

python run.py task=train_features dataset=mnist5k            # writes lenet_mnist5k.pt + training log
python run.py task=train_features dataset=mnist5k task.install=true   # also replaces the shipped weights
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fewstep.app.config.build import build_dataset
from fewstep.errors import FewstepError
from fewstep.metrics.features import WEIGHTS_DIR
from fewstep.metrics.lenet import train_lenet
from fewstep.utils.logging import info
from fewstep.utils.storage import atomic_save_json, atomic_torch_save


def train_features(cfg) -> dict:
    dataset = build_dataset(cfg)
    if dataset.labels is None:
        raise FewstepError(f"dataset {dataset.name!r} has no labels; LeNet features need a labelled dataset")
    options = {k: cfg.task[k] for k in ("epochs", "batch_size", "lr", "seed")}
    model, history = train_lenet(dataset.images, dataset.labels, log=info, **options)
    run_dir = Path(cfg.paths.output_dir)
    weights = atomic_torch_save(run_dir / f"lenet_{dataset.name}.pt", model.state_dict())
    log = {
        "dataset": dataset.fingerprint(),
        "options": options,
        "history": history,
        "command": f"python run.py task=train_features dataset={dataset.name}",
    }
    atomic_save_json(run_dir / f"lenet_{dataset.name}.json", log)
    if cfg.task.install:
        for path in (weights, run_dir / f"lenet_{dataset.name}.json"):
            shutil.copy(path, WEIGHTS_DIR / path.name)
        info(f"installed as the shipped weights in {WEIGHTS_DIR}")
    info(f"LeNet on {dataset.name}: val accuracy {history[-1]['val_accuracy']:.4f}; weights {weights}")
    return history[-1]
