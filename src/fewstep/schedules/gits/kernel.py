"""GITS (Chen et al., ICML 2024): a time schedule searched by dynamic programming over a fine grid.

1. Warm-up: a teacher solver runs a few trajectories on the fine grid (61 points of the EDM polynomial schedule).
2. Cost matrix: C[i, j] = error of one Euler step from the teacher's point i straight to grid time j, against
   the teacher's point j, averaged over warm-up samples.
3. DP: V_1(i) = C[i, last], V_k(i) = min_{j > i} C[i, j] + coeff * V_{k-1}(j); the K-step schedule is the
   argmin path from grid point 0. One pass gives the best path for every step count up to K.
Everything here is pure tensor code (no Lightning): the sums it returns add up across batches and ranks.
"""

from __future__ import annotations

import torch

from fewstep.errors import FewstepError
from fewstep.geometry.measures import chord_deviation

METRICS = ("l1", "l2", "dev")


def cost_sums(states: torch.Tensor, slopes: torch.Tensor, grid: torch.Tensor, metric: str) -> torch.Tensor:
    """Per-pair sums over the batch of the one-Euler-step cost, (N, N) float64; zero on and below the diagonal.

    Vectorised over targets j and samples; one loop over the N-1 starting points keeps memory at
    O(N x batch x dim) however large the images.
    """
    if metric not in METRICS:
        raise FewstepError(f"unknown gits metric {metric!r}; choose one of {list(METRICS)}")
    n = len(grid)
    flat = states.flatten(2).double()  # (N, B, D)
    d = slopes.flatten(2).double()
    sums = torch.zeros(n, n, dtype=torch.float64)
    if metric == "dev":
        teacher_dev = chord_deviation(flat, flat[0], flat[-1])  # (N, B)
    for i in range(n - 1):
        steps = (grid[i + 1 :] - grid[i]).double().to(flat.device)
        predicted = flat[i] + steps[:, None, None] * d[i]  # (J, B, D)
        if metric == "l1":
            cost = (predicted - flat[i + 1 :]).abs().sum(-1)
        elif metric == "l2":
            cost = (predicted - flat[i + 1 :]).norm(dim=-1)
        else:
            cost = chord_deviation(predicted, flat[0], flat[-1]) - teacher_dev[i + 1 :]
        sums[i, i + 1 :] = cost.sum(1).cpu()
    return sums


def dynamic_programming(cost: torch.Tensor, coeff: float, max_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Values V[k, i] (best discounted cost of k steps from grid point i to the last) and the argmin next points.

    O(max_steps x N^2), vectorised over (i, j). Ties go to the smallest j, as in the reference code.
    """
    n = cost.shape[0]
    if not 1 <= max_steps <= n - 1:
        raise FewstepError(f"a grid of {n} points allows 1..{n - 1} steps, not {max_steps}; raise grid_size")
    values = torch.full((max_steps + 1, n), torch.inf, dtype=torch.float64)
    nxt = torch.full((max_steps + 1, n), -1, dtype=torch.long)
    values[1, : n - 1], nxt[1, : n - 1] = cost[: n - 1, n - 1], n - 1
    later = torch.ones(n, n, dtype=torch.bool).triu(1)
    for k in range(2, max_steps + 1):
        total = torch.where(later, cost + coeff * values[k - 1][None, :], torch.inf)
        values[k], nxt[k] = total.min(dim=1)
    return values, nxt


def best_path(nxt: torch.Tensor, num_steps: int) -> list[int]:
    """Grid indices of the best `num_steps`-step path from point 0 (from `dynamic_programming`)."""
    path = [0]
    for k in range(num_steps, 0, -1):
        path.append(int(nxt[k, path[-1]]))
    return path
