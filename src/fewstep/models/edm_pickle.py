"""EDM network pickles (NVlabs/edm `*.pkl`, the checkpoints of the GITS paper's main tables).

A pickle runs code while it loads: the file names classes (EDM's `training.networks.EDMPrecond`, `torch_utils`,
`dnnlib`) that Python imports and calls. fewstep loads one only with an explicit `allow_pickle=true`, for files
the user trusts, and needs EDM's code importable (`PYTHONPATH=/path/to/edm`).

The network EDM saves under "ema" is already a denoiser in the EDM convention: net(x, sigma, class_labels) = D.
"""

from __future__ import annotations

import pickle

import torch
from torch import nn

from fewstep.errors import FewstepError
from fewstep.models.denoiser import sigma_per_sample
from fewstep.models.hub import resolve_pretrained

RISK = (
    "An EDM .pkl is a Python pickle: loading it runs code named inside the file, with your permissions. "
    "Load only files you trust (e.g. downloaded from nvlabs-fi-cdn.nvidia.com yourself)"
)


class EDMNetwork(nn.Module):
    """An EDM network as D(x, sigma), class-conditional through `for_seeds` (label = labels[seed % len])."""

    def __init__(self, net: nn.Module, labels: list[int] | None = None, onehot: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.num_classes = int(getattr(net, "label_dim", 0) or 0)
        self.labels = labels
        self.onehot = onehot
        self.sigma_range = (float(getattr(net, "sigma_min", 0.0)), float(getattr(net, "sigma_max", float("inf"))))
        resolution = getattr(net, "img_resolution", None)
        channels = getattr(net, "img_channels", None)
        self.image_shape = (int(channels), int(resolution), int(resolution)) if resolution and channels else None

    def for_seeds(self, seeds: torch.Tensor) -> EDMNetwork:
        if not self.num_classes:
            return self
        labels = self.labels or list(range(self.num_classes))
        index = torch.tensor([labels[int(s) % len(labels)] for s in seeds], dtype=torch.long)
        return EDMNetwork(self.net, self.labels, torch.eye(self.num_classes)[index])

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        sigma = sigma_per_sample(sigma, x.shape[0], torch.float32, x.device)
        labels = None
        if self.num_classes:
            if self.onehot is None:
                raise FewstepError("this EDM network is class-conditional: sample through fewstep (labels per seed)")
            labels = self.onehot.to(x.device)
        return self.net(x.float(), sigma, labels).to(x.dtype)


def load_edm_pickle(path: str, allow_pickle: bool = False, class_labels: list[int] | None = None,
                    key: str = "ema") -> EDMNetwork:  # fmt: skip
    """The network stored under `key` in an EDM pickle, wrapped as a denoiser; refused without `allow_pickle`."""
    if not allow_pickle:
        raise FewstepError(
            f"refusing to unpickle {path}. {RISK}. If you trust it, set model.denoiser.allow_pickle=true; EDM's code "
            "must be importable (git clone https://github.com/NVlabs/edm and add it to PYTHONPATH)"
        )
    local = resolve_pretrained(path, "model.denoiser.path")
    if local.is_dir():
        raise FewstepError(f"model.denoiser.path={local} is a directory; give the .pkl file")
    try:
        with open(local, "rb") as f:
            blob = pickle.load(f)
    except ModuleNotFoundError as err:
        raise FewstepError(
            f"{local} needs the Python module {err.name!r}, which is not importable: the pickle refers to EDM's code. "
            "Clone https://github.com/NVlabs/edm and run with PYTHONPATH=/path/to/edm"
        ) from err
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, IndexError, OSError, RuntimeError) as err:
        raise FewstepError(f"{local} is not a readable pickle ({type(err).__name__}: {err}); it may be damaged: "
                           "download it again") from err  # fmt: skip
    net = blob.get(key) if isinstance(blob, dict) else None
    if not isinstance(net, nn.Module):
        found = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
        raise FewstepError(f"{local} has no network under {key!r} (found {found}); EDM pickles hold 'ema'")
    labels = [int(v) for v in class_labels] if class_labels else None
    classes = int(getattr(net, "label_dim", 0) or 0)
    if labels and not classes:
        raise FewstepError(f"model.denoiser.class_labels={labels}, but {local} is unconditional: set it to null")
    if labels and not all(0 <= v < classes for v in labels):
        raise FewstepError(f"model.denoiser.class_labels={labels}: {local} has classes 0..{classes - 1}")
    return EDMNetwork(net.eval().requires_grad_(False), labels)
