"""Fréchet distance from float64 statistics, and its bootstrap spread.

The trace term tr((C1 C2)^(1/2)) is the nuclear norm of C1^(1/2) C2^(1/2): its singular values are found to
~1e-16 of the largest, where the eigenvalues of C1 C2 (torchmetrics, pytorch-fid) or of C1^(1/2) C2 C1^(1/2) lose
half their digits near zero. On 784-d MNIST pixel covariances from 256 samples (rank-deficient) both of those err by
~2e-5 (torchmetrics returns -2e-5 for a set against itself); this form errs by < 1e-12 (tests/test_frechet.py).
"""

from __future__ import annotations

import numpy as np
import torch


class FeatureStats:
    """Running count, sum and sum of outer products of feature vectors, in float64."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, features: torch.Tensor) -> FeatureStats:
        f = features.detach().reshape(features.shape[0], -1).to(torch.float64).cpu()
        self.count += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f
        return self

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        return mean_cov(self.count, self.total, self.outer)


def mean_cov(count: int, total: torch.Tensor, outer: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64 numpy) from a count, a sum and a sum of outer products."""
    count = int(count)
    if count < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, have {count}")
    mean = total.detach().double().cpu() / count
    cov = (outer.detach().double().cpu() - count * torch.outer(mean, mean)) / (count - 1)
    return mean.numpy(), cov.numpy()


def sqrt_psd(matrix) -> np.ndarray:
    """The symmetric square root of a covariance. Eigenvalues within round-off of 0 (|v| < d eps max v) are 0: the
    square root of a round-off eigenvalue (~1e-16) would add ~1e-8 per null direction of a rank-deficient
    covariance."""
    matrix = np.asarray(matrix, dtype=np.float64)
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    tolerance = len(values) * np.finfo(np.float64).eps * max(float(values.max(initial=0.0)), 0.0)
    return (vectors * np.sqrt(np.where(values > tolerance, values, 0.0))) @ vectors.T


def frechet_distance(mu1, cov1, mu2, cov2, root2: np.ndarray | None = None) -> float:
    """||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2)); `root2` = sqrt_psd(cov2) when it is reused."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    cov1, cov2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    root2 = sqrt_psd(cov2) if root2 is None else root2
    trace_sqrt = np.linalg.svd(sqrt_psd(cov1) @ root2, compute_uv=False).sum()
    diff = mu1 - mu2
    distance = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)
    return max(distance, 0.0)  # a distance; round-off can dip a hair below 0


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


def frechet_distance_of_features(features: np.ndarray, mu, cov, root: np.ndarray) -> float:
    """The Fréchet distance of a feature set (N, d) to (mu, cov), `root` = sqrt_psd(cov). With fewer samples than
    dimensions the trace term is the nuclear norm of X C^(1/2) / sqrt(N - 1) (X: the centred features), the same
    singular values as C_X^(1/2) C^(1/2) from an N x d matrix instead of two d x d decompositions."""
    n, d = features.shape
    if n > d:
        return frechet_distance(features.mean(0), np.cov(features, rowvar=False), mu, cov, root2=root)
    mean = features.mean(0)
    centred = features - mean
    trace_sqrt = np.linalg.svd(centred @ root, compute_uv=False).sum() / np.sqrt(n - 1)
    diff = mean - np.asarray(mu, dtype=np.float64)
    distance = float(diff @ diff + (centred**2).sum() / (n - 1) + np.trace(cov) - 2 * trace_sqrt)
    return max(distance, 0.0)


def bootstrap_frechet(features: torch.Tensor, mu, cov, rounds: int, seed: int = 0) -> np.ndarray:
    """Fréchet distances of `rounds` bootstrap resamples (same size, with replacement, a fixed generator) of the
    per-sample `features` (N, d) to fixed statistics (mu, cov): their standard deviation is the standard error of
    the distance at N samples. The features must be in a fixed order (seed order) for a reproducible result."""
    f = features.detach().double().cpu()
    n = f.shape[0]
    root = sqrt_psd(cov)
    generator = torch.Generator().manual_seed(seed)
    picks = [torch.randint(n, (n,), generator=generator) for _ in range(int(rounds))]
    return np.array([frechet_distance_of_features(f[pick].numpy(), mu, cov, root) for pick in picks])
