"""Exact denoiser for a Gaussian mixture with full covariances: a held-out closed form nobody tuned a search on.

For data ~ sum_k pi_k N(mu_k, S_k), the noisy data at sigma is sum_k pi_k N(mu_k, S_k + sigma^2 I) and

    D(x, sigma) = sum_k w_k(x) [mu_k + S_k (S_k + sigma^2 I)^-1 (x - mu_k)],
    w_k(x) proportional to pi_k N(x; mu_k, S_k + sigma^2 I),

computed in each component's eigenbasis (S_k = U diag(lam) U^T), in float64.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fewstep.models.denoiser import sigma_column


class GaussianMixtureDenoiser(nn.Module):
    rows_independent = True

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor, image_shape=None):
        super().__init__()
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        covariances = torch.as_tensor(covariances, dtype=torch.float64)
        k, d = means.shape
        if weights.shape != (k,) or covariances.shape != (k, d, d):
            raise ValueError(f"a mixture of {k} components in {d} dimensions needs weights ({k},) and covariances "
                             f"({k}, {d}, {d}); got {tuple(weights.shape)} and {tuple(covariances.shape)}")  # fmt: skip
        eigenvalues, bases = torch.linalg.eigh(0.5 * (covariances + covariances.transpose(1, 2)))
        self.register_buffer("log_weights", (weights / weights.sum()).log())
        self.register_buffer("means", means)
        self.register_buffer("eigenvalues", eigenvalues.clamp_min(0.0))
        self.register_buffer("bases", bases)
        self.image_shape = tuple(image_shape) if image_shape is not None else (d,)

    @classmethod
    def random(cls, seed: int, components: int = 8, shape=(1, 8, 8), spread: float = 1.0) -> GaussianMixtureDenoiser:
        """A mixture drawn from `seed`: means N(0, spread^2), each covariance a random rotation of eigenvalues
        log-uniform in [1e-3, 1] x spread^2 / 4 (thin, correlated clusters), Dirichlet(2) weights."""
        generator = torch.Generator().manual_seed(int(seed))
        d = math.prod(shape)
        means = torch.randn(components, d, generator=generator, dtype=torch.float64) * spread
        rotations = torch.linalg.qr(torch.randn(components, d, d, generator=generator, dtype=torch.float64))[0]
        scales = 10 ** (-3 * torch.rand(components, d, generator=generator, dtype=torch.float64)) * spread**2 / 4
        covariances = rotations @ torch.diag_embed(scales) @ rotations.transpose(1, 2)
        weights = torch._standard_gamma(torch.full((components,), 2.0, dtype=torch.float64), generator=generator)
        return cls(weights, means, covariances, image_shape=shape)

    def fingerprint(self) -> None:
        return None

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        batch = x.shape[0]
        flat = x.reshape(batch, -1).double()
        variance = sigma_column(sigma, batch, torch.float64, x.device) ** 2  # (B, 1)
        offsets = torch.einsum("bd,kde->bke", flat, self.bases) - torch.einsum("kd,kde->ke", self.means, self.bases)
        total = self.eigenvalues.unsqueeze(0) + variance.unsqueeze(-1)  # (B, K, D): S_k + sigma^2 in the eigenbasis
        log_density = -0.5 * ((offsets**2 / total).sum(-1) + total.log().sum(-1))
        weights = torch.softmax(self.log_weights + log_density, dim=1)  # (B, K)
        shrunk = offsets * (self.eigenvalues.unsqueeze(0) / total)  # S (S + sigma^2)^-1 (x - mu), eigenbasis
        component_means = self.means.unsqueeze(0) + torch.einsum("bke,kde->bkd", shrunk, self.bases)
        out = (weights.unsqueeze(-1) * component_means).sum(1)
        return out.reshape(x.shape).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws from the mixture (float64), shaped like the image."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        draws = self.means[k] + torch.einsum("nd,ned->ne", z * self.eigenvalues[k].sqrt(), self.bases[k])
        return draws.reshape(n, *self.image_shape)
