"""Stands in for EDM's network classes in pickles made by the tests (importable as tests.edm_stub)."""

import pickle

import torch
from torch import nn


def write_edm_pickle(path, net: nn.Module):
    """A file laid out like EDM's network pickles: a dict with the network under "ema"."""
    with open(path, "wb") as f:
        pickle.dump({"ema": net, "augment_pipe": None}, f)
    return path


class TinyEDMNet(nn.Module):
    """net(x, sigma, class_labels) = D with the attributes EDM's networks define; D shrinks x towards a fixed image."""

    def __init__(self, resolution: int = 8, channels: int = 1, label_dim: int = 0):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = resolution, channels, label_dim
        self.sigma_min, self.sigma_max = 0.002, 80.0
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, sigma, class_labels=None):
        out = self.scale * x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)
        if class_labels is not None:
            out = out + class_labels.argmax(1).reshape(-1, 1, 1, 1).to(x.dtype)
        return out
