"""Exact denoiser for Gaussian data N(mean, diag(std^2)), whose probability-flow ODE has a closed form."""

from __future__ import annotations

import torch
from torch import nn


class GaussianDenoiser(nn.Module):
    """D(x, sigma) = mean + std^2 / (std^2 + sigma^2) * (x - mean), exact for data ~ N(mean, diag(std^2)).

    `mean` and `std` have the shape of one sample (C, H, W) or broadcast to it.
    """

    rows_independent = True  # each row's result does not depend on the other rows (see models.denoiser)

    def fingerprint(self) -> None:
        """None: a closed form is identified by its data (part of every cache key), not by weights."""
        return None

    def __init__(self, mean: torch.Tensor | float = 0.0, std: torch.Tensor | float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("var", torch.as_tensor(std, dtype=torch.float64) ** 2)

    @classmethod
    def fit(cls, data: torch.Tensor, **_) -> GaussianDenoiser:
        """The Gaussian with the per-pixel mean and variance of `data` (N, C, H, W)."""
        data = data.double()
        return cls(data.mean(0), data.std(0, unbiased=False))

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        s2 = _per_sample(sigma, x) ** 2
        out = self.mean + self.var / (self.var + s2) * (x.double() - self.mean)
        return out.to(x.dtype)

    def ode_solution(self, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
        """Exact probability-flow ODE map x(sigma_from) -> x(sigma_to).

        dx/dsigma = (x - D)/sigma = sigma/(var + sigma^2) (x - mean), so
        x(sigma) - mean = sqrt((var + sigma^2) / (var + sigma_from^2)) (x(sigma_from) - mean).
        """
        scale = ((self.var + sigma_to**2) / (self.var + sigma_from**2)).sqrt()
        return (self.mean + scale * (x.double() - self.mean)).to(x.dtype)


def _per_sample(sigma: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    return s.reshape(-1, *([1] * (x.dim() - 1))) if s.dim() else s
