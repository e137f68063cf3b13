"""`task=train_features`: train the LeNet feature network on a labelled embedded dataset.

python run.py task=train_features dataset=mnist5k            # writes lenet_mnist5k.pt + training log
python run.py task=train_features dataset=mnist5k task.install=true   # also replaces the shipped weights
"""

from __future__ import annotations

import shutil

from fewstep.app.config.task_plans import build_features_plan
from fewstep.metrics.features import WEIGHTS_DIR
from fewstep.metrics.lenet import train_lenet
from fewstep.utils.logging import info
from fewstep.utils.storage import atomic_save_json, atomic_torch_save


def train_features(cfg) -> dict:
    plan = build_features_plan(cfg)
    dataset, options = plan.dataset, plan.options
    model, history = train_lenet(dataset.images, dataset.labels, log=info, **options)
    run_dir = plan.outputs.run_dir
    weights = atomic_torch_save(run_dir / f"lenet_{dataset.name}.pt", model.state_dict())
    log = {
        "dataset": dataset.fingerprint(),
        "options": options,
        "history": history,
        "command": f"python run.py task=train_features dataset={dataset.name}",
    }
    atomic_save_json(run_dir / f"lenet_{dataset.name}.json", log)
    if plan.install:
        for path in (weights, run_dir / f"lenet_{dataset.name}.json"):
            shutil.copy(path, WEIGHTS_DIR / path.name)
        info(f"installed as the shipped weights in {WEIGHTS_DIR}")
    info(f"LeNet on {dataset.name}: val accuracy {history[-1]['val_accuracy']:.4f}; weights {weights}")
    return history[-1]
