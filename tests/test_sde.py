"""Stochastic solvers (fewstep.solvers.sde): ER-SDE-Solver, Euler ancestral, EDM's stochastic Heun.

Reference problem as in test_solvers.py: data N(mean, diag(std^2)) of shape (1, 4, 4), std in [0.1, 0.7], exact
denoiser (GaussianDenoiser). The solvers are affine in (initial x, noise draws) for this denoiser, so the exact
mean and variance of a solver's output distribution can be computed from a handful of runs (`exact_moments`):
that separates the discretisation error (exact) from the Monte-Carlo error (bounded by standard errors).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from fewstep.data.seeds import seeded_noise
from fewstep.errors import FewstepError
from fewstep.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_from_stats
from fewstep.models import CountingDenoiser, GaussianDenoiser
from fewstep.schedules import logsnr, polynomial
from fewstep.solvers.ode import euler, heun
from fewstep.solvers.sde import (
    NOISE_SCALES,
    edm_stochastic,
    er_sde,
    euler_ancestral,
    noise_scale_integrals,
    per_sample_noise,
)

SHAPE = (1, 4, 4)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
STOCHASTIC = [er_sde, euler_ancestral, edm_stochastic]
# options that make each solver inject noise on every step
NOISY = {er_sde: {}, euler_ancestral: {"eta": 1.0}, edm_stochastic: {"s_churn": 10.0}}


def gaussian_problem(seed: int = 0, batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    mean = torch.linspace(-0.8, 0.6, 16, dtype=torch.float64).reshape(SHAPE)
    std = torch.linspace(0.1, 0.7, 16, dtype=torch.float64)[torch.randperm(16, generator=g)].reshape(SHAPE)
    x = SIGMA_MAX * torch.randn((batch, *SHAPE), generator=g, dtype=torch.float64)
    return GaussianDenoiser(mean, std), x


@pytest.fixture(scope="module")
def problem():
    return gaussian_problem()


def batch_noise(shape, seed: int = 1, dtype=torch.float64):
    """A fast noise source for statistics (one generator for the whole batch)."""
    g = torch.Generator().manual_seed(seed)
    return lambda: torch.randn(shape, generator=g, dtype=dtype)


class CountingNoise:
    def __init__(self, shape, dtype=torch.float64):
        self.shape, self.dtype, self.calls = shape, dtype, 0
        self.g = torch.Generator().manual_seed(5)

    def __call__(self):
        self.calls += 1
        return torch.randn(self.shape, generator=self.g, dtype=self.dtype)


def no_noise():
    raise AssertionError("a deterministic configuration drew noise")


def rel_err(out, exact) -> float:
    return ((out - exact).norm() / exact.norm()).item()


# ----------------------------------------------------------------------------------------------------
# Noise sources, determinism, batch independence
# ----------------------------------------------------------------------------------------------------


def test_per_sample_noise_streams():
    draw = per_sample_noise([3, 4], SHAPE)
    first, second = draw(), draw()
    assert first.shape == (2, *SHAPE) and first.dtype == torch.float32
    assert not torch.equal(first, second)  # each call is the next draw
    assert torch.equal(per_sample_noise([3, 4], SHAPE)(), first)  # deterministic
    assert torch.equal(per_sample_noise([4], SHAPE)()[0], first[1])  # per sample
    assert not torch.equal(first, seeded_noise(torch.tensor([3, 4]), SHAPE))  # not the initial-noise stream
    assert not torch.equal(per_sample_noise([3], SHAPE, offset=2)()[0], first[0])
    assert per_sample_noise([3], SHAPE, dtype=torch.float64)().dtype == torch.float64


@pytest.mark.parametrize("solver", STOCHASTIC, ids=lambda f: f.__name__)
def test_batch_independence(problem, solver):
    denoiser, _ = problem
    seeds = list(range(8))
    x = SIGMA_MAX * seeded_noise(torch.tensor(seeds), SHAPE)
    sigmas = polynomial(6, SIGMA_MIN, SIGMA_MAX)

    def run(part):
        return solver(denoiser, x[part], sigmas, noise=per_sample_noise(seeds[part], SHAPE), **NOISY[solver])

    whole = run(slice(0, 8))
    halves = torch.cat([run(slice(0, 4)), run(slice(4, 8))])
    assert whole.dtype == torch.float32 and torch.isfinite(whole).all()
    assert torch.equal(whole, halves)
    assert torch.equal(whole, run(slice(0, 8)))  # and deterministic


@pytest.mark.parametrize("solver", STOCHASTIC, ids=lambda f: f.__name__)
def test_noise_source_is_required_and_checked(problem, solver):
    denoiser, x = problem
    sigmas = polynomial(4, SIGMA_MIN, SIGMA_MAX)
    with pytest.raises(FewstepError, match="stochastic and needs a noise source"):
        solver(denoiser, x, sigmas, **NOISY[solver])
    with pytest.raises(FewstepError, match="shape"):
        solver(denoiser, x, sigmas, noise=batch_noise((1, *SHAPE)), **NOISY[solver])


@pytest.mark.parametrize("solver", STOCHASTIC, ids=lambda f: f.__name__)
def test_callback_once_per_step_and_final_step_to_zero(problem, solver):
    denoiser, x = problem
    sigmas = torch.cat([polynomial(5, SIGMA_MIN, SIGMA_MAX), torch.zeros(1, dtype=torch.float64)])
    infos = []
    out = solver(denoiser, x, sigmas, noise=batch_noise(x.shape), callback=infos.append, **NOISY[solver])
    assert [info["i"] for info in infos] == list(range(6))
    assert [info["sigma"] for info in infos] == sigmas[:-1].tolist()
    assert torch.equal(infos[0]["x"], x)
    for prev, nxt in zip(infos, infos[1:], strict=False):
        assert torch.equal(prev["x_next"], nxt["x"])
    assert torch.equal(infos[-1]["x_next"], out)
    assert torch.equal(out, infos[-1]["denoised"])  # the step to 0 returns the denoiser output, no noise


@pytest.mark.parametrize("solver", STOCHASTIC, ids=lambda f: f.__name__)
def test_afs_answers_the_first_call(problem, solver):
    denoiser, x = problem
    wrong_prior = GaussianDenoiser(0.0, 0.5)
    sigmas = polynomial(5, SIGMA_MIN, SIGMA_MAX)
    options = {} if solver is edm_stochastic else NOISY[solver]  # no churn: the first call is at (x, sigma_max)
    infos = []
    out = solver(denoiser, x, sigmas, noise=batch_noise(x.shape), afs=wrong_prior, callback=infos.append, **options)
    assert torch.equal(infos[0]["denoised"], wrong_prior(x, SIGMA_MAX))
    plain = solver(denoiser, x, sigmas, noise=batch_noise(x.shape), **options)
    assert not torch.allclose(out, plain, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# ER-SDE: special cases, integrals, validation
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("final_zero", [False, True])
def test_er_sde_order1_ode_is_euler(problem, final_zero):
    denoiser, x = problem
    sigmas = polynomial(12, SIGMA_MIN, SIGMA_MAX)
    if final_zero:
        sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    out = er_sde(denoiser, x, sigmas, noise=no_noise, order=1, phi="x")  # no_noise raises if it is ever drawn
    torch.testing.assert_close(out, euler(denoiser, x, sigmas), atol=1e-12, rtol=0)
    for order in (2, 3):  # phi = x injects no noise at any order
        er_sde(denoiser, x, sigmas, noise=no_noise, order=order, phi="x")


def test_er_sde_order1_x2_is_euler_ancestral(problem):
    # phi = x^2: r = t^2/s^2 and noise std t sqrt(1 - t^2/s^2); Euler ancestral (eta = 1) steps to
    # sigma_down = t^2/s and adds sigma_up = t sqrt(s^2 - t^2)/s: the same update, given the same draws.
    denoiser, x = problem
    sigmas = polynomial(10, SIGMA_MIN, SIGMA_MAX)
    a = er_sde(denoiser, x, sigmas, noise=batch_noise(x.shape), order=1, phi="x2")
    b = euler_ancestral(denoiser, x, sigmas, noise=batch_noise(x.shape), eta=1.0)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_er_sde_one_evaluation_and_one_draw_per_step(problem):
    denoiser, x = problem
    counting, noise = CountingDenoiser(denoiser), CountingNoise(x.shape)
    sigmas = torch.cat([polynomial(7, SIGMA_MIN, SIGMA_MAX), torch.zeros(1, dtype=torch.float64)])
    er_sde(counting, x, sigmas, noise=noise, order=3)
    assert counting.calls == 8
    assert noise.calls == 7  # no noise on the step to 0


INTERVALS = [(0.002, 0.0021), (0.002, 0.003), (0.05, 0.06), (0.3, 0.5), (1.0, 1.001), (2.0, 5.0), (3.0, 3.3)]
INTERVALS += [(10.0, 80.0), (60.0, 80.0), (79.9, 80.0), (0.5, 80.0), (0.002, 80.0)]


@pytest.mark.parametrize("name", sorted(NOISE_SCALES))
def test_integrals_match_scipy_quad(name):
    # Measured worst relative error over these intervals: 7e-14 (power laws, closed form), 1.7e-13 (quadrature).
    phi = NOISE_SCALES[name][0]
    for t, s in INTERVALS:
        s0, s1 = noise_scale_integrals(name, t, s)
        q0 = quad(lambda u: 1.0 / phi(u), t, s, epsabs=0, epsrel=1e-13, limit=500)[0]
        q1 = quad(lambda u, s=s: (u - s) / phi(u), t, s, epsabs=0, epsrel=1e-13, limit=500)[0]
        assert s0 == pytest.approx(q0, rel=1e-10, abs=0), (t, s)
        assert s1 == pytest.approx(q1, rel=1e-10, abs=0), (t, s)


def test_integrals_of_a_user_phi_and_closed_forms_agree_with_quadrature():
    def cubic_ish(u):
        return u * (1.0 + u**2)

    for t, s in [(0.01, 0.02), (0.5, 3.0), (0.002, 80.0)]:
        s0, s1 = noise_scale_integrals(cubic_ish, t, s)
        assert s0 == pytest.approx(quad(lambda u: 1 / cubic_ish(u), t, s, epsrel=1e-13)[0], rel=1e-10)
        assert s1 == pytest.approx(quad(lambda u, s=s: (u - s) / cubic_ish(u), t, s, epsrel=1e-13)[0], rel=1e-10)
        # a power law given as a callable goes through the quadrature; it must agree with the closed form
        for name, (phi, _) in NOISE_SCALES.items():
            if name.startswith("x"):
                closed, numeric = noise_scale_integrals(name, t, s), noise_scale_integrals(lambda u, f=phi: f(u), t, s)
                assert numeric == pytest.approx(closed, rel=1e-12), name


def test_negative_variance_phi_is_rejected_before_any_evaluation(problem):
    denoiser, x = problem
    counting = CountingDenoiser(denoiser)

    def sqrt_phi(u):  # phi(t)/phi(s) = sqrt(t/s) > t/s: the variance t^2 - s^2 r^2 = t^2 - s t < 0
        return u**0.5

    with pytest.raises(FewstepError, match=r"sqrt_phi makes the injected noise variance negative at step 0 \(sigma 80"):
        er_sde(counting, x, polynomial(5, SIGMA_MIN, SIGMA_MAX), noise=no_noise, phi=sqrt_phi)
    assert counting.calls == 0


@pytest.mark.parametrize(
    "options, message",
    [({"order": 4}, "order must be 1, 2 or 3"), ({"phi": "x3"}, "phi must be a callable or one of")],
)
def test_er_sde_rejects_bad_options(problem, options, message):
    denoiser, x = problem
    with pytest.raises(FewstepError, match=message):
        er_sde(denoiser, x, polynomial(4, SIGMA_MIN, SIGMA_MAX), noise=no_noise, **options)


def test_other_solvers_reject_bad_options(problem):
    denoiser, x = problem
    sigmas = polynomial(4, SIGMA_MIN, SIGMA_MAX)
    with pytest.raises(FewstepError, match="eta"):
        euler_ancestral(denoiser, x, sigmas, noise=no_noise, eta=-0.5)
    with pytest.raises(FewstepError, match="s_churn"):
        edm_stochastic(denoiser, x, sigmas, noise=no_noise, s_churn=-1.0)


# ----------------------------------------------------------------------------------------------------
# ER-SDE: convergence order on the deterministic member (phi = x), exact Gaussian ODE
# ----------------------------------------------------------------------------------------------------


def last_slope(problem, sizes=(256, 512), **options) -> float:
    denoiser, x = problem
    exact = denoiser.ode_solution(x, SIGMA_MAX, SIGMA_MIN)
    errs = [
        rel_err(er_sde(denoiser, x, logsnr(n, SIGMA_MIN, SIGMA_MAX), noise=no_noise, phi="x", **options), exact)
        for n in sizes
    ]
    return math.log2(errs[0] / errs[1])


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"order": 1}, 1),  # measured 0.996
        ({"order": 2}, 2),  # 2.012
        ({"order": 3}, 2),  # 2.038: the published 3rd-order update converges at order 2 (see er_sde's docstring)
        ({"order": 3, "exact_third_order": True}, 3),  # 3.007
    ],
)
def test_er_sde_convergence_order(problem, options, expected):
    # log2(err(256)/err(512)) on the logsnr schedule; pre-asymptotic deviations are <= 0.04 here, and a solver one
    # order off misses by ~1. (The polynomial schedule is far from asymptotic for the exact 3rd order: its leading
    # error nearly cancels; slopes 5.5, 2.4, 2.1, 2.8, 3.0, 3.2 from N = 64 to 8192, at errors of 1e-5 .. 6e-12.)
    assert abs(last_slope(problem, **options) - expected) < 0.1


# ----------------------------------------------------------------------------------------------------
# Distributional correctness on Gaussian data
# ----------------------------------------------------------------------------------------------------


def exact_moments(solver, denoiser, sigmas, init_mean, init_var, **options):
    """Exact mean and variance of the output when x ~ N(init_mean, diag(init_var)) and the draws are N(0, I).

    For the Gaussian denoiser every solver here is affine: out = c + A x + sum_k B_k z_k (elementwise). One run
    with a batch of K + 2 samples gives c (x = 0, z = 0), c + A (x = 1) and c + B_k (z_k = 1 for sample k + 2).
    """
    counter = CountingNoise((1, *SHAPE))
    solver(denoiser, torch.zeros((1, *SHAPE), dtype=torch.float64), sigmas, noise=counter, **options)
    draws, batch = counter.calls, counter.calls + 2
    x = torch.zeros((batch, *SHAPE), dtype=torch.float64)
    x[1] = 1.0
    step = iter(range(draws))

    def indicator():
        z = torch.zeros((batch, *SHAPE), dtype=torch.float64)
        z[2 + next(step)] = 1.0
        return z

    out = solver(denoiser, x, sigmas, noise=indicator, **options)
    c, a, b = out[0], out[1] - out[0], out[2:] - out[0]
    return c + a * init_mean, a**2 * init_var + (b**2).sum(0)


def check_distribution(solver, num_steps, n, max_systematic, **options):
    """Monte-Carlo moments vs the exact output moments (5 standard errors), and vs the target
    N(mean, std^2 + sigma_min^2): 5 standard errors + the exact systematic error, itself below `max_systematic`."""
    denoiser, _ = gaussian_problem()
    mean, target_var = denoiser.mean, denoiser.var + SIGMA_MIN**2
    init_var = denoiser.var + SIGMA_MAX**2  # the exact marginal at sigma_max, so the target is exact
    sigmas = polynomial(num_steps, SIGMA_MIN, SIGMA_MAX)
    exact_mean, exact_var = exact_moments(solver, denoiser, sigmas, mean, init_var, **options)
    g = torch.Generator().manual_seed(11)
    x = mean + init_var.sqrt() * torch.randn((n, *SHAPE), generator=g, dtype=torch.float64)
    out = solver(
        denoiser, x, sigmas, noise=lambda: torch.randn((n, *SHAPE), generator=g, dtype=torch.float64), **options
    )
    sample_mean, sample_var = out.mean(0), out.var(0)

    # every update is an affine combination whose weights sum to 1 and D is mean-equivariant: the mean is exact
    assert (exact_mean - mean).abs().max() < 1e-12
    systematic = ((exact_var - target_var) / target_var).abs()
    assert systematic.max() < max_systematic, systematic.max()

    se_mean, se_var = (exact_var / n).sqrt(), exact_var * math.sqrt(2 / (n - 1))
    assert ((sample_mean - exact_mean).abs() < 5 * se_mean).all()
    assert ((sample_var - exact_var).abs() < 5 * se_var).all()
    target_se_var = target_var * math.sqrt(2 / (n - 1))
    assert ((sample_mean - mean).abs() < 5 * (target_var / n).sqrt()).all()
    assert ((sample_var - target_var).abs() < 5 * target_se_var + systematic * target_var).all()
    return systematic.max().item()


@pytest.mark.parametrize(
    "order, max_systematic",
    # exact max relative variance error at 40 steps (worst pixel, std 0.1), default phi: 0.167, 0.0201, 0.0138;
    # at 10/20/40/80/160 steps: order 1 .51 .31 .17 .087 .045 (weak order 1), order 2 .35 .095 .020 .0045 .0011,
    # order 3 .34 .079 .014 .0028 .00064 (order 2, as on the ODE); exact_third_order .30 .038 .0020 6e-5 1e-5.
    [(1, 0.2), (2, 0.025), (3, 0.017)],
)
def test_er_sde_matches_gaussian_target(order, max_systematic):
    check_distribution(er_sde, 40, 4000, max_systematic, order=order)


def test_euler_ancestral_matches_gaussian_target():
    # exact max relative variance error of Euler ancestral, 100 steps: 0.138 (30 steps: 0.37, 160: 0.089; first
    # order, identical to er_sde(order=1, phi='x2')). The allowance is that measured systematic error.
    check_distribution(euler_ancestral, 100, 2000, 0.15, eta=1.0)


def test_edm_stochastic_matches_gaussian_target():
    # exact max relative variance error with s_churn = 40, 40 steps: 0.100 (80 steps: 0.041, 160: 0.012)
    check_distribution(edm_stochastic, 40, 2000, 0.11, s_churn=40.0)


# ----------------------------------------------------------------------------------------------------
# Euler ancestral and EDM stochastic: deterministic limits, NFE
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("final_zero", [False, True])
def test_euler_ancestral_eta0_is_euler(problem, final_zero):
    denoiser, x = problem
    sigmas = polynomial(9, SIGMA_MIN, SIGMA_MAX)
    if final_zero:
        sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    assert torch.equal(euler_ancestral(denoiser, x, sigmas, noise=no_noise, eta=0.0), euler(denoiser, x, sigmas))


@pytest.mark.parametrize("final_zero", [False, True])
def test_edm_stochastic_without_churn_is_heun(problem, final_zero):
    denoiser, x = problem
    sigmas = polynomial(9, SIGMA_MIN, SIGMA_MAX)
    if final_zero:
        sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    assert torch.equal(edm_stochastic(denoiser, x, sigmas, noise=no_noise), heun(denoiser, x, sigmas))


@pytest.mark.parametrize("final_zero", [False, True])
def test_edm_stochastic_churn_nfe_and_draws(problem, final_zero):
    denoiser, x = problem
    sigmas = polynomial(8, SIGMA_MIN, SIGMA_MAX)
    if final_zero:
        sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    steps = len(sigmas) - 1
    counting, noise = CountingDenoiser(denoiser), CountingNoise(x.shape)
    out = edm_stochastic(counting, x, sigmas, noise=noise, s_churn=20.0, s_tmin=0.05, s_tmax=50.0)
    assert counting.calls == 2 * steps - int(final_zero)  # a final step to 0 is one Euler call
    churned = sum(1 for s in sigmas[:-1].tolist() if 0.05 <= s <= 50.0)
    assert 0 < churned < steps and noise.calls == churned
    assert not torch.allclose(out, heun(denoiser, x, sigmas), atol=1e-3)


# ----------------------------------------------------------------------------------------------------
# Orders on a Gaussian mixture (exact denoiser), NFE 10 and 20
# ----------------------------------------------------------------------------------------------------

MIX_MEANS = torch.tensor([[-1.0, -0.5], [1.0, -0.5], [0.0, 1.0]], dtype=torch.float64)
MIX_STDS = torch.tensor([0.15, 0.3, 0.1], dtype=torch.float64)
MIX_WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def mixture_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | x] for x0 ~ sum_k w_k N(mu_k, s_k^2 I) in 2-D: softmax_k log(w_k N(x; mu_k, (s_k^2 + sigma^2) I))
    times the per-component posterior means mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)."""
    var = MIX_STDS**2 + sigma**2
    diff = x[:, None, :] - MIX_MEANS[None]
    log_density = MIX_WEIGHTS.log() - diff.pow(2).sum(-1) / (2 * var) - var.log()  # 2-D: -log(2 pi var) + const
    posterior = torch.softmax(log_density, dim=-1)
    return (posterior[..., None] * (MIX_MEANS[None] + (MIX_STDS**2 / var)[None, :, None] * diff)).sum(1)


def sample_mixture(n: int, g: torch.Generator, sigma: float = 0.0) -> torch.Tensor:
    k = torch.multinomial(MIX_WEIGHTS, n, replacement=True, generator=g)
    scale = (MIX_STDS[k, None] ** 2 + sigma**2).sqrt()
    return MIX_MEANS[k] + scale * torch.randn((n, 2), generator=g, dtype=torch.float64)


def sliced_w1(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    return ((a @ directions.T).sort(0).values - (b @ directions.T).sort(0).values).abs().mean().item()


def test_er_sde_higher_orders_beat_order1_on_a_mixture():
    n = 10_000
    g = torch.Generator().manual_seed(123)
    angles = torch.rand(64, generator=g, dtype=torch.float64) * math.pi
    directions = torch.stack([angles.cos(), angles.sin()], 1)
    reference = sample_mixture(n, torch.Generator().manual_seed(99), SIGMA_MIN)
    ref_stats = FeatureStats(2).update(reference)
    # floor (two exact sample sets of 10,000): sliced W1 0.007-0.012, Frechet 4e-5-3e-4
    table = {}
    for num_steps in (10, 20):
        sigmas = polynomial(num_steps, SIGMA_MIN, SIGMA_MAX)
        for order in (1, 2, 3):
            g = torch.Generator().manual_seed(7)  # common random numbers: every order sees the same draws
            x = sample_mixture(n, g) + SIGMA_MAX * torch.randn((n, 2), generator=g, dtype=torch.float64)
            out = er_sde(mixture_denoiser, x, sigmas, noise=batch_noise((n, 2), seed=8), order=order)
            fd = frechet_distance_from_stats(FeatureStats(2).update(out), ref_stats)
            table[num_steps, order] = (fd, sliced_w1(out, reference, directions))
    # measured (Frechet, sliced W1), seeds as here:
    #   NFE 10: order 1 (2.5e-2, 0.105), order 2 (3.4e-3, 0.040), order 3 (2.8e-3, 0.037)
    #   NFE 20: order 1 (6.2e-3, 0.053), order 2 (7.0e-4, 0.015), order 3 (6.6e-4, 0.014)
    # seeds 17 and 27 (and NFE 15) give the same picture: order 1 is 6-20x (Frechet) and 2.5-4x (sliced W1) worse.
    # Order 3 is ahead of order 2 by 5-25 % in all 9 cases (same draws for both), a margin too thin to assert;
    # at NFE 20 orders 2 and 3 are within ~3x of the floor.
    for num_steps in (10, 20):
        for order in (2, 3):
            for metric in (0, 1):
                assert table[num_steps, order][metric] < 0.5 * table[num_steps, 1][metric], table
    # a sanity check of the distance itself: exact moments of the mixture vs the reference sample
    mean = (MIX_WEIGHTS[:, None] * MIX_MEANS).sum(0)
    second = sum(
        w * ((s**2 + SIGMA_MIN**2) * torch.eye(2, dtype=torch.float64) + torch.outer(m, m))
        for w, m, s in zip(MIX_WEIGHTS, MIX_MEANS, MIX_STDS, strict=True)
    )
    exact_fd = frechet_distance(*ref_stats.mean_cov(), mean.numpy(), (second - torch.outer(mean, mean)).numpy())
    assert exact_fd < 1e-3 < table[10, 1][0]
    assert np.isfinite(list(table.values())).all()
