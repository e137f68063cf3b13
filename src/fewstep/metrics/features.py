"""Feature maps for Fréchet distances (config group eval/features): pixels, lenet, inception.

Each is an nn.Module mapping (N, C, H, W) images in [-1, 1] to (N, dim) features, with `dim` and `identity`
(what reference statistics are keyed by).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fewstep.errors import FewstepError
from fewstep.utils.storage import file_digest

WEIGHTS_DIR = Path(__file__).parent / "weights"


class PixelFeatures(nn.Module):
    identity = name = "pixels"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(images.shape[0], -1).float()


class LeNetFeatures(nn.Module):
    def __init__(self, dataset: str, path: str | Path | None = None):
        super().__init__()
        from fewstep.metrics.lenet import LeNet

        path = Path(path) if path else WEIGHTS_DIR / f"lenet_{dataset}.pt"
        if not path.is_file():
            raise FewstepError(
                f"no LeNet feature weights for dataset {dataset!r} at {path}; train them with "
                f"`python run.py task=train_features dataset={dataset}` and pass eval.features.path=... "
                "(or use eval/features=pixels)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.net = LeNet(state["head.weight"].shape[0])
            self.net.load_state_dict(state)
        except Exception as err:
            raise FewstepError(f"cannot load LeNet weights {path} ({err}); retrain with task=train_features") from err
        self.net.eval()
        self.dim, self.name = self.net.dim, "lenet"
        self.identity = f"lenet:{file_digest(path)}"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images)


def build_features(name: str, dataset: str, path: str | None = None, allow_code: bool = False) -> nn.Module:
    """`auto` is LeNet where fewstep ships weights for the dataset (mnist5k, digits), else pixels."""
    if name == "auto":
        name = "lenet" if (path or (WEIGHTS_DIR / f"lenet_{dataset}.pt").is_file()) else "pixels"
    if name == "pixels":
        return PixelFeatures()
    if name == "lenet":
        return LeNetFeatures(dataset, path)
    if name == "inception":
        from fewstep.metrics.inception import InceptionFeatures

        return InceptionFeatures(path, allow_code)
    if name == "inception_fidelity":
        from fewstep.metrics.inception import FidelityInceptionFeatures

        return FidelityInceptionFeatures()
    raise FewstepError(
        f"unknown eval.features.name {name!r}; choose auto, pixels, lenet, inception or inception_fidelity"
    )
