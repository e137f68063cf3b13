"""The denoiser protocol: D(x, sigma) -> x0_hat in the EDM/VE convention x = x0 + sigma * eps."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """A callable estimating E[x0 | x] at noise level sigma (a float, or a tensor broadcastable per sample)."""

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor: ...


def sigma_column(sigma: float | torch.Tensor, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Sigma as a (batch, 1) column, whether given as a number, a 0-d tensor or one value per sample."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=device).reshape(-1, 1)
    return s.expand(batch, 1).to(dtype) if s.shape[0] == 1 else s.to(dtype)


def for_seeds(denoiser, seeds: torch.Tensor):
    """The denoiser for one batch of seeds. A conditional model (class labels, prompts) defines `for_seeds` and
    picks each sample's condition from its seed, so samples do not depend on batching or the number of ranks."""
    bind = getattr(denoiser, "for_seeds", None)
    return bind(seeds) if bind is not None else denoiser


def decode(denoiser, x: torch.Tensor) -> torch.Tensor:
    """Samples as images: a latent model defines `decode` (its VAE); any other model samples images directly."""
    dec = getattr(denoiser, "decode", None)
    return dec(x) if dec is not None else x


class CountingDenoiser:
    """Wraps a denoiser and counts its calls: the NFE a sampler really spent."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.denoiser(x, sigma)
