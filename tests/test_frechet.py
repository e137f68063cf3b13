"""Fréchet distance and its streaming float64 statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from fewstep.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_from_stats


def correlated_features(n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / math.sqrt(dim)
    return shift + 2.0 + scale * rng.standard_normal((n, dim)) @ mixing


def direct_frechet(mu1, cov1, mu2, cov2) -> float:
    """The textbook formula with scipy's general (non-symmetric) matrix square root."""
    covmean = scipy.linalg.sqrtm(cov1 @ cov2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def moments(features: np.ndarray):
    return features.mean(0), np.cov(features, rowvar=False)


# ----------------------------------------------------------------------------------------------------
# FeatureStats
# ----------------------------------------------------------------------------------------------------


def test_streaming_stats_match_numpy():
    features = correlated_features(300, 8, seed=0, shift=5.0)  # a non-zero mean exercises the cancellation
    stats = FeatureStats(8)
    start = 0
    for size in [1, 7, 50, 2, 240]:
        stats.update(torch.from_numpy(features[start : start + size]))
        start += size
    assert start == len(features) and stats.count == len(features)
    mean, cov = stats.mean_cov()
    np_mean, np_cov = moments(features)
    np.testing.assert_allclose(mean, np_mean, atol=1e-10, rtol=0)
    np.testing.assert_allclose(cov, np_cov, atol=1e-10, rtol=0)
    assert mean.dtype == np.float64 and cov.dtype == np.float64


def test_update_flattens_and_upcasts():
    images = torch.randn((40, 2, 3, 3), generator=torch.Generator().manual_seed(1))  # float32, (N, C, H, W)
    mean, cov = FeatureStats(18).update(images).mean_cov()
    np_mean, np_cov = moments(images.reshape(40, -1).double().numpy())
    np.testing.assert_allclose(mean, np_mean, atol=1e-12, rtol=0)
    np.testing.assert_allclose(cov, np_cov, atol=1e-12, rtol=0)


def test_mean_cov_needs_two_vectors():
    stats = FeatureStats(4).update(torch.ones((1, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_cov()


# ----------------------------------------------------------------------------------------------------
# frechet_distance
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [200, 500])
def test_matches_scipy_sqrtm_formula(n):
    m1, c1 = moments(correlated_features(n, 16, seed=4))
    m2, c2 = moments(correlated_features(n, 16, seed=5, shift=0.3, scale=0.8))
    expected = direct_frechet(m1, c1, m2, c2)
    got = frechet_distance(m1, c1, m2, c2)
    assert expected > 0.1
    assert abs(got - expected) <= 1e-6 * expected, (got, expected)
    # symmetric
    assert abs(frechet_distance(m2, c2, m1, c1) - got) <= 1e-9 * got


@pytest.mark.parametrize("n", [200, 500])
def test_identical_sets_give_zero(n):
    m, c = moments(correlated_features(n, 16, seed=6))
    scale = 2 * np.trace(c)
    assert abs(frechet_distance(m, c, m, c)) < 1e-8 * scale


def test_pure_mean_shift_gives_squared_norm():
    m, c = moments(correlated_features(200, 16, seed=7))
    shift = np.random.default_rng(8).standard_normal(16)
    got = frechet_distance(m, c, m + shift, c)
    assert abs(got - shift @ shift) < 1e-8 * (shift @ shift + 2 * np.trace(c)), (got, shift @ shift)


def test_diagonal_covariances_closed_form():
    # commuting (diagonal) covariances: FD = ||mu1 - mu2||^2 + sum_i (s1_i - s2_i)^2 with stds s
    rng = np.random.default_rng(9)
    s1, s2 = rng.uniform(0.1, 2.0, 10), rng.uniform(0.1, 2.0, 10)
    mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    got = frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2))
    assert abs(got - expected) < 1e-12 * (1 + expected)


def test_from_stats_equals_from_moments():
    f1, f2 = correlated_features(150, 8, seed=10), correlated_features(90, 8, seed=11, shift=0.5)
    a, b = FeatureStats(8).update(torch.from_numpy(f1)), FeatureStats(8).update(torch.from_numpy(f2))
    expected = frechet_distance(*moments(f1), *moments(f2))
    assert math.isclose(frechet_distance_from_stats(a, b), expected, rel_tol=1e-9)


def test_rank_deficient_covariances():
    # 20 samples in 64 dimensions: both covariances have rank 19
    f1, f2 = correlated_features(20, 64, seed=12), correlated_features(20, 64, seed=13, shift=0.2)
    a, b = FeatureStats(64).update(torch.from_numpy(f1)), FeatureStats(64).update(torch.from_numpy(f2))
    assert np.linalg.matrix_rank(a.mean_cov()[1]) == 19
    fd = frechet_distance_from_stats(a, b)
    assert math.isfinite(fd) and fd > 0
    assert abs(fd - direct_frechet(*a.mean_cov(), *b.mean_cov())) <= 1e-4 * fd
    # identical rank-deficient sets: the trace term is the nuclear norm of C^(1/2) C^(1/2) = C, exact to round-off
    same = frechet_distance_from_stats(a, a)
    assert math.isfinite(same)
    assert abs(same) < 1e-12 * 2 * np.trace(a.mean_cov()[1])


def _mnist_pixel_moments(n: int = 256):
    """The covariance of n quantised MNIST images in 784-d pixel space: rank < n, constant border pixels."""
    from fewstep.data import mnist5k
    from fewstep.metrics.quantize import as_scored

    images = mnist5k().images[torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:n]]
    return moments(as_scored(images).flatten(1).double().numpy())


@pytest.mark.parametrize("case", ["same", "shift", "scale"])
def test_exact_on_rank_deficient_pixel_covariances_where_torchmetrics_errs(case):
    """Cases with exact answers on 784-d MNIST pixel statistics of 256 samples (the README's figure: torchmetrics'
    eigvals formula errs by ~2e-5 here and returns a negative distance for a set against itself)."""
    from torchmetrics.image.fid import _compute_fid

    mu, cov = _mnist_pixel_moments()
    shift, a = np.full_like(mu, 0.01), 0.9
    args, exact = {
        "same": ((mu, cov, mu, cov), 0.0),
        "shift": ((mu, cov, mu + shift, cov), float(shift @ shift)),
        "scale": ((mu, cov, a * mu, a * a * cov), float((1 - a) ** 2 * (mu @ mu + np.trace(cov)))),
    }[case]
    assert abs(frechet_distance(*args) - exact) < 1e-10
    theirs = float(_compute_fid(*(torch.from_numpy(np.asarray(v)) for v in args)))
    assert abs(theirs - exact) > 1e-6  # why fewstep keeps its own distance (metrics/frechet.py)
