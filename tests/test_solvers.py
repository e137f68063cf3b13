"""ODE solvers: convergence order on the exact Gaussian ODE, AFS, NFE accounting, callbacks, edge cases.

Reference problem: data N(mean, diag(std^2)) with a non-zero mean image of shape (1, 4, 4) and std spread over
[0.1, 0.7]. Its denoiser is exact (GaussianDenoiser) and so is its probability-flow ODE map (`ode_solution`),
so the error of a solver against the closed form is pure discretisation error (float64 throughout).
"""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.errors import FewstepError
from fewstep.models import CountingDenoiser, GaussianDenoiser, KDEDenoiser
from fewstep.schedules import logsnr, polynomial
from fewstep.solvers import SOLVERS, dpm, euler, heun, ipndm, nfe_of, plan_steps, spendable_nfes

SHAPE = (1, 4, 4)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
SOLVER_NAMES = sorted(name for name, spec in SOLVERS.items() if not spec.stochastic)  # stochastic: test_sde.py


def gaussian_problem(seed: int = 0, batch: int = 3):
    """(denoiser, x at sigma_max) for a Gaussian with a non-zero mean and std in [0.1, 0.7]."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.linspace(-0.8, 0.6, 16, dtype=torch.float64).reshape(SHAPE)
    std = torch.linspace(0.1, 0.7, 16, dtype=torch.float64)[torch.randperm(16, generator=g)].reshape(SHAPE)
    x = SIGMA_MAX * torch.randn((batch, *SHAPE), generator=g, dtype=torch.float64)
    return GaussianDenoiser(mean, std), x


def rel_err(out: torch.Tensor, exact: torch.Tensor) -> float:
    return ((out - exact).norm() / exact.norm()).item()


def log2_slopes(errs: list[float]) -> list[float]:
    return [math.log2(a / b) for a, b in zip(errs, errs[1:], strict=False)]


@pytest.fixture(scope="module")
def problem():
    return gaussian_problem()


# ----------------------------------------------------------------------------------------------------
# Convergence order on the exact Gaussian ODE, from sigma = 80 to 0.002
# ----------------------------------------------------------------------------------------------------

CONVERGENCE_NS = (16, 32, 64, 128)


def errors_on_schedule(fn, schedule, denoiser, x, **options) -> list[float]:
    exact = denoiser.ode_solution(x, SIGMA_MAX, SIGMA_MIN)
    return [rel_err(fn(denoiser, x, schedule(n, SIGMA_MIN, SIGMA_MAX), **options), exact) for n in CONVERGENCE_NS]


@pytest.mark.parametrize("schedule", [polynomial, logsnr], ids=["polynomial", "logsnr"])
@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2), ("dpm", 2)])
def test_convergence_order(problem, schedule, name, order):
    # Measured log2(err(N)/err(2N)) for N = 16, 32, 64 -> 2N (seed 0):
    #   polynomial: euler 0.94 0.97 0.98 | heun 2.10 2.05 2.02 | dpm 2.08 2.04 2.02
    #   logsnr:     euler 0.94 0.97 0.99 | heun 2.13 2.06 2.03 | dpm 2.08 2.04 2.02
    # The pre-asymptotic deviation roughly halves with each doubling and is <= 0.031 at N = 64 -> 128;
    # a tolerance of 0.08 leaves a >2x margin, yet a solver one order off (slope ~1 vs 2) fails by far.
    denoiser, x = problem
    errs = errors_on_schedule(SOLVERS[name].fn, schedule, denoiser, x)
    slopes = log2_slopes(errs)
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False)), errs
    assert abs(slopes[-1] - order) < 0.08, (errs, slopes)
    assert SOLVERS[name].order == order


@pytest.mark.parametrize("schedule", [polynomial, logsnr], ids=["polynomial", "logsnr"])
def test_ipndm_is_second_order_on_nonuniform_schedules(problem, schedule):
    # iPNDM is only ~2nd order here, for two reasons that both give a global O(h^2) error:
    #  * its Adams-Bashforth coefficients assume equal steps; on a smoothly graded schedule consecutive steps
    #    differ by a factor 1 + O(h), which puts an O(h^3) error into every step;
    #  * the first steps (order 1, 2, 3 while the slope buffer fills) carry O(h^2), O(h^3), ... local errors.
    # Measured slopes for N = 16, 32, 64 -> 2N: polynomial 2.17 2.13 2.04, logsnr 2.07 2.08 2.03.
    denoiser, x = problem
    errs = errors_on_schedule(ipndm, schedule, denoiser, x)
    slopes = log2_slopes(errs)
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False)), errs
    assert 1.8 < slopes[-1] < 2.4, (errs, slopes)


# On a grid uniform in sigma, with the slope buffer warm-started by exact past slopes, iPNDM is the textbook
# Adams-Bashforth method of order max_order.
UNIFORM_A, UNIFORM_B = 3.0, 0.5
UNIFORM_NS = (64, 128, 256, 512)


def uniform_grid_errors(denoiser, x_start, max_order: int, warm: bool) -> list[float]:
    exact = denoiser.ode_solution(x_start, UNIFORM_A, UNIFORM_B)
    errs = []
    for n in UNIFORM_NS:
        sigmas = torch.linspace(UNIFORM_A, UNIFORM_B, n + 1, dtype=torch.float64)
        h = (UNIFORM_A - UNIFORM_B) / n
        history = []
        if warm:
            for k in range(max_order - 1, 0, -1):  # oldest (largest sigma) first
                s_k = UNIFORM_A + k * h
                x_k = denoiser.ode_solution(x_start, UNIFORM_A, s_k)
                history.append((x_k - denoiser(x_k, s_k)) / s_k)
        out = ipndm(denoiser, x_start, sigmas, max_order=max_order, history=history)
        errs.append(rel_err(out, exact))
    return errs


@pytest.fixture(scope="module")
def uniform_start(problem):
    denoiser, x = problem
    return denoiser, denoiser.ode_solution(x, SIGMA_MAX, UNIFORM_A)


@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
def test_ipndm_full_order_on_uniform_grid_with_history(uniform_start, max_order):
    # Measured slopes for N = 64, 128, 256 -> 2N (seeds 0-2 agree to +-0.01):
    #   max_order 1: 1.00 1.00 1.00 | 2: 1.95 1.97 1.99 | 3: 2.89 2.94 2.97 | 4: 3.80 3.89 3.95
    # (for order 4, N = 8..64 gives 2.9 3.3 3.6: the h^5 term is large, hence the large N). The deviation
    # roughly halves per doubling; 0.1 is about twice the worst measured deviation at N = 256 -> 512.
    denoiser, x_start = uniform_start
    errs = uniform_grid_errors(denoiser, x_start, max_order, warm=True)
    slopes = log2_slopes(errs)
    assert abs(slopes[-1] - max_order) < 0.1, (errs, slopes)
    if max_order > 1:  # approaching the order from below, monotonically
        assert all(a < b <= max_order + 0.02 for a, b in zip(slopes, slopes[1:], strict=False)), slopes


def test_ipndm_history_is_what_gives_full_order(uniform_start):
    # Without the warm start the first (Euler) step alone costs O(h^2) globally. Measured for max_order 4
    # without history: slopes 3.01 2.43 2.12 (drifting to 2); at N = 512 the error is 3.5e-8 cold vs 1.5e-9
    # warm-started (23x), and the gap doubles with every further doubling of N.
    denoiser, x_start = uniform_start
    cold = uniform_grid_errors(denoiser, x_start, 4, warm=False)
    warm = uniform_grid_errors(denoiser, x_start, 4, warm=True)
    assert log2_slopes(cold)[-1] < 2.6
    assert cold[-1] > 10 * warm[-1], (cold, warm)


def test_ipndm_uses_only_the_newest_history_entries(problem):
    denoiser, x = problem
    sigmas = polynomial(6, SIGMA_MIN, SIGMA_MAX)
    newest = torch.full_like(x, 0.3)
    junk = torch.full_like(x, 1e6)
    a = ipndm(denoiser, x, sigmas, max_order=2, history=[junk, newest])
    b = ipndm(denoiser, x, sigmas, max_order=2, history=[newest])
    c = ipndm(denoiser, x, sigmas, max_order=2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # max_order=1 is plain Euler, whatever the history (same maths, different operation order)
    first_order = ipndm(denoiser, x, sigmas, max_order=1, history=[junk])
    torch.testing.assert_close(first_order, euler(denoiser, x, sigmas), atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------
# AFS
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_afs_with_exact_prior_changes_nothing(problem, name):
    denoiser, x = problem
    prior = GaussianDenoiser(denoiser.mean.clone(), denoiser.var.sqrt())
    sigmas = polynomial(8, SIGMA_MIN, SIGMA_MAX)
    fn = SOLVERS[name].fn
    with_afs = fn(denoiser, x, sigmas, afs=prior)
    torch.testing.assert_close(with_afs, fn(denoiser, x, sigmas), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_afs_answers_exactly_the_first_call(problem, name):
    denoiser, x = problem
    wrong_prior = GaussianDenoiser(0.0, 0.5)  # ignores the data mean: a visibly different first step
    sigmas = polynomial(6, SIGMA_MIN, SIGMA_MAX)
    infos = []
    out = SOLVERS[name].fn(denoiser, x, sigmas, afs=wrong_prior, callback=infos.append)
    assert torch.equal(infos[0]["denoised"], wrong_prior(x, SIGMA_MAX))
    if name != "unipc":  # UniPC reuses the evaluation at its predicted point after correcting x (by design)
        assert torch.equal(infos[1]["denoised"], denoiser(infos[1]["x"], infos[1]["sigma"]))
    assert not torch.allclose(out, SOLVERS[name].fn(denoiser, x, sigmas), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Shared contract of every solver in SOLVERS
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_shape_and_dtype_preserved(problem, name, dtype):
    denoiser, x = problem
    x = x[:2].to(dtype)
    out = SOLVERS[name].fn(denoiser, x, polynomial(5, SIGMA_MIN, SIGMA_MAX))
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.isfinite(out).all()


@pytest.fixture(scope="module")
def kde():
    g = torch.Generator().manual_seed(1)
    data = torch.randn((200, *SHAPE), generator=g)
    noise = SIGMA_MAX * torch.randn((5, *SHAPE), generator=g)
    return KDEDenoiser(data, chunk_size=64), data, noise


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_deterministic(kde, name):
    denoiser, _, x = kde
    sigmas = polynomial(6, SIGMA_MIN, SIGMA_MAX)
    assert torch.equal(SOLVERS[name].fn(denoiser, x, sigmas), SOLVERS[name].fn(denoiser, x, sigmas))


@pytest.mark.parametrize("denoise_to_zero", [False, True])
@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("num_steps", [1, 4])
@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_counted_nfe_matches_nfe_of(problem, name, num_steps, afs, denoise_to_zero):
    denoiser, x = problem
    spec = SOLVERS[name]
    counting = CountingDenoiser(denoiser)
    if denoise_to_zero:  # num_steps steps in all, the last one to sigma = 0
        sigmas = torch.cat([polynomial(num_steps, 0.5, SIGMA_MAX)[:-1], torch.zeros(1, dtype=torch.float64)])
    else:
        sigmas = polynomial(num_steps, SIGMA_MIN, SIGMA_MAX)
    assert len(sigmas) == num_steps + 1
    out = spec.fn(counting, x, sigmas, afs=GaussianDenoiser(0.0, 0.5) if afs else None)
    assert torch.isfinite(out).all()
    assert counting.calls == nfe_of(spec, num_steps, afs, denoise_to_zero)


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_no_nan_on_kde_down_to_sigma_min(kde, name):
    denoiser, data, x = kde
    out = SOLVERS[name].fn(denoiser, x, polynomial(10, SIGMA_MIN, SIGMA_MAX))
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # the trajectory ends near the data, not at the scale of the initial noise
    assert out.abs().max() < data.abs().max() + 1.0


@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_callback_reports_every_step(problem, name):
    denoiser, x = problem
    sigmas = polynomial(5, SIGMA_MIN, SIGMA_MAX)
    infos = []
    out = SOLVERS[name].fn(denoiser, x, sigmas, callback=infos.append)
    assert [info["i"] for info in infos] == list(range(5))
    for info in infos:
        assert set(info) == {"i", "sigma", "sigma_next", "x", "denoised", "x_next"}
        assert info["sigma"] == sigmas[info["i"]].item()
        assert info["sigma_next"] == sigmas[info["i"] + 1].item()
        assert info["x"].shape == info["denoised"].shape == info["x_next"].shape == x.shape
    assert torch.equal(infos[0]["x"], x)
    for prev, nxt in zip(infos, infos[1:], strict=False):
        assert torch.equal(prev["x_next"], nxt["x"])
    assert torch.equal(infos[-1]["x_next"], out)


# ----------------------------------------------------------------------------------------------------
# NFE accounting
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["heun", "dpm"])
def test_plan_steps_two_per_step_solvers(name):
    spec = SOLVERS[name]
    plan = plan_steps(spec, 5, afs="auto")
    assert (plan.num_steps, plan.afs, plan.nfe) == (3, True, 5)
    plan = plan_steps(spec, 4, afs="auto")
    assert (plan.num_steps, plan.afs, plan.nfe) == (2, False, 4)
    with pytest.raises(FewstepError, match="2, 4, 6") as info:
        plan_steps(spec, 5, afs=False)
    assert "nfe=5" in str(info.value)
    # with denoise_to_zero the last step costs one call: 2 * 3 - 1 = 5 without AFS
    plan = plan_steps(spec, 5, afs="auto", denoise_to_zero=True)
    assert (plan.num_steps, plan.afs) == (3, False)


def test_plan_steps_ipndm_and_euler():
    plan = plan_steps(SOLVERS["ipndm"], 5)
    assert (plan.num_steps, plan.afs, plan.nfe) == (5, False, 5)
    assert plan_steps(SOLVERS["euler"], 7).num_steps == 7
    plan = plan_steps(SOLVERS["euler"], 5, afs=True)  # AFS saves one call: 6 steps for 5 NFE
    assert (plan.num_steps, plan.afs) == (6, True)


@pytest.mark.parametrize("nfe", [0, -1, 2.5, True])
@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_plan_steps_rejects_bad_nfe(name, nfe):
    with pytest.raises(FewstepError, match="positive integer"):
        plan_steps(SOLVERS[name], nfe)


def test_plan_steps_rejects_bad_afs():
    with pytest.raises(FewstepError, match="afs"):
        plan_steps(SOLVERS["heun"], 4, afs="yes")


@pytest.mark.parametrize("denoise_to_zero", [False, True])
@pytest.mark.parametrize("afs", ["auto", False, True])
@pytest.mark.parametrize("name", SOLVER_NAMES)
def test_every_spendable_nfe_has_an_exact_plan(name, afs, denoise_to_zero):
    spec = SOLVERS[name]
    spendable = spendable_nfes(spec, afs, denoise_to_zero)
    assert spendable
    for nfe in range(1, 13):
        if nfe in spendable:
            plan = plan_steps(spec, nfe, afs, denoise_to_zero)
            assert plan.nfe == nfe == nfe_of(spec, plan.num_steps, plan.afs, denoise_to_zero)
        else:
            with pytest.raises(FewstepError):
                plan_steps(spec, nfe, afs, denoise_to_zero)


def test_spendable_nfes_reaches_up_to():
    spec = SOLVERS["euler"]
    assert plan_steps(spec, 12, afs=True).num_steps == 13
    assert 12 in spendable_nfes(spec, True, False, up_to=12)


# ----------------------------------------------------------------------------------------------------
# Steps to sigma = 0, options
# ----------------------------------------------------------------------------------------------------


def test_euler_final_step_to_zero_returns_the_denoiser_output(problem):
    denoiser, x = problem
    sigmas = torch.tensor([SIGMA_MAX, 10.0, 1.0, 0.0], dtype=torch.float64)
    x_prev = euler(denoiser, x, sigmas[:-1])  # the state at sigma = 1
    out = euler(denoiser, x, sigmas)
    assert torch.equal(out, denoiser(x_prev, 1.0))
    # and it is not just the state: the last step really moved
    assert (out - x_prev).abs().max() > 0.1


@pytest.mark.parametrize("name", ["heun", "dpm"])
def test_final_step_to_zero_is_a_denoising_step(problem, name):
    denoiser, x = problem
    sigmas = torch.cat([polynomial(5, 0.5, SIGMA_MAX), torch.zeros(1, dtype=torch.float64)])
    infos = []
    out = SOLVERS[name].fn(denoiser, x, sigmas, callback=infos.append)
    assert torch.allclose(out, denoiser(infos[-1]["x"], 0.5), atol=1e-12, rtol=0)


def test_ipndm_steps_to_zero_with_its_multistep_update(problem):
    # 1-evaluation multistep solvers need no special last step: the slopes were taken at sigma > 0.
    denoiser, x = problem
    sigmas = torch.cat([polynomial(5, 0.5, SIGMA_MAX), torch.zeros(1, dtype=torch.float64)])
    infos = []
    out = ipndm(denoiser, x, sigmas, callback=infos.append)
    last = infos[-1]
    assert torch.equal(out, last["x_next"])
    assert not torch.allclose(out, denoiser(last["x"], 0.5), atol=1e-3)
    exact = denoiser.ode_solution(x, SIGMA_MAX, 0.0)
    assert (out - exact).norm() < (denoiser(last["x"], 0.5) - exact).norm()


def test_dpm_with_r_one_is_heun(problem):
    # r = 1 puts the intermediate point at sigma_next with weights 1/2, 1/2: Heun's method
    denoiser, x = problem
    sigmas = polynomial(7, SIGMA_MIN, SIGMA_MAX)
    out = dpm(denoiser, x, sigmas, r=1.0)
    torch.testing.assert_close(out, heun(denoiser, x, sigmas), atol=1e-12, rtol=1e-12)
    assert not torch.allclose(dpm(denoiser, x, sigmas, r=0.5), heun(denoiser, x, sigmas), atol=1e-6)


@pytest.mark.parametrize("r", [0.0, -0.5, 1.5])
def test_dpm_rejects_bad_r(problem, r):
    denoiser, x = problem
    with pytest.raises(FewstepError, match="r must"):
        dpm(denoiser, x, polynomial(3, SIGMA_MIN, SIGMA_MAX), r=r)


@pytest.mark.parametrize("max_order", [0, 5])
def test_ipndm_rejects_bad_max_order(problem, max_order):
    denoiser, x = problem
    with pytest.raises(FewstepError, match="max_order"):
        ipndm(denoiser, x, polynomial(3, SIGMA_MIN, SIGMA_MAX), max_order=max_order)
