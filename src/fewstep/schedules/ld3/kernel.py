"""LD3's parametrisation of a schedule and its losses, as pure tensor code (Tong et al., ICLR 2025; vinhsuhi/LD3,
`discretize_model_wrapper` in lambda mode).

A schedule of K steps from sigma_max to sigma_min is K logits theta: log sigma falls from log sigma_max to
log sigma_min in steps proportional to softmax(theta). Equal logits are the log-SNR-uniform schedule (LD3's start);
any strictly decreasing schedule with those ends has logits (`logits_of`). The ends are pinned to the exact values.
"""

from __future__ import annotations

import torch

from fewstep.errors import FewstepError


def sigmas_of(theta: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The K + 1 sigmas (float64, differentiable in theta) of logits `theta` (K,)."""
    fractions = torch.cumsum(torch.softmax(theta.double(), 0), 0)
    high, low = torch.tensor(sigma_max, dtype=torch.float64).log(), torch.tensor(sigma_min, dtype=torch.float64).log()
    inner = (high + (low - high) * fractions[:-1] / fractions[-1]).exp()
    ends = torch.tensor([sigma_max, sigma_min], dtype=torch.float64)
    return torch.cat([ends[:1], inner, ends[1:]])


def logits_of(sigmas: torch.Tensor) -> torch.Tensor:
    """Logits whose schedule is `sigmas` (strictly decreasing, positive): the log of each step's share of the fall in
    log sigma."""
    falls = -torch.diff(sigmas.double().log())
    if not bool((falls > 0).all()):
        raise FewstepError(f"ld3 starts from a strictly decreasing schedule, got {sigmas.tolist()}")
    return falls.log()


def per_sample_loss(samples: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """(B,) distance of each sample to its teacher target: l2 (Euclidean), mse (LD3's "L2": squared, per value) or
    l1 (per value, as LD3's L1)."""
    difference = (samples - targets).flatten(1).double()
    if loss == "l2":
        return difference.norm(dim=1)
    if loss == "mse":
        return difference.pow(2).mean(1)
    if loss == "l1":
        return difference.abs().mean(1)
    raise FewstepError(f"unknown ld3 loss {loss!r}; choose l2, mse or l1")


def project_to_ball(moved: torch.Tensor, centre: torch.Tensor, radius: float) -> torch.Tensor:
    """Each row of `moved` pulled back onto the L2 ball of `radius` around its row of `centre` (LD3's soft teacher
    bound on how far a training sample's noise may move)."""
    offset = (moved - centre).flatten(1)
    norm = offset.norm(dim=1, keepdim=True)
    scale = torch.where(norm > radius, radius / norm.clamp_min(1e-30), torch.ones_like(norm))
    return centre + (offset * scale).reshape(moved.shape)
