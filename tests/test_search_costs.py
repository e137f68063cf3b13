"""Every search's recorded cost is what the model was asked for: a counting denoiser sees exactly the record's
evaluations (rows, i.e. per sample; ld3 also counts one backward pass per training forward call)."""

from __future__ import annotations

import pytest
import torch

import fewstep
from fewstep.models import CountingDenoiser, GaussianDenoiser
from fewstep.models.mixture import GaussianMixtureDenoiser
from fewstep.schedules.registry import REGISTRY

SMALL = {
    "gits": {"num_warmup": 8, "grid_size": 13, "afs_batch": 3},
    "oss": {"grid_size": 13, "num_warmup": 4, "min_warmup": 4, "num_validation": 8, "validation_chunk": 4},
    "ld3": {"num_train": 4, "num_validation": 4, "grid_size": 13},
}


def test_every_shipped_search_is_covered():
    assert set(REGISTRY) == set(SMALL)


@pytest.mark.parametrize(("solver", "nfe"), [("euler", 4), ("heun", 5), ("unipc", 4)])  # heun 5: the AFS step
@pytest.mark.parametrize("method", sorted(SMALL))
def test_recorded_evaluations_are_the_model_calls_made(method, solver, nfe):
    counter = CountingDenoiser(GaussianDenoiser(torch.full((1, 3, 3), 0.3), torch.full((1, 3, 3), 0.6)))
    schedule = fewstep.search_schedule(counter, shape=(1, 3, 3), nfe=nfe, solver=solver, method=method,
                                       **SMALL[method])  # fmt: skip
    record = schedule.record
    parts = record["evaluations_by_part"]
    assert record["evaluations"] == sum(parts.values()) > 0
    backward = parts.get("train_backward", 0)  # ld3: backpropagated, not asked of the model's forward
    assert counter.rows == record["evaluations"] - backward, (method, parts)
    if method == "ld3":
        assert backward == parts["train_forward"] > 0


def test_mixture_denoiser_is_the_exact_posterior_mean():
    """Against the textbook formula (explicit inverses and multivariate-normal densities), and its single
    diagonal component against the Gaussian closed form."""
    from torch.distributions import MultivariateNormal

    mixture = GaussianMixtureDenoiser.random(5, components=3, shape=(1, 2, 3))
    x = torch.randn(4, 1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    covariances = mixture.bases @ torch.diag_embed(mixture.eigenvalues) @ mixture.bases.transpose(1, 2)
    flat = x.reshape(4, -1)
    for sigma in (0.01, 0.5, 3.0):
        noisy = covariances + sigma**2 * torch.eye(6, dtype=torch.float64)
        log_p = torch.stack([MultivariateNormal(mixture.means[k], noisy[k]).log_prob(flat) for k in range(3)], 1)
        weights = torch.softmax(log_p + mixture.log_weights, 1)
        centred = [(flat - mixture.means[k]).T for k in range(3)]
        means = torch.stack([mixture.means[k] + (covariances[k] @ torch.linalg.solve(noisy[k], centred[k])).T
                             for k in range(3)], 1)  # fmt: skip
        expected = (weights.unsqueeze(-1) * means).sum(1).reshape(x.shape)
        assert torch.allclose(mixture(x, sigma), expected, rtol=1e-10, atol=1e-12)
    std = torch.tensor([0.3, 0.7, 1.1, 0.2, 0.5, 0.9], dtype=torch.float64)
    single = GaussianMixtureDenoiser(torch.ones(1), torch.zeros(1, 6), torch.diag(std**2).unsqueeze(0), (1, 2, 3))
    gaussian = GaussianDenoiser(torch.zeros(1, 2, 3), std.reshape(1, 2, 3))
    assert torch.allclose(single(x, 0.7), gaussian(x, 0.7), rtol=1e-12)
    draws = mixture.sample(20000, torch.Generator().manual_seed(1)).reshape(20000, -1)
    mean = (mixture.log_weights.exp().unsqueeze(-1) * mixture.means).sum(0)
    assert torch.allclose(draws.mean(0), mean, atol=0.05)


TEACHER_PARTS = ("teacher", "validation_teacher", "warmup")  # GITS's teacher is its warm-up


@pytest.mark.parametrize("method", sorted(SMALL))
def test_a_cached_teacher_is_reused_and_leaves_the_schedule_as_it_is(method, tmp_path, caplog):
    """The teacher depends on the model, grid and seeds, not on the solver or NFE: a sweep runs it once. A search
    whose teacher came from the cache asks the model only for the rest (the record says how much it reused), and
    finds the schedule it finds without a cache; a damaged teacher entry is reported and run again."""
    denoiser = GaussianMixtureDenoiser.random(3, components=2, shape=(1, 3, 3))
    counter = CountingDenoiser(denoiser)

    def searched(solver, nfe, cache=None):
        counter.rows = 0
        return fewstep.search_schedule(counter, shape=(1, 3, 3), nfe=nfe, solver=solver, method=method,
                                       cache_dir=cache, cache_key="mixture", **SMALL[method]).record  # fmt: skip

    def teacher_part(record):
        return sum(record["evaluations_by_part"].get(part, 0) for part in TEACHER_PARTS)

    first = searched("euler", 4, tmp_path)
    assert teacher_part(first) > 0 and first["teacher_reused"] == 0
    cached = searched("ipndm", 5, tmp_path)
    assert teacher_part(cached) == 0 and cached["teacher_reused"] == teacher_part(first)
    assert counter.rows == cached["evaluations"] - cached["evaluations_by_part"].get("train_backward", 0)
    alone = searched("ipndm", 5)
    assert cached["sigmas"] == alone["sigmas"] and cached["path_cost"] == alone["path_cost"]
    assert alone["teacher_reused"] == 0 and alone["evaluations"] == cached["evaluations"] + cached["teacher_reused"]
    if method == "gits":  # its damaged cost matrix: tests/test_gits.py
        return
    entries = sorted((tmp_path / method / "teachers").glob("*.pt"))
    assert entries
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    again = searched("heun", 5, tmp_path)
    assert f"damaged {method} teacher cache" in caplog.text and 0 < teacher_part(again) < teacher_part(first)
    assert again["sigmas"] == searched("heun", 5)["sigmas"]
