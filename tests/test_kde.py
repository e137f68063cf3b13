"""KDEDenoiser: the optimal denoiser of the empirical distribution, D(x, sigma) = sum_i softmax_i(...) y_i."""

from __future__ import annotations

import pytest
import torch

from fewstep.data import digits
from fewstep.models import KDEDenoiser

SHAPE = (1, 6, 6)


def naive_kde(x: torch.Tensor, sigma, data: torch.Tensor) -> torch.Tensor:
    """Dense float64 reference: softmax over -||x - y_i||^2 / (2 sigma^2), times the data."""
    xs = x.reshape(x.shape[0], -1).double()
    ys = data.reshape(data.shape[0], -1).double()
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
    sq_dist = ((xs[:, None, :] - ys[None, :, :]) ** 2).sum(-1)
    weights = torch.softmax(-sq_dist / (2 * sigma**2), dim=1)
    return (weights @ ys).reshape(x.shape)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return 0.3 + 0.5 * torch.randn((300, *SHAPE), generator=g, dtype=torch.float64)


def queries(data: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    """Noisy data points at level sigma (the inputs a sampler feeds) plus a few far-away points."""
    g = torch.Generator().manual_seed(seed)
    near = data[:12] + sigma * torch.randn((12, *SHAPE), generator=g, dtype=torch.float64)
    far = 3 * sigma * torch.randn((4, *SHAPE), generator=g, dtype=torch.float64)
    return torch.cat([near, far])


# float32 tolerance: the logits (q.y - |y|^2/2) / sigma^2 are rounded with relative error ~6e-8 on terms
# of size |q||y| ~ 10 here, i.e. an absolute logit error up to ~2.4e-6 at sigma = 0.5 (inv_var = 4). That
# perturbs the weights by the same relative amount, so the output (a convex combination of values of size ~2)
# moves by at most ~5e-6, plus ~1e-7 for rounding the result. Measured: <= 2.8e-7. A wrong kernel is off
# by >1e-2.
FLOAT32_ATOL = 1e-5


@pytest.mark.parametrize("sigma", [0.5, 2.0, 10.0, 80.0])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_dense_float64_reference(data, sigma, dtype):
    x = queries(data, sigma)
    expected = naive_kde(x, sigma, data)
    # 300 = 4 x 64 + 44: several chunks, a ragged last one
    kde = KDEDenoiser(data, chunk_size=64, dtype=dtype)
    x_in = x if dtype == "float64" else x.float()
    out = kde(x_in, sigma)
    assert out.dtype == x_in.dtype and out.shape == x.shape
    atol = 1e-10 if dtype == "float64" else FLOAT32_ATOL
    torch.testing.assert_close(out.double(), expected, atol=atol, rtol=0)


@pytest.mark.parametrize("chunk_size", [7, 300, 4096])
def test_chunk_size_does_not_change_the_result(data, chunk_size):
    x = queries(data, 0.7)
    reference = KDEDenoiser(data, chunk_size=64, dtype="float64")(x, 0.7)
    out = KDEDenoiser(data, chunk_size=chunk_size, dtype="float64")(x, 0.7)
    torch.testing.assert_close(out, reference, atol=1e-12, rtol=0)


def test_large_sigma_gives_the_data_mean(data):
    # as sigma -> inf the weights become uniform: D -> mean of the data
    x = torch.zeros((3, *SHAPE), dtype=torch.float64)
    out = KDEDenoiser(data, chunk_size=64, dtype="float64")(x, 1e6)
    torch.testing.assert_close(out, data.mean(0, keepdim=True).expand_as(out), atol=1e-9, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stable_at_sigma_min(data, dtype):
    g = torch.Generator().manual_seed(2)
    kde = KDEDenoiser(data, chunk_size=64, dtype=dtype)
    idx = torch.arange(0, 300, 15)
    x = (data[idx] + 1e-4 * torch.randn((len(idx), *SHAPE), generator=g, dtype=torch.float64)).to(dtype)
    out = kde(x, 0.002)
    assert torch.isfinite(out).all()
    # the nearest data point takes all the weight (the next one is > 1e4 sigma^2 further in squared distance)
    torch.testing.assert_close(out.double(), data[idx], atol=1e-4, rtol=0)
    # inputs far from every data point (pure sigma_max noise) must not overflow either
    far = (80 * torch.randn((8, *SHAPE), generator=g)).to(dtype)
    out_far = kde(far, 0.002)
    assert torch.isfinite(out_far).all()
    assert out_far.abs().max() <= data.abs().max() + 1e-5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_per_sample_sigma_equals_row_by_row(data, dtype):
    sigmas = torch.tensor([0.002, 0.05, 0.3, 1.0, 2.5, 10.0, 80.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x = data[: len(sigmas)] + sigmas.reshape(-1, 1, 1, 1) * torch.randn(
        (len(sigmas), *SHAPE), generator=g, dtype=torch.float64
    )
    kde = KDEDenoiser(data, chunk_size=64, dtype=dtype)
    x = x.to(kde.points.dtype)
    batched = kde(x, sigmas)
    rows = torch.cat([kde(x[i : i + 1], sigmas[i].item()) for i in range(len(sigmas))])
    atol = 1e-12 if dtype == "float64" else 1e-6
    torch.testing.assert_close(batched, rows, atol=atol, rtol=0)
    # and it really is per sample: one shared sigma gives something else
    assert not torch.allclose(batched, kde(x, 1.0), atol=1e-3)
    reference = naive_kde(x, sigmas, data)
    atol = 1e-10 if dtype == "float64" else FLOAT32_ATOL
    torch.testing.assert_close(batched.double(), reference, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def digit_images():
    return digits().images


@pytest.mark.parametrize("sigma", [0.5, 10.0, "per-sample"])
def test_batch_invariance_is_bit_exact(digit_images, sigma):
    # Without the padding of the rows to a multiple of 16 (kde.py, _ROW_BLOCK) MKL picks another GEMM kernel
    # for small batches and the results differ by ~1e-6 at sigma = 0.5 and ~1e-7 at sigma = 10 (checked by
    # patching _ROW_BLOCK = 1).
    # (At sigma = 0.002 the weights are one-hot and every batching agrees trivially, so it is not tested.)
    # 1797 points: 4 chunks, a ragged last one
    kde = KDEDenoiser(digit_images, chunk_size=512, dtype="float32")
    g = torch.Generator().manual_seed(4)
    if sigma == "per-sample":
        sigma = torch.logspace(-1, 1, 64, dtype=torch.float64)
        noise_level = sigma.reshape(-1, 1, 1, 1).float()
    else:
        noise_level = sigma
    x = digit_images[100:164] + noise_level * torch.randn((64, *digit_images.shape[1:]), generator=g)

    def part(lo, hi):
        return kde(x[lo:hi], sigma[lo:hi] if isinstance(sigma, torch.Tensor) else sigma)

    full = part(0, 64)
    by7 = torch.cat([part(i, i + 7) for i in range(0, 64, 7)])
    by1 = torch.cat([part(i, i + 1) for i in range(64)])
    assert torch.isfinite(full).all()
    assert torch.equal(full, by7)
    assert torch.equal(full, by1)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0, 20.0])
def test_mean_shift_identity_and_weights(data, sigma):
    kde = KDEDenoiser(data, chunk_size=64, dtype="float64")
    x = queries(data, sigma)
    w = kde.weights(x, sigma)
    assert w.shape == (len(x), len(data))
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(len(x), dtype=torch.float64), atol=1e-12, rtol=0)
    expected = (w @ data.reshape(len(data), -1)).reshape(x.shape)
    torch.testing.assert_close(kde(x, sigma), expected, atol=1e-12, rtol=0)


def test_weights_are_one_hot_on_a_data_point_at_small_sigma(data):
    kde = KDEDenoiser(data, chunk_size=64, dtype="float32")
    w = kde.weights(data[[5, 17, 250]].float(), 0.002)
    assert torch.isfinite(w).all()
    assert w.argmax(1).tolist() == [5, 17, 250]
    torch.testing.assert_close(w.max(1).values, torch.ones(3), atol=1e-6, rtol=0)
