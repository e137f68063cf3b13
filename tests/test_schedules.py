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
    if name in ("discrete", "ays") and sigma_max > 14.62:
        pytest.skip(f"{name}'s defaults (SD 1.x) span sigma 0.0292-14.61 only (an error, tested below)")
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


# ---------------------------------------------------------------------------------------------------------------
# beta, kl_optimal and Align Your Steps: equal to diffusers' and the publications' values


@pytest.mark.parametrize("num_steps", [1, 4, 10, 25])
@pytest.mark.parametrize("alpha, beta_", [(0.6, 0.6), (0.5, 0.7), (2.0, 1.0)])
@pytest.mark.parametrize("sigma_min, sigma_max", RANGES)
def test_beta_equals_diffusers_beta_sigmas(num_steps, alpha, beta_, sigma_min, sigma_max):
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler()
    theirs = scheduler._convert_to_beta(torch.tensor([sigma_max, sigma_min], dtype=torch.float64), num_steps + 1,
                                        alpha=alpha, beta=beta_)  # fmt: skip
    ours = make_schedule("beta", num_steps, sigma_min, sigma_max, alpha=alpha, beta=beta_, space="sigma")
    assert torch.allclose(ours, torch.as_tensor(theirs, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("sigma_min, sigma_max", RANGES)
def test_a_uniform_beta_is_time_uniform_in_vp_time_and_linear_in_sigma(sigma_min, sigma_max):
    uniform = {"alpha": 1.0, "beta": 1.0}
    in_time = make_schedule("beta", 9, sigma_min, sigma_max, **uniform)  # space=vp_time, the default
    assert torch.allclose(in_time, time_uniform(9, sigma_min, sigma_max), rtol=1e-12, atol=0)
    in_sigma = make_schedule("beta", 9, sigma_min, sigma_max, space="sigma", **uniform)
    assert torch.allclose(in_sigma, polynomial(9, sigma_min, sigma_max, rho=1.0), rtol=1e-12, atol=0)


def test_beta_refuses_a_bad_shape_parameter():
    with pytest.raises(FewstepError, match="schedule.alpha .* must be a positive number, got 0"):
        make_schedule("beta", 5, 0.002, 80.0, alpha=0)
    with pytest.raises(FewstepError, match="schedule.space must be vp_time or sigma, got 'time'"):
        make_schedule("beta", 5, 0.002, 80.0, space="time")


@pytest.mark.parametrize("num_steps", [1, 5, 10, 40])
def test_kl_optimal_is_uniform_in_arctan_sigma(num_steps):
    import numpy as np

    sigmas = make_schedule("kl_optimal", num_steps, 0.002, 80.0)
    t = np.linspace(0, 1, num_steps + 1)
    expected = np.tan((1 - t) * np.arctan(80.0) + t * np.arctan(0.002))  # the AYS paper's closed form, float64
    assert np.allclose(sigmas.numpy(), expected, rtol=1e-12, atol=0)
    # ComfyUI's kl_optimal (float32, the final 0 aside) agrees to float32 round-off
    n = num_steps + 1
    idx = torch.arange(n, dtype=torch.float).div_(n - 1)
    comfy = (idx * math.atan(0.002) + (1 - idx) * math.atan(80.0)).tan_()
    assert torch.allclose(sigmas.float(), comfy, rtol=1e-5)


def loglinear_interp(t_steps, num_steps):
    """The AYS paper's how-to (NVIDIA's page; ComfyUI copies it): log-linear interpolation of decreasing sigmas."""
    import numpy as np

    xs = np.linspace(0, 1, len(t_steps))
    ys = np.log(t_steps[::-1])
    return np.exp(np.interp(np.linspace(0, 1, num_steps), xs, ys))[::-1].copy()


@pytest.mark.parametrize("table", ["sd15", "sdxl", "svd"])
@pytest.mark.parametrize("num_steps", [4, 6, 10, 16, 30])
def test_ays_is_the_published_table_and_its_log_linear_interpolation(table, num_steps):
    import numpy as np

    from fewstep.schedules.handcrafted import AYS_TABLES

    published = AYS_TABLES[table]
    sigmas = make_schedule("ays", num_steps, published[-1], published[0], table=table).numpy()
    expected = np.array(published) if num_steps == 10 else loglinear_interp(published, num_steps + 1)
    assert np.allclose(sigmas, expected, rtol=1e-12, atol=0)


def test_ays_diffusers_tables_are_diffusers_values_and_the_how_to_tables_differ_from_them():
    """diffusers' AysSchedules (the project page's 3-decimal tables) end with 0, a final step to zero; the how-to
    page's full-precision tables (ComfyUI's) differ from them in the third decimal for SD 1.5 and SDXL."""
    from diffusers.schedulers import AysSchedules

    from fewstep.schedules.handcrafted import AYS_TABLES

    for ours, theirs in (("sd15", "StableDiffusionSigmas"), ("sdxl", "StableDiffusionXLSigmas")):
        published = AysSchedules[theirs]
        sigmas = make_schedule("ays", 10, 0.0291671582, 14.615, table=f"{ours}_diffusers").tolist()
        assert sigmas[:10] == published[:10] and published[10] == 0.0
        assert max(abs(a - b) for a, b in zip(published[:10], AYS_TABLES[ours][:10], strict=True)) > 1e-3
    svd = AysSchedules["StableDiffusionVideoSigmas"]
    assert AYS_TABLES["svd"][:10] == svd[:10]


def test_ays_ends_are_the_models_range_and_other_ranges_are_refused():
    sigmas = make_schedule("ays", 10, 0.0292, 14.61)  # model=stable_diffusion's configured (rounded) range
    assert sigmas[0].item() == 14.61 and sigmas[-1].item() == 0.0292
    assert sigmas[1].item() == 6.4745760956
    with pytest.raises(FewstepError, match=r"^schedule=ays: the Stable Diffusion 1.5 table spans sigma 14.6146 -> "
                                           r"0.0291672, but this model's range is \[0.002, 80\]; the published "):
        make_schedule("ays", 10, 0.002, 80.0)
    with pytest.raises(FewstepError, match="schedule.table must be one of"):
        make_schedule("ays", 10, 0.0292, 14.61, table="sd3")

