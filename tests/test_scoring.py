"""Scoring as EDM scores: quantised images for every feature space, KID, the bootstrap spread, the distance to the
reference solution, checked against direct computations."""


import numpy as np
import pytest
import torch

from fewstep.app.shards import ShardStore
from fewstep.data import digits
from fewstep.metrics import build_features
from fewstep.metrics.evaluation import EvalSettings, Prepared, Ranks, evaluate
from fewstep.metrics.frechet import FeatureStats, bootstrap_frechet, frechet_distance, mean_cov
from fewstep.metrics.quantize import as_scored, dequantize, quantize

SINGLE = Ranks()  # this process alone, on the CPU


def test_quantize_is_edms_png_rounding_and_round_trips():
    x = torch.tensor([-3.0, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 2.5])
    expected = (x * 127.5 + 128).clip(0, 255).to(torch.uint8)  # EDM's generate.py
    assert torch.equal(quantize(x), expected)
    levels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(quantize(dequantize(levels)), levels)
    assert (as_scored(x) - x.clamp(-1, 1)).abs().max() <= 0.5 / 127.5 + 1e-7


def _stores(tmp_path, sets: dict[str, torch.Tensor]) -> dict[str, ShardStore]:
    stores = {}
    for name, images in sets.items():
        store = ShardStore(tmp_path / name)
        for chunk in torch.arange(len(images)).split(16):
            store.write(chunk, images[chunk])
        stores[name] = store
    return stores


def _evaluate(tmp_path, samples: torch.Tensor, reference: torch.Tensor, data, **settings):
    stores = _stores(tmp_path, {"samples": samples, "reference": reference})
    prepared = Prepared(build_features("lenet", "digits"), None)
    seeds = list(range(len(samples)))
    return evaluate(SINGLE, seeds, {"": stores["samples"]}, stores["reference"], data, prepared, tmp_path / "cache",
                    16, EvalSettings(bootstrap=10, kid_subsets=20, kid_subset_size=40, **settings))  # fmt: skip


@pytest.fixture(scope="module")
def data():
    return digits()


def test_out_of_range_samples_score_as_their_clipped_copy(tmp_path, data):
    g = torch.Generator().manual_seed(0)
    clean = data.images[:48]
    wild = clean * 2.5 + 0.3 * torch.randn(clean.shape, generator=g)  # pixels at -2.5 .. 3: the grid shows them clipped
    reference = clean + 0.05 * torch.randn(clean.shape, generator=g)
    raw = _evaluate(tmp_path / "raw", wild, reference, data)
    clipped = _evaluate(tmp_path / "clipped", wild.clamp(-1, 1), reference, data)
    for key in ("fid", "fid_std", "fd", "kid", "kid_std", "fid_vs_reference", "fd_vs_reference", "fid_reference"):
        assert raw[key] == clipped[key], key
    assert raw["truncation_error"] > clipped["truncation_error"]  # the truncation error keeps the raw samples
    assert raw["features"] == "lenet" and raw["kid_subset_size"] == 40


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # sqrtm of a singular product: still accurate
def test_reference_against_itself_is_zero_and_pixel_fd_matches_numpy(tmp_path, data):
    reference = data.images[100:148] + 0.02
    metrics = _evaluate(tmp_path, reference, reference, data)
    scale = float(np.trace(np.cov(as_scored(reference).flatten(1).double().numpy().T)))
    assert metrics["fid_vs_reference"] <= 1e-9 * 1e4 and metrics["fd_vs_reference"] <= 1e-12 * scale
    assert metrics["truncation_error"] == 0
    # the pixel FD, computed directly: quantised images, numpy mean / covariance, scipy's sqrtm
    from scipy import linalg

    def stats(images):
        x = quantize(images).double().numpy().reshape(len(images), -1) / 127.5 - 1
        return x.mean(0), np.cov(x, rowvar=False)

    (m1, c1), (m2, c2) = stats(reference), stats(data.images)
    root = linalg.sqrtm(c1 @ c2).real
    direct = float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))
    assert metrics["fd"] == pytest.approx(direct, rel=1e-6)


def test_kid_is_the_unbiased_mmd_when_a_subset_is_everything(tmp_path, data):
    samples = data.images[200:240]
    stores = _stores(tmp_path, {"samples": samples})
    small = type(data)("digits", data.images[:40])  # as many dataset images as samples: one subset = all of both
    prepared = Prepared(build_features("lenet", "digits"), None)
    metrics = evaluate(SINGLE, list(range(40)), {"": stores["samples"]}, None, small, prepared, tmp_path / "cache", 16,
                       EvalSettings(bootstrap=0, kid_subsets=3, kid_subset_size=40))  # fmt: skip
    net = build_features("lenet", "digits")
    x, y = net(as_scored(samples)).double(), net(as_scored(small.images)).double()
    kernel = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731 - KID's cubic polynomial kernel
    m = len(x)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    mmd = ((kxx.sum() - kxx.trace()) + (kyy.sum() - kyy.trace())) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    assert metrics["kid"] == pytest.approx(mmd.item(), rel=1e-9) and metrics["kid_std"] == pytest.approx(0, abs=1e-6)
    assert "fid_std" not in metrics and "truncation_error" not in metrics


@pytest.mark.parametrize("dim", [5, 80])  # more samples than dimensions, and fewer (the N x d route)
def test_bootstrap_is_the_fid_of_resamples_drawn_with_replacement(dim):
    g = torch.Generator().manual_seed(1)
    features = torch.randn(30, dim, generator=g, dtype=torch.float64) + 0.3
    mixing = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    mu, cov = np.full(dim, 0.1), (mixing @ mixing.T).numpy() + 0.1 * np.eye(dim)
    values = bootstrap_frechet(features, mu, cov, rounds=4, seed=7)
    again = torch.Generator().manual_seed(7)
    for value in values:
        pick = features[torch.randint(30, (30,), generator=again)]
        assert value == pytest.approx(frechet_distance(*FeatureStats(dim).update(pick).mean_cov(), mu, cov), rel=1e-10)
    assert len(set(values.tolist())) == 4


def test_mean_cov_from_sums_is_numpys():
    x = torch.randn(17, 4, dtype=torch.float64)
    mean, cov = mean_cov(17, x.sum(0), x.T @ x)
    assert np.allclose(mean, x.mean(0).numpy()) and np.allclose(cov, np.cov(x.numpy(), rowvar=False))
