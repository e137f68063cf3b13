"""Stochastic samplers in the EDM/VE sigma parametrisation: ER-SDE-Solver, Euler ancestral and EDM's stochastic Heun.

Convention: x = x0 + sigma * eps and D(x, sigma) -> x0, as in `fewstep.solvers.ode`. Every solver keeps the shared
signature `solver(denoiser, x, sigmas, *, callback=None, afs=None, **options) -> x` and adds a keyword-only
`noise`: a callable that returns the next standard-normal tensor shaped like `x` (see `per_sample_noise`, which
draws it from one generator per sample so that results do not depend on the batch size). A solver that gets no
noise source raises FewstepError. Noise is drawn only on steps that inject some (the decision depends on the
schedule and the options, never on the sample), so a deterministic configuration draws nothing.

Sigma arithmetic is done in float64 Python floats (`sigmas.tolist()`); a final sigma of 0 is allowed and that step
returns the denoiser output (no noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from fewstep.errors import FewstepError
from fewstep.solvers.ode import Callback, heun_step, model_for_step, report_step, step_pairs

Noise = Callable[[], torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------
# Noise sources


def per_sample_noise(
    seeds: Sequence[int] | torch.Tensor,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    offset: int = 1,
) -> Noise:
    """A noise source for the stochastic solvers: each call returns the next N(0, I) draw, shape (len(seeds), *shape).

    `shape` is the shape of one sample (C, H, W), as in `fewstep.data.seeds.seeded_noise`. Sample k has its own
    torch.Generator seeded with `seeds[k] * 1_000_003 + offset` (mod 2^63; plain integer arithmetic, no hash), a
    stream different from the initial noise, whose generator is seeded with the seed itself. Draws are made on the
    CPU and moved to `device`, so a sample's noise is the same whatever the batch it runs in and the device.
    """
    from fewstep.data.seeds import seed_generator

    if int(offset) < 1:
        raise FewstepError(f"noise stream offset must be >= 1 (stream 0 is the initial noise), got {offset}")
    seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds
    generators = [seed_generator(seed, int(offset)) for seed in seeds]
    shape = tuple(int(n) for n in shape)

    def draw() -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, dtype=dtype) for g in generators]).to(device)

    return draw


def _require_noise(name: str, noise: Noise | None) -> Noise:
    if noise is None:
        raise FewstepError(
            f"solver {name!r} is stochastic and needs a noise source: pass noise=per_sample_noise(seeds, shape)"
        )
    return noise


def _draw(noise: Noise, x: torch.Tensor) -> torch.Tensor:
    z = noise()
    if tuple(z.shape) != tuple(x.shape):
        raise FewstepError(f"the noise source returned shape {tuple(z.shape)}, but the samples have {tuple(x.shape)}")
    return z.to(device=x.device, dtype=x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# ER-SDE-Solver: noise-scale functions and their integrals


def _x(s):
    return s


def _exp(s):
    return s * (np.exp(-1.0 / s) + 10.0)


def _log(s):
    return s**0.9 * np.log10(1.0 + 100.0 * s**1.5)


def _default(s):
    return s * (np.exp(s**0.3) + 10.0)


def _power(p: float):
    def phi(s):
        return s**p

    return phi


# name -> (phi, exponent p if phi(s) = s^p else None). The reference code's func_type 1..7.
NOISE_SCALES: dict[str, tuple[Callable, float | None]] = {
    "x": (_x, 1.0),  # ODE (no noise)
    "x2": (_power(2.0), 2.0),  # the original reverse-time SDE
    "exp": (_exp, None),  # SDE_1: x (e^(-1/x) + 10)
    "x1.5": (_power(1.5), 1.5),  # SDE_2
    "x2.5": (_power(2.5), 2.5),  # SDE_3
    "log": (_log, None),  # SDE_4: x^0.9 log10(1 + 100 x^1.5)
    "default": (_default, None),  # SDE_5: x (e^(x^0.3) + 10), the paper's choice
}

_GL_POINTS = 64
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(_GL_POINTS)
_GL_PANEL = 1.0  # at most this width in log(sigma) per Gauss-Legendre panel


def resolve_phi(phi: str | Callable) -> tuple[Callable, float | None, str]:
    """(phi, power or None, display name) for a noise-scale name or a user callable on float64 numpy arrays."""
    if callable(phi):
        return phi, None, getattr(phi, "__name__", repr(phi))
    if phi not in NOISE_SCALES:
        raise FewstepError(f"er_sde phi must be a callable or one of {sorted(NOISE_SCALES)}, got {phi!r}")
    fn, power = NOISE_SCALES[phi]
    return fn, power, repr(phi)


def _phi_values(phi: Callable, sigmas: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(phi(np.asarray(sigmas, dtype=np.float64)), dtype=np.float64)
    if values.shape != np.shape(sigmas) or not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise FewstepError(f"er_sde phi {name} must be positive and finite for sigma > 0; got {values} at {sigmas}")
    return values


def _power_integrals(p: float, t: float, s: float) -> tuple[float, float]:
    """S0, S1 for phi = sigma^p in closed form (see `noise_scale_integrals`), free of cancellation.

    With L = log(t/s) < 0 and g(a) = (1 - (t/s)^a)/a = -expm1(a L)/a (g(0) = -L):
    S0 = s^(1-p) g(1-p) and S1 = s^(2-p) (g(2-p) - g(1-p)). The difference cancels its leading -L for small
    |L|, so there S1 uses the series -s^(2-p) sum_{k>=2} ((2-p)^(k-1) - (1-p)^(k-1)) L^k / k!.
    """
    L = math.log(t / s)

    def g(a: float) -> float:
        return -L if a == 0 else -math.expm1(a * L) / a

    s0 = s ** (1 - p) * g(1 - p)
    if abs(L) >= 0.5:
        s1 = s ** (2 - p) * (g(2 - p) - g(1 - p))
    else:
        total, term_l, bound = 0.0, L, max(abs(2 - p), abs(1 - p), 1.0)  # term_l = L^k / k!
        for k in range(2, 80):
            term_l *= L / k
            total += ((2 - p) ** (k - 1) - (1 - p) ** (k - 1)) * term_l
            if 2 * bound ** (k - 1) * abs(term_l) <= 1e-17 * abs(total):  # bounds this and the next terms
                break
        s1 = -(s ** (2 - p)) * total
    return s0, s1


def _quadrature_integrals(phi: Callable, t: float, s: float, name: str) -> tuple[float, float]:
    """S0, S1 by Gauss-Legendre in v = log(s/sigma), 64 points per panel of width <= 1.

    sigma = s e^(-v), dsigma = -sigma dv and sigma - s = s expm1(-v): no cancellation near sigma = s.
    """
    width = math.log(s / t)
    panels = max(1, math.ceil(width / _GL_PANEL))
    edges = np.linspace(0.0, width, panels + 1)
    half = 0.5 * np.diff(edges)[:, None]
    v = (half * _GL_NODES[None, :] + 0.5 * (edges[1:] + edges[:-1])[:, None]).ravel()
    w = (half * _GL_WEIGHTS[None, :]).ravel()
    sigma = s * np.exp(-v)
    jac = sigma / _phi_values(phi, sigma, name)
    return float(np.dot(w, jac)), float(np.dot(w, s * np.expm1(-v) * jac))


def noise_scale_integrals(phi: str | Callable, t: float, s: float) -> tuple[float, float]:
    """S0 = int_t^s dsigma / phi(sigma) and S1 = int_t^s (sigma - s) / phi(sigma) dsigma, for 0 < t < s.

    Closed form for the power laws ('x', 'x2', 'x1.5', 'x2.5'); otherwise composite 64-point Gauss-Legendre in
    log(sigma), panels at most 1 wide. Against scipy.integrate.quad they agree to <= 2e-13 relative for every
    named phi on intervals from (0.002, 0.0021) to (0.002, 80) (tests/test_sde.py checks 1e-10). The reference
    code's 100-point Riemann sum is off by 0.3-0.6 % (S0) and 1.2-1.5 % (S1) on steps with s/t = 2, default phi.
    """
    fn, power, name = resolve_phi(phi)
    if not 0 < t < s:
        raise FewstepError(f"noise_scale_integrals needs 0 < t < s, got t={t}, s={s}")
    if power is not None:
        return _power_integrals(power, t, s)
    return _quadrature_integrals(fn, t, s, name)


def _er_sde_plan(sigmas: torch.Tensor, phi: str | Callable, need_integrals: bool) -> list[tuple]:
    """Per step (r, noise std, c1, c2) in float64; checks the injected variance before any evaluation."""
    fn, _, name = resolve_phi(phi)
    plan = []
    for i, (s, t) in step_pairs(sigmas):
        if t == 0:
            plan.append((0.0, 0.0, 0.0, 0.0))
            continue
        phi_t, phi_s = _phi_values(fn, np.array([t, s]), name).tolist()
        r = phi_t / phi_s
        var = (t - s * r) * (t + s * r)
        if var < -1e-12 * t * t:
            raise FewstepError(
                f"er_sde phi {name} makes the injected noise variance negative at step {i} "
                f"(sigma {s:.6g} -> {t:.6g}): phi(t)/phi(s) = {r:.6g} exceeds t/s = {t / s:.6g}. "
                "phi(sigma)/sigma must not decrease; use e.g. phi='default', 'x2' or 'x'"
            )
        std = math.sqrt(var) if var > 1e-12 * t * t else 0.0  # below that it is round-off of r (phi = x: exactly 0)
        c1 = c2 = 0.0
        if need_integrals and i > 0:
            s0, s1 = noise_scale_integrals(fn if callable(phi) else phi, t, s)
            c1 = (t - s) + phi_t * s0
            c2 = 0.5 * (t - s) ** 2 + phi_t * s1
        plan.append((r, std, c1, c2))
    return plan


def er_sde(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise | None = None,
    callback: Callback = None,
    afs=None,
    order: int = 3,
    phi: str | Callable = "default",
    exact_third_order: bool = False,
) -> torch.Tensor:
    """ER-SDE-Solver (Cui et al. 2023, arXiv 2309.06169), VE form, data prediction; one evaluation per step.

    The extended reverse-time SDE family shares the marginals of the diffusion; a noise-scale function phi picks
    the member. In the VE form it satisfies d(x/phi) = D d(1/phi) + noise, so from s to t < s (sigmas)

        x_t = r x_s + phi(t) int_s^t D(sigma) d(1/phi(sigma)) + sqrt(t^2 - s^2 r^2) z,   r = phi(t)/phi(s).

    The noise variance keeps the marginal: x_s = x0 + s eps gives x_t = x0 + r s eps + noise, so it needs
    r <= t/s, i.e. phi(sigma)/sigma non-decreasing (else FewstepError naming the step). With D Taylor-expanded at s,
    D(sigma) = D + (sigma - s) D' + (sigma - s)^2 / 2 D'', and integration by parts,

        phi(t) int_s^t d(1/phi)                   = 1 - r
        phi(t) int_s^t (sigma - s) d(1/phi)       = (t - s) + phi(t) S0,       S0 = int_t^s dsigma / phi
        phi(t) int_s^t (sigma - s)^2/2 d(1/phi)   = (t - s)^2 / 2 + phi(t) S1, S1 = int_t^s (sigma - s) / phi dsigma

    hence x_t = r x_s + (1 - r) D + [(t - s) + phi(t) S0] D' + [(t - s)^2/2 + phi(t) S1] D'' + sqrt(...) z, with the
    paper's (and official code's, `ve_xstart_*`) backward differences D' = (D_i - D_{i-1}) / (s_i - s_{i-1}) and
    D'' = 2 (D'_i - D'_{i-1}) / (s_i - s_{i-2}). Order 1 with phi = x is DDIM/Euler (r = t/s, no noise); phi = x^2
    is the original reverse SDE. The order warms up (min(order, steps done + 1)) and a step to sigma = 0 returns D.
    The integrals come from `noise_scale_integrals` (closed form or Gauss-Legendre, <= 2e-13 relative).

    Convergence, measured on the exact Gaussian ODE (phi = 'x', logsnr schedule, log2 error ratios at N = 256 -> 512;
    tests/test_sde.py): order 1 -> 1.00, order 2 -> 2.01, published order 3 -> 2.04 (its local error is O(h^3),
    because the backward difference D' is an O(h) estimate of D'(s) and its coefficient is O(h^2), as large as the
    D'' term it adds; its error constant is ~2/3 of order 2's). `exact_third_order=True` uses
    D'(s_i) = D[s_i, s_i-1] + (s_i - s_i-1) D[s_i, s_i-1, s_i-2] (the derivative of the quadratic interpolant)
    and converges at order 3 (3.01; local error O(h^4)). The published update stays the default, to compare with
    the paper, as `dpmpp` does with its published 3M update.

    `phi`: 'x' (ODE), 'x2' (x^2), 'exp' (x (e^(-1/x) + 10)), 'x1.5', 'x2.5', 'log' (x^0.9 log10(1 + 100 x^1.5)),
    'default' (x (e^(x^0.3) + 10)), or a callable on float64 numpy arrays, positive for sigma > 0.

    VP form: the paper's VP solver is this update applied to x/alpha with lambda = sigma/alpha in place of sigma
    (x_t/alpha_t = r x_s/alpha_s + (1 - r) D + ..., r = phi(lambda_t)/phi(lambda_s), noise std
    alpha_t sqrt(lambda_t^2 - lambda_s^2 r^2)). A VP model wrapped as an EDM denoiser D(x/alpha, lambda) is
    exactly the VE case, so this VE form covers every model fewstep runs; no separate VP function is provided.
    """
    noise = _require_noise("er_sde", noise)
    if order not in (1, 2, 3):
        raise FewstepError(f"er_sde order must be 1, 2 or 3, got {order}")
    plan = _er_sde_plan(sigmas, phi, need_integrals=order > 1)
    values = sigmas.tolist()
    history: list[torch.Tensor] = []  # D of the previous step (empty on the first)
    slope_old: torch.Tensor | None = None  # D' of the previous step
    for i, (s, s_next) in step_pairs(sigmas):
        denoised = model_for_step(denoiser, afs, i)(x, s)
        r, std, c1, c2 = plan[i]
        step_order = min(order, i + 1)
        slope = (denoised - history[-1]) / (s - values[i - 1]) if (order >= 2 and history) else None
        if s_next == 0:
            x_next = denoised
        else:
            x_next = r * x + (1 - r) * denoised
            if step_order >= 2:
                x_next = x_next + c1 * slope
            if step_order >= 3:
                divided = (slope - slope_old) / (s - values[i - 2])  # D[s_i, s_i-1, s_i-2] = D''/2 + O(h)
                x_next = x_next + 2 * c2 * divided
                if exact_third_order:  # D'(s_i) = D[s_i, s_i-1] + (s_i - s_i-1) D[s_i, s_i-1, s_i-2] + O(h^2)
                    x_next = x_next + c1 * (s - values[i - 1]) * divided
            if std > 0:
                x_next = x_next + std * _draw(noise, x)
        report_step(callback, i, s, s_next, x, denoised, x_next)
        history = [*history, denoised][-1:]
        slope_old = slope
        x = x_next
    return x


# ---------------------------------------------------------------------------------------------------------------
# Euler ancestral (k-diffusion) and EDM's stochastic sampler (Algorithm 2)


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """k-diffusion's get_ancestral_step: (sigma_down, sigma_up) with sigma_down^2 + sigma_up^2 = sigma_next^2.

    sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)); eta = 1 is the DDPM
    ancestral step, eta = 0 the deterministic one (sigma_down = sigma_next).
    """
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def euler_ancestral(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise | None = None,
    callback: Callback = None,
    afs=None,
    eta: float = 1.0,
) -> torch.Tensor:
    """Euler ancestral (k-diffusion's sample_euler_ancestral): 1 evaluation per step.

    Euler step to sigma_down, then add sigma_up z (`ancestral_step`):
    x_next = x + (sigma_down - sigma) (x - D)/sigma + sigma_up z. A step to 0 returns D (no noise); eta = 0 is
    `fewstep.solvers.ode.euler` exactly and draws no noise.
    """
    noise = _require_noise("euler_ancestral", noise)
    if not (math.isfinite(eta) and eta >= 0):
        raise FewstepError(f"euler_ancestral eta must be a finite number >= 0, got {eta}")
    for i, (s, s_next) in step_pairs(sigmas):
        denoised = model_for_step(denoiser, afs, i)(x, s)
        if s_next == 0:
            x_next = denoised
        else:
            sigma_down, sigma_up = ancestral_step(s, s_next, eta)
            x_next = denoised + (sigma_down / s) * (x - denoised)  # Euler's step, as `euler` writes it
            if sigma_up > 0:
                x_next = x_next + sigma_up * _draw(noise, x)
        report_step(callback, i, s, s_next, x, denoised, x_next)
        x = x_next
    return x


def edm_stochastic(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise | None = None,
    callback: Callback = None,
    afs=None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): Heun with churn, 2 evaluations per step.

    gamma = min(s_churn/N, sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0 (N = number of steps);
    sigma_hat = sigma (1 + gamma); x_hat = x + sqrt(sigma_hat^2 - sigma^2) s_noise z; an Euler step from
    (x_hat, sigma_hat) to sigma_next, then Heun's correction, except a step to 0, which returns D(x_hat, sigma_hat)
    (one evaluation, as in `ode.heun`). With s_churn = 0 it is `fewstep.solvers.ode.heun` exactly and draws no
    noise. The callback reports the step from (x, sigma) before the churn; `denoised` is D(x_hat, sigma_hat).
    """
    noise = _require_noise("edm_stochastic", noise)
    for label, value in (("s_churn", s_churn), ("s_noise", s_noise)):
        if not (math.isfinite(value) and value >= 0):
            raise FewstepError(f"edm_stochastic {label} must be a finite number >= 0, got {value}")
    num_steps = len(sigmas) - 1
    gamma_max = min(s_churn / num_steps, math.sqrt(2) - 1)
    for i, (s, s_next) in step_pairs(sigmas):
        gamma = gamma_max if s_tmin <= s <= s_tmax else 0.0
        x_hat, s_hat = x, s
        if gamma > 0:
            s_hat = s * (1 + gamma)
            x_hat = x + math.sqrt(s_hat**2 - s**2) * s_noise * _draw(noise, x)
        denoised = model_for_step(denoiser, afs, i)(x_hat, s_hat)
        x_next = heun_step(denoiser, x_hat, s_hat, s_next, denoised)
        report_step(callback, i, s, s_next, x, denoised, x_next)
        x = x_next
    return x
