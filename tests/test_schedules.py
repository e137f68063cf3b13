"""Hand-crafted schedules, explicit sigma validation and the schedule factory."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.errors import FewstepError
from fewstep.schedules import (
    SCHEDULES,
    check_range,
    logsnr,
    make_schedule,
    polynomial,
    time_quadratic,
    time_uniform,
    validate_sigmas,
)

RANGES = [(0.002, 80.0), (0.0292, 14.61)]
STEPS = (1, 2, 5, 10, 60)


@pytest.mark.parametrize("sigma_min, sigma_max", RANGES)
@pytest.mark.parametrize("num_steps", STEPS)
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_contract(name, num_steps, sigma_min, sigma_max):
    if name == "discrete" and sigma_max > 14.62:
        pytest.skip("discrete's default betas (SD 1.x) span sigma 0.0292-14.61 only (an error, tested below)")
    sigmas = SCHEDULES[name](num_steps, sigma_min, sigma_max)
    assert sigmas.shape == (num_steps + 1,)
    assert sigmas.dtype == torch.float64
    assert torch.isfinite(sigmas).all() and (sigmas > 0).all()
    assert (sigmas[1:] < sigmas[:-1]).all(), sigmas
    assert sigmas[0].item() == sigma_max and sigmas[-1].item() == sigma_min
    # a validated schedule passes its own validation
    assert torch.equal(validate_sigmas(sigmas, sigma_min, sigma_max), sigmas)


@pytest.mark.parametrize("sigma_min, sigma_max", RANGES)
def test_polynomial_rho_one_is_linspace(sigma_min, sigma_max):
    expected = torch.linspace(sigma_max, sigma_min, 11, dtype=torch.float64)
    out = polynomial(10, sigma_min, sigma_max, rho=1.0)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("rho", [3.0, 7.0])
def test_polynomial_is_uniform_in_sigma_to_the_one_over_rho(rho):
    roots = polynomial(12, 0.002, 80.0, rho=rho) ** (1 / rho)
    steps = roots[1:] - roots[:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, steps.mean().item()), atol=1e-12, rtol=0)


def test_polynomial_hand_checked_middle_value():
    sigmas = polynomial(2, 0.002, 80.0, rho=7)
    expected = ((80 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7
    assert math.isclose(sigmas[1].item(), expected, rel_tol=1e-13)


def test_polynomial_rejects_bad_rho():
    with pytest.raises(FewstepError, match="rho"):
        polynomial(5, 0.002, 80.0, rho=0.0)


@pytest.mark.parametrize("sigma_min, sigma_max", RANGES)
def test_logsnr_has_constant_ratio(sigma_min, sigma_max):
    sigmas = logsnr(20, sigma_min, sigma_max)
    ratios = sigmas[1:] / sigmas[:-1]
    expected = (sigma_min / sigma_max) ** (1 / 20)
    torch.testing.assert_close(ratios, torch.full_like(ratios, expected), atol=0, rtol=1e-12)


def _finite_difference(values: torch.Tensor, order: int) -> torch.Tensor:
    for _ in range(order):
        values = values[1:] - values[:-1]
    return values


@pytest.mark.parametrize("sigma_min, sigma_max", RANGES)
def test_vp_time_schedules_follow_the_vp_sigma_curve(sigma_min, sigma_max):
    # log(1 + sigma(t)^2) = beta_d t^2 / 2 + beta_min t is quadratic in t. time_uniform takes t linear in the
    # step index i (so log1p(sigma^2) is quadratic in i: third differences vanish), time_quadratic takes
    # sqrt(t) linear in i (degree 4 in i: fifth differences vanish, third ones do not).
    u = torch.log1p(time_uniform(30, sigma_min, sigma_max) ** 2)
    q = torch.log1p(time_quadratic(30, sigma_min, sigma_max) ** 2)
    scale = math.log1p(sigma_max**2)
    assert _finite_difference(u, 3).abs().max() < 1e-10 * scale
    assert _finite_difference(q, 5).abs().max() < 1e-10 * scale
    assert _finite_difference(q, 3).abs().max() > 1e-6 * scale


@pytest.mark.parametrize("num_steps", [2, 5, 10])
def test_time_quadratic_differs_from_time_uniform(num_steps):
    u, q = time_uniform(num_steps, 0.002, 80.0), time_quadratic(num_steps, 0.002, 80.0)
    assert torch.equal(u[[0, -1]], q[[0, -1]])
    assert (u[1:-1] - q[1:-1]).abs().min() > 1e-3
    # the quadratic skip spends more steps at low noise
    assert (q[1:-1] < u[1:-1]).all()


def test_schedules_differ_from_each_other():
    results = {name: fn(8, 0.0292, 14.61) for name, fn in SCHEDULES.items()}  # a range every schedule takes
    names = sorted(results)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(results[a], results[b]), (a, b)


# ----------------------------------------------------------------------------------------------------
# validate_sigmas
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[80, 10, 1, 0.002], [80, 1, 0], [1.0, 0.0]])
def test_validate_accepts(values):
    sigmas = validate_sigmas(values, sigma_min=0.002, sigma_max=80.0)
    assert sigmas.dtype == torch.float64
    assert sigmas.tolist() == [float(v) for v in values]


def test_validate_accepts_tensor_and_tolerates_rounding_at_the_range_ends():
    sigmas = validate_sigmas(torch.tensor([80.0 * (1 + 1e-9), 1.0, 0.002 * (1 - 1e-9)]), 0.002, 80.0)
    assert len(sigmas) == 3


@pytest.mark.parametrize(
    "values, message",
    [
        ([80, 10, 10, 1], "strictly decreasing"),
        ([1, 10, 80], "strictly decreasing"),
        ([80, 1, 0.5, 1], "strictly decreasing"),
        ([80, -1], "positive"),
        ([80, 1, -0.5], "positive"),
        ([80, float("nan"), 1], "finite"),
        ([float("inf"), 1], "finite"),
        ([80, 0, 0], "positive"),  # only a *final* 0 is allowed
        ([80], "at least 2"),
        ([], "at least 2"),
        ([100, 10, 1], "above the model's sigma_max"),
        ([80, 10, 0.001], "below the model's sigma_min"),
        ([80, 10, 0.001, 0], "below the model's sigma_min"),
    ],
)
def test_validate_rejects(values, message):
    with pytest.raises(FewstepError, match=message):
        validate_sigmas(values, sigma_min=0.002, sigma_max=80.0)


def test_validate_without_range_only_checks_shape_of_the_list():
    assert validate_sigmas([1000.0, 1e-5]).tolist() == [1000.0, 1e-5]


# ----------------------------------------------------------------------------------------------------
# make_schedule and check_range
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_make_schedule_matches_direct_call(name):
    assert torch.equal(make_schedule(name, 7, 0.0292, 14.61), SCHEDULES[name](7, 0.0292, 14.61))


def test_make_schedule_passes_options():
    out = make_schedule("polynomial", 6, 0.002, 80.0, rho=3.0)
    assert torch.equal(out, polynomial(6, 0.002, 80.0, rho=3.0))
    assert not torch.equal(out, polynomial(6, 0.002, 80.0))
    out = make_schedule("time_uniform", 6, 0.002, 80.0, epsilon_s=1e-2)
    assert not torch.equal(out, time_uniform(6, 0.002, 80.0))


def test_make_schedule_rejects_unknown_name():
    with pytest.raises(FewstepError, match="unknown schedule 'karras'"):
        make_schedule("karras", 5, 0.002, 80.0)


@pytest.mark.parametrize("name, option", [("logsnr", "rho"), ("polynomial", "rh0"), ("time_uniform", "rho")])
def test_make_schedule_rejects_unknown_option(name, option):
    with pytest.raises(FewstepError, match=option):
        make_schedule(name, 5, 0.002, 80.0, **{option: 7.0})


@pytest.mark.parametrize("sigma_min", [0.0, -0.002, float("nan"), float("inf")])
def test_check_range_rejects_bad_sigma_min(sigma_min):
    with pytest.raises(FewstepError, match="sigma_min must be a positive"):
        check_range(5, sigma_min, 80.0)


@pytest.mark.parametrize("sigma_max", [0.002, 0.001, float("inf"), float("nan")])
def test_check_range_rejects_sigma_max_not_above_sigma_min(sigma_max):
    with pytest.raises(FewstepError, match="sigma_max must be larger"):
        check_range(5, 0.002, sigma_max)


@pytest.mark.parametrize("num_steps", [0, -3, 2.5])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_reject_bad_num_steps(name, num_steps):
    with pytest.raises(FewstepError, match="at least 1 step"):
        SCHEDULES[name](num_steps, 0.002, 80.0)


def test_discrete_schedule_is_uniform_in_the_model_timesteps():
    from fewstep.models.vp import discrete_sigmas, sigma_to_t
    from fewstep.schedules import discrete
    from fewstep.schedules.handcrafted import discrete_betas

    sigmas = discrete(6, 0.0292, 14.61)
    abar = torch.cumprod(1 - discrete_betas(0.00085, 0.012, "scaled_linear", 1000), 0)
    t = sigma_to_t(discrete_sigmas(abar).log(), sigmas)
    assert torch.allclose(t.diff(), t.diff()[0].expand(6), atol=1e-6) and t[0] > 998.9
    with pytest.raises(FewstepError, match="span sigma in .* the model's range is \\[0.002, 80\\]"):
        discrete(6, 0.002, 80.0)
