"""The denoiser protocol: D(x, sigma) -> x0_hat in the EDM/VE convention x = x0 + sigma * eps."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """A callable estimating E[x0 | x] at noise level sigma (a float, or a tensor broadcastable per sample)."""

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor: ...


def sigma_column(sigma: float | torch.Tensor, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Sigma as a (batch, 1) column, whether given as a number, a 0-d tensor or one value per sample."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=device).reshape(-1, 1)
    return s.expand(batch, 1).to(dtype) if s.shape[0] == 1 else s.to(dtype)


def for_seeds(denoiser, seeds: torch.Tensor):
    """The denoiser for one batch of seeds. A conditional model (class labels, prompts) defines `for_seeds` and
    picks each sample's condition from its seed, so samples do not depend on batching or the number of ranks."""
    bind = getattr(denoiser, "for_seeds", None)
    return bind(seeds) if bind is not None else denoiser


ROW_BLOCK = 16  # rows per network call on the CPU: oneDNN/MKL pick kernels by batch size, not by row content


def bind_seeds(denoiser, seeds: torch.Tensor, device) -> Denoiser:
    """The denoiser for one batch of seeds, evaluated so that each sample's bits do not depend on the batch it is
    in: a network on the CPU sees fixed blocks of `ROW_BLOCK` rows (the last one padded), as the KDE pads its
    matrix products. A model that declares `rows_independent` (closed forms) is called as it is; on a GPU,
    kernels are chosen per call anyway, so the blocks are not imposed there (see README, Determinism)."""
    if (getattr(denoiser, "rows_independent", False) or not isinstance(denoiser, torch.nn.Module)
            or torch.device(device).type != "cpu"):  # fmt: skip
        return for_seeds(denoiser, seeds)
    return RowBlocks(denoiser, seeds)


class RowBlocks:
    """Calls a per-seed-bound denoiser on fixed-size blocks of rows, padding the last block."""

    def __init__(self, denoiser, seeds: torch.Tensor, rows: int = ROW_BLOCK):
        self.denoiser, self.seeds, self.rows = denoiser, seeds, rows

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        n, out = len(x), []
        per_row = isinstance(sigma, torch.Tensor) and sigma.ndim > 0 and sigma.shape[0] == n and n > 1
        for start in range(0, n, self.rows):
            block = slice(start, start + self.rows)
            xs, seeds = x[block], self.seeds[block]
            s = sigma[block] if per_row else sigma
            pad = self.rows - len(xs)
            if pad:
                xs = torch.cat([xs, xs.new_zeros(pad, *xs.shape[1:])])
                seeds = torch.cat([seeds, seeds[:1].expand(pad)])
                if per_row:
                    s = torch.cat([s, s[:1].expand(pad, *s.shape[1:])])
            out.append(for_seeds(self.denoiser, seeds)(xs, s)[: self.rows - pad])
        return torch.cat(out)


def decode(denoiser, x: torch.Tensor) -> torch.Tensor:
    """Samples as images: a latent model defines `decode` (its VAE); any other model samples images directly."""
    dec = getattr(denoiser, "decode", None)
    return dec(x) if dec is not None else x


class CountingDenoiser:
    """Wraps a denoiser and counts its calls: the NFE a sampler really spent."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.denoiser(x, sigma)
