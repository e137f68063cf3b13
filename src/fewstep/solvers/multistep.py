"""Multistep solvers with one evaluation per step: DPM-Solver++, UniPC, DEIS (tAB) and variable-step iPNDM.

All follow the shared signature of `fewstep.solvers.ode` and work in the sigma parametrisation. The order rises
1, 2, ... as history accumulates; with `lower_order_final` it falls again over the last steps
(order = min(max_order, steps done + 1, steps left)), as in diffusers and the GITS reference code. A step to
sigma = 0 returns the data prediction in dpmpp and unipc; the Adams-Bashforth solvers (ipndm_v, deis) take their
usual update there, as ipndm does (their slopes were evaluated at sigma > 0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from fewstep.errors import FewstepError
from fewstep.solvers.ode import Callback, expm1, log, model_for_step, report_step, sigma_values, step_pairs


def _check_order(name: str, max_order: int, highest: int) -> None:
    if max_order not in range(1, highest + 1):
        raise FewstepError(f"{name} max_order must be between 1 and {highest}, got {max_order}")


def _order(i: int, num_steps: int, max_order: int, lower_order_final: bool, sigma_next: float) -> int:
    order = min(max_order, i + 1)
    if lower_order_final:
        order = min(order, num_steps - i)
    return 1 if sigma_next == 0 else order


# ---------------------------------------------------------------------------------------------------------------
# Adams-Bashforth with exact Lagrange weights: iPNDM-v (polynomial in sigma) and DEIS tAB (polynomial in VP time)

_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(32)


def lagrange_weights(nodes: list, start, end, time: Callable) -> list:
    """w_j = integral over sigma in [start, end] of l_j(time(sigma)), l_j the Lagrange basis on time(nodes).

    32-point Gauss-Legendre: exact for polynomials in sigma of degree < 64 (iPNDM-v), and accurate to about
    machine precision for the smooth VP time map of DEIS (the reference code uses a 10,000-point Riemann sum).
    With tensor sigmas (see `fewstep.solvers.ode.sigma_values`) the same sums in torch, differentiable.
    """
    if isinstance(start, torch.Tensor) or isinstance(end, torch.Tensor):
        return _lagrange_weights_torch(nodes, start, end, time)
    return list(_lagrange_weights_float(tuple(float(node) for node in nodes), float(start), float(end), time))


@functools.lru_cache(maxsize=1 << 16)  # a search replays the same steps thousands of times (oss's DP)
def _lagrange_weights_float(nodes: tuple, start: float, end: float, time: Callable) -> tuple:
    sigma = 0.5 * (end - start) * _GAUSS_NODES + 0.5 * (end + start)
    tau, knots = time(sigma), time(np.asarray(nodes, dtype=np.float64))
    weights = []
    for j, knot in enumerate(knots):
        basis = np.ones_like(tau)
        for k, other in enumerate(knots):
            if k != j:
                basis *= (tau - other) / (knot - other)
        weights.append(float(0.5 * (end - start) * np.dot(_GAUSS_WEIGHTS, basis)))
    return tuple(weights)


def _lagrange_weights_torch(nodes: list, start, end, time: Callable) -> list:
    gauss_nodes, gauss_weights = torch.from_numpy(_GAUSS_NODES), torch.from_numpy(_GAUSS_WEIGHTS)
    sigma = 0.5 * (end - start) * gauss_nodes + 0.5 * (end + start)
    tau = time(sigma)
    knots = [time(torch.as_tensor(node, dtype=torch.float64)) for node in nodes]
    weights = []
    for j, knot in enumerate(knots):
        basis = torch.ones_like(tau)
        for k, other in enumerate(knots):
            if k != j:
                basis = basis * (tau - other) / (knot - other)
        weights.append(0.5 * (end - start) * (gauss_weights * basis).sum())
    return weights


def _identity(sigma: np.ndarray) -> np.ndarray:
    return sigma


@functools.cache  # one function per range, so that the weights' cache knows it again
def vp_time_of_sigma(sigma_min: float = 0.002, sigma_max: float = 80.0, epsilon_s: float = 1e-3):
    """t(sigma) of the linear-beta VP-SDE with sigma(epsilon_s) = sigma_min and sigma(1) = sigma_max
    (the reference code's `edm2t`, the inverse of `fewstep.schedules.vp_time`)."""
    from fewstep.models.vp import vp_linear_betas

    beta_d, beta_min = vp_linear_betas(sigma_min, sigma_max, epsilon_s)

    def time(sigma):
        if isinstance(sigma, torch.Tensor):
            return (torch.sqrt(beta_min**2 + 2 * beta_d * torch.log1p(sigma**2)) - beta_min) / beta_d
        return (np.sqrt(beta_min**2 + 2 * beta_d * np.log1p(np.asarray(sigma) ** 2)) - beta_min) / beta_d

    return time


def _adams_bashforth(denoiser, x, sigmas, callback, afs, max_order: int, time) -> torch.Tensor:
    slopes: list[torch.Tensor] = []  # newest last
    points: list[float] = []
    for i, (s, s_next) in step_pairs(sigmas):
        denoised = model_for_step(denoiser, afs, i)(x, s)
        d = (x - denoised) / s
        slopes, points = [*slopes, d][-max_order:], [*points, s][-max_order:]
        weights = lagrange_weights(points, s, s_next, time)
        x_next = x + sum(w * g for w, g in zip(weights, slopes, strict=True))
        report_step(callback, i, s, s_next, x, denoised, x_next)
        x = x_next
    return x


def ipndm_v(
    denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, callback: Callback = None, afs=None, max_order: int = 4
) -> torch.Tensor:
    """iPNDM with variable steps: Adams-Bashforth whose weights integrate the Lagrange polynomial through the past
    slopes exactly over each (unequal) sigma step. Order up to 4 on any schedule."""
    _check_order("ipndm_v", max_order, 4)
    return _adams_bashforth(denoiser, x, sigmas, callback, afs, max_order, _identity)


def deis(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    callback: Callback = None,
    afs=None,
    max_order: int = 3,
    vp_sigma_min: float = 0.002,
    vp_sigma_max: float = 80.0,
) -> torch.Tensor:
    """DEIS tAB (Zhang & Chen 2022): Adams-Bashforth on the noise prediction with the polynomial taken in VP time t.

    dx/dsigma = eps, so x_next = x + sum_j eps_j * integral l_j(t(sigma)) dsigma; t(sigma) is the VP time whose
    linear-beta process spans [vp_sigma_min, vp_sigma_max] (the reference code's mapping).
    """
    _check_order("deis", max_order, 4)
    return _adams_bashforth(denoiser, x, sigmas, callback, afs, max_order, vp_time_of_sigma(vp_sigma_min, vp_sigma_max))


# ---------------------------------------------------------------------------------------------------------------
# DPM-Solver++ (multistep, data prediction)


def dpmpp(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    callback: Callback = None,
    afs=None,
    max_order: int = 3,
    lower_order_final: bool = True,
    exact_third_order: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M/3M) (Lu et al. 2022) in lambda = -log(sigma), data prediction D, one evaluation per step.

    Order 1 is DDIM in data prediction: x_t = (sigma_t/sigma_s) x + (1 - sigma_t/sigma_s) D_s.

    The published 3M update (official code, diffusers, the GITS reference) is x_t = ... + phi_2 D1 - phi_3 D2 with
    D2 ~ h^2 D''/2, while the Taylor expansion of the exact integral needs -h^2 phi_3 D'' = -2 phi_3 D2: as
    published, 3M converges at order 2 (measured on the exact Gaussian ODE). It stays the default so results
    compare with the papers; `exact_third_order=True` uses 2 phi_3 and converges at order 3.
    """
    _check_order("dpmpp", max_order, 3)
    num_steps = len(sigmas) - 1
    history: list[tuple[float, torch.Tensor]] = []  # (lambda, D), newest last
    for i, (s, s_next) in step_pairs(sigmas):
        denoised = model_for_step(denoiser, afs, i)(x, s)
        history = [*history, (-log(s), denoised)][-3:]
        order = min(_order(i, num_steps, max_order, lower_order_final, s_next), len(history))
        ratio = s_next / s
        phi_1 = ratio - 1.0  # expm1(-h), exact also for s_next = 0
        x_next = ratio * x - phi_1 * denoised
        if order >= 2:
            h = log(s / s_next)
            lam0, d0 = history[-1]
            lam1, d1 = history[-2]
            r0 = (lam0 - lam1) / h
            diff0 = (d0 - d1) / r0
            if order == 2:
                x_next = x_next - 0.5 * phi_1 * diff0
            else:
                lam2, d2 = history[-3]
                r1 = (lam1 - lam2) / h
                diff1 = (d1 - d2) / r1
                first = diff0 + (r0 / (r0 + r1)) * (diff0 - diff1)
                second = (diff0 - diff1) / (r0 + r1)
                phi_2 = phi_1 / h + 1.0
                phi_3 = phi_2 / h - 0.5
                x_next = x_next + phi_2 * first - (2.0 if exact_third_order else 1.0) * phi_3 * second
        report_step(callback, i, s, s_next, x, denoised, x_next)
        x = x_next
    return x


# ---------------------------------------------------------------------------------------------------------------
# UniPC (multistep predictor-corrector, data prediction)


def _unipc_coefficients(rks: list, hh, b_h, order: int) -> tuple:
    """The linear system R rho = b of UniPC (Zhao et al. 2023), in float64 (numpy; torch for tensor sigmas)."""
    h_phi_1 = expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    factorial = 1
    rows, rhs = [], []
    differentiable = isinstance(hh, torch.Tensor)
    if differentiable:
        nodes = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in [*rks, 1.0]])
    else:
        nodes = np.asarray([*rks, 1.0], dtype=np.float64)
    for k in range(1, order + 1):
        rows.append(nodes ** (k - 1))
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    if differentiable:
        return torch.stack(rows), torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in rhs])
    return np.stack(rows), np.asarray(rhs)


def _solve(matrix, rhs) -> list:
    if isinstance(matrix, torch.Tensor):
        return list(torch.linalg.solve(matrix, rhs).unbind(0))
    return np.linalg.solve(matrix, rhs).tolist()


def unipc(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    callback: Callback = None,
    afs=None,
    max_order: int = 3,
    variant: str = "bh2",
    use_corrector: bool = True,
    lower_order_final: bool = True,
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023): UniP predictor of order p plus the UniC corrector (order p+1), data prediction.

    The corrector reuses the model evaluation at the predicted point, which also feeds the next predictor, so it
    costs no extra NFE; it is skipped after the last step (nothing is evaluated there). `variant` picks B(h):
    bh1 = h, bh2 = expm1(h) (in data prediction, with hh = -h). Hence the callback's `denoised` after the first
    step is D at the predicted point, not at the corrected `x`.
    """
    _check_order("unipc", max_order, 3)
    if variant not in ("bh1", "bh2"):
        raise FewstepError(f"unipc variant must be 'bh1' or 'bh2', got {variant!r}")
    num_steps = len(sigmas) - 1
    values = sigma_values(sigmas)
    denoised = model_for_step(denoiser, afs, 0)(x, values[0])
    history: list[tuple[float, torch.Tensor]] = [(-log(values[0]), denoised)]  # (lambda, D), newest last
    for i, (s, s_next) in step_pairs(sigmas):
        order = min(_order(i, num_steps, max_order, lower_order_final, s_next), len(history))
        ratio = s_next / s
        x_base = ratio * x - (ratio - 1.0) * history[-1][1]
        last = i == num_steps - 1
        if s_next == 0:
            x_next, denoised_next = x_base, None
        else:
            hh = -log(s / s_next)
            b_h = hh if variant == "bh1" else expm1(hh)
            lam0, d0 = history[-1]
            rks = [(history[-(k + 1)][0] - lam0) / -hh for k in range(1, order)]
            diffs = [(history[-(k + 1)][1] - d0) / rk for k, rk in zip(range(1, order), rks, strict=True)]
            matrix, rhs = _unipc_coefficients(rks, hh, b_h, order)
            x_next = x_base
            if diffs:
                rhos_p = [0.5] if order == 2 else _solve(matrix[:-1, :-1], rhs[:-1])
                x_next = x_base - b_h * sum(r * g for r, g in zip(rhos_p, diffs, strict=True))
            denoised_next = None
            if not last:
                denoised_next = denoiser(x_next, s_next)
                if use_corrector:
                    rhos_c = [0.5] if order == 1 else _solve(matrix, rhs)
                    correction = sum(r * g for r, g in zip(rhos_c[:-1], diffs, strict=True)) + rhos_c[-1] * (
                        denoised_next - d0
                    )
                    x_next = x_base - b_h * correction
        report_step(callback, i, s, s_next, x, history[-1][1], x_next)
        if denoised_next is not None:
            history = [*history, (-log(s_next), denoised_next)][-3:]
        x = x_next
    return x
