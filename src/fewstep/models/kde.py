"""The optimal denoiser of the empirical data distribution (a Gaussian kernel density estimate).

For data points y_1..y_N, the KDE with bandwidth sigma is exactly the noisy data distribution at noise level
sigma, and its posterior mean is a softmax-weighted mean of the data:

    D(x, sigma) = sum_i w_i y_i,   w = softmax_i(-||x - y_i||^2 / (2 sigma^2)).

One call is one Gaussian mean-shift step with bandwidth sigma (Chen et al., arXiv 2305.19947).
"""

from __future__ import annotations

import torch
from torch import nn

from fewstep.errors import FewstepError
from fewstep.models.denoiser import sigma_column

# MKL's GEMM gives a row the same bits whatever the other rows are once the row count is a multiple of 16
# (smaller counts take another kernel). Padding to it makes samples independent of the batch size.
_ROW_BLOCK = 16


class KDEDenoiser(nn.Module):
    """Streaming, numerically stable optimal denoiser.

    The softmax is accumulated over chunks of `chunk_size` data points with a running maximum (log-sum-exp),
    so working memory is O(batch x (chunk_size + dim)) whatever the dataset size (60k x 3072 included).
    Distances are taken after centring the data, and ||x||^2 is dropped from the logits (it is constant
    over i), which keeps float32 logits accurate down to sigma = 0.002.
    """

    rows_independent = True  # each row's result does not depend on the other rows (see models.denoiser)

    def fingerprint(self) -> None:
        """None: a closed form is identified by its data (part of every cache key), not by weights."""
        return None

    def __init__(self, data: torch.Tensor, chunk_size: int = 2048, dtype: str | torch.dtype = "float32"):
        super().__init__()
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        flat = data.reshape(data.shape[0], -1).to(torch.float64)
        center = flat.mean(0)
        points = (flat - center).to(dtype)
        self.register_buffer("center", center.to(dtype))
        self.register_buffer("points", points)
        self.register_buffer("half_sq_norms", 0.5 * (points.double() ** 2).sum(1).to(dtype))
        self.chunk_size = int(chunk_size)
        self.image_shape = tuple(data.shape[1:])  # what it samples: the data's own shape

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        dtype = self.points.dtype
        if x[0].numel() != self.points.shape[1]:
            raise FewstepError(f"the KDE's data are {self.image_shape} ({self.points.shape[1]} values each); "
                               f"x is {tuple(x.shape[1:])}")  # fmt: skip
        q = x.reshape(batch, -1).to(dtype) - self.center
        inv_var = 1.0 / sigma_column(sigma, batch, torch.float64, x.device) ** 2
        pad = -batch % _ROW_BLOCK
        if pad:
            q = torch.cat([q, q.new_zeros(pad, q.shape[1])])
            inv_var = torch.cat([inv_var, inv_var.new_ones(pad, 1)])
        inv_var = inv_var.to(dtype)

        running_max = torch.full((q.shape[0], 1), -torch.inf, dtype=dtype, device=x.device)
        weight_sum = torch.zeros((q.shape[0], 1), dtype=dtype, device=x.device)
        weighted = torch.zeros_like(q)
        for start in range(0, self.points.shape[0], self.chunk_size):
            pts = self.points[start : start + self.chunk_size]
            # -||q - y||^2 / (2 sigma^2) up to the row constant -||q||^2 / (2 sigma^2)
            logits = (q @ pts.T - self.half_sq_norms[start : start + self.chunk_size]) * inv_var
            new_max = torch.maximum(running_max, logits.amax(1, keepdim=True))
            rescale = torch.exp(running_max - new_max)
            w = torch.exp(logits - new_max)
            weight_sum = weight_sum * rescale + w.sum(1, keepdim=True)
            weighted = weighted * rescale + w @ pts
            running_max = new_max
        out = weighted[:batch] / weight_sum[:batch] + self.center
        return out.reshape(x.shape).to(x.dtype)

    def weights(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """The full softmax weights (batch, N), for analysis on small data."""
        q = x.reshape(x.shape[0], -1).to(self.points.dtype) - self.center
        inv_var = 1.0 / sigma_column(sigma, x.shape[0], self.points.dtype, x.device) ** 2
        return torch.softmax((q @ self.points.T - self.half_sq_norms) * inv_var, dim=1)
