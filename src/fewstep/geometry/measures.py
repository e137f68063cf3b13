"""Measures of sampling-trajectory geometry (Chen et al. 2023, arXiv 2305.19947; Chen et al., ICML 2024, GITS).

The papers observe that probability-flow ODE trajectories x(sigma) lie in a very low-dimensional subspace, all
share one "boomerang" shape relative to their chord x(sigma_max) -> x(sigma_min), and that the implicit denoising
trajectory D(x(sigma), sigma) reaches the final sample much earlier than x(sigma) does. With the optimal (KDE)
denoiser one denoiser call is exactly one Gaussian mean-shift step with bandwidth sigma.

Shapes: `states` is (T+1, B, D) (x at every sigma, final state included), `denoised` is (T, B, D), as in
`fewstep.geometry.recording.Trajectories`. Everything is computed in float64 and returned on the CPU.
"""

from __future__ import annotations

import torch


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def pca_explained_variance(traj_states: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Per trajectory, the cumulative fraction of variance explained by its top 1..k principal components, (B, k).

    The T+1 points of each trajectory are centred on their mean; the singular values of the centred
    (T+1) x D matrix give the variances. Column j is the fraction explained by the top j+1 components.
    """
    points = _f64(traj_states).transpose(0, 1)  # (B, T+1, D)
    centred = points - points.mean(dim=1, keepdim=True)
    if centred.shape[1] < centred.shape[2]:
        # Same singular values, much faster: LAPACK's SVD of a wide (T+1) x D matrix is slow on some builds,
        # so reduce it to the small triangular factor of the tall transpose first (orthogonal, exact in theory).
        centred = torch.linalg.qr(centred.mT, mode="r").R
    variances = torch.linalg.svdvals(centred) ** 2  # (B, min(T+1, D)), descending
    cumulative = variances.cumsum(dim=1) / variances.sum(dim=1, keepdim=True)
    if k > cumulative.shape[1]:  # fewer points than components: the rest explain nothing more
        cumulative = torch.cat([cumulative, cumulative[:, -1:].expand(-1, k - cumulative.shape[1])], dim=1)
    return cumulative[:, :k]


def chord_deviation(points: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Distance of each point (..., B, D) from the straight line through start and end (B, D), per sample.

    The reference code's `cal_deviation`: the part of (end - point) orthogonal to (end - start).
    """
    axis = end - start
    axis = axis / axis.norm(dim=-1, keepdim=True)
    to_end = end - points
    return (to_end - (to_end * axis).sum(-1, keepdim=True) * axis).norm(dim=-1)


def chord_deviation_curves(states: torch.Tensor) -> torch.Tensor:
    """Distance of every state from the chord through the first and the last state, over the chord length, (T+1, B).

    Zero at both ends; the "boomerang" of the papers is the shape of this curve against the step index.
    """
    points = _f64(states)
    start, end = points[0], points[-1]
    return chord_deviation(points, start, end) / (end - start).norm(dim=-1)


def shape_similarity(curves: torch.Tensor) -> dict:
    """How much B curves (T+1, B) share one shape.

    Returns a dict with
      mean:      (T+1,) the mean curve;
      spreads:   (B,) ||curve_b - mean|| / ||mean|| per sample;
      spread:    float, the mean of `spreads` (small = all trajectories share one shape);
      argmax:    (B,) long, the index (into the sigmas) where each curve is largest.
    """
    curves = _f64(curves)
    mean = curves.mean(dim=1)
    spreads = (curves - mean[:, None]).norm(dim=0) / mean.norm()
    return {"mean": mean, "spreads": spreads, "spread": float(spreads.mean()), "argmax": curves.argmax(dim=0)}


def distance_to_final(states: torch.Tensor, denoised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances of the sampling and of the denoising trajectory to the final sample, each (T, B).

    Row i holds ||x(sigma_i) - x_final|| and ||D(x(sigma_i), sigma_i) - x_final||, both divided by
    ||x(sigma_0) - x_final|| per sample, so the sampling distance starts at 1.
    """
    states, denoised = _f64(states), _f64(denoised)
    final = states[-1]
    scale = (states[0] - final).norm(dim=-1)
    num_steps = denoised.shape[0]
    sampling = (states[:num_steps] - final).norm(dim=-1) / scale
    denoising = (denoised - final).norm(dim=-1) / scale
    return sampling, denoising


def turning_angles(states: torch.Tensor) -> torch.Tensor:
    """Angle (radians, in [0, pi]) between successive displacements x_{i+1} - x_i and x_{i+2} - x_{i+1}, (T-1, B).

    Uses angle = 2 atan2(|u - v|, |u + v|) on the unit vectors, accurate near 0 and pi (unlike acos).
    A zero displacement gives nan.
    """
    steps = _f64(states).diff(dim=0)
    unit = steps / steps.norm(dim=-1, keepdim=True)
    u, v = unit[:-1], unit[1:]
    return 2 * torch.atan2((u - v).norm(dim=-1), (u + v).norm(dim=-1))


def mean_shift_step(x: torch.Tensor, data: torch.Tensor, bandwidth: float | torch.Tensor) -> torch.Tensor:
    """One Gaussian mean-shift step from x (B, ...) over data (N, ...), computed directly in float64.

    m(x) = sum_i w_i y_i with w = softmax_i(-||x - y_i||^2 / (2 h^2)); the squared distances are taken from the
    differences themselves (not the ||x||^2 - 2 x.y + ||y||^2 expansion). `bandwidth` is a number or one per
    sample (B,). Returns float64 in the shape of x. For the optimal denoiser, D(x, sigma) = m(x) with h = sigma.
    """
    xs = _f64(x).reshape(x.shape[0], -1)
    ys = _f64(data).reshape(data.shape[0], -1)
    h = torch.as_tensor(bandwidth, dtype=torch.float64).reshape(-1, 1)
    sq_dist = torch.cdist(xs, ys, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    weights = torch.softmax(-sq_dist / (2 * h**2), dim=1)
    return (weights @ ys).reshape(x.shape)


def effective_modes(weights: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of each row of softmax weights (B, N), (B,): the effective number of data points averaged.

    N for uniform weights, 1 for one-hot ones. Along a KDE trajectory (annealed mean shift) it falls from
    about N at large sigma to about 1 at small sigma.
    """
    w = _f64(weights)
    w = w / w.sum(dim=1, keepdim=True)
    return torch.exp(-torch.special.xlogy(w, w).sum(dim=1))


@torch.no_grad()
def score_deviation(
    denoiser_a, denoiser_b, states: torch.Tensor, sigmas: torch.Tensor, *, shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """||D_a(x_i, sigma_i) - D_b(x_i, sigma_i)|| at the states of a trajectory, for i < T, (T, B).

    `states` (T+1, B, D) are flattened; `shape` (C, H, W) restores the sample shape for denoisers that need it.
    The states are fed in their own dtype and device.
    """
    num_steps = len(sigmas) - 1
    values = torch.as_tensor(sigmas, dtype=torch.float64).tolist()
    rows = []
    for i in range(num_steps):
        x = states[i]
        if shape is not None:
            x = x.reshape(x.shape[0], *shape)
        diff = _f64(denoiser_a(x, values[i])) - _f64(denoiser_b(x, values[i]))
        rows.append(diff.reshape(diff.shape[0], -1).norm(dim=-1))
    return torch.stack(rows)
