"""The denoiser protocol: D(x, sigma) -> x0_hat in the EDM/VE convention x = x0 + sigma * eps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from fewstep.errors import FewstepError


@runtime_checkable
class Denoiser(Protocol):
    """A callable estimating E[x0 | x] at noise level sigma (a float, or a tensor broadcastable per sample).

    That is all a denoiser must be. A model may also declare, as attributes or methods (read in one place,
    `traits`, so the pipeline asks instead of probing):
    - `image_shape`: (C, H, W) of the images it makes (checked against the dataset's);
    - `sample_shape`: the shape the solver integrates, when it differs (a latent model's latents);
    - `sigma_range`: (lowest, highest) sigma it was trained for (the config must stay inside);
    - `decode(x)`: latents to images in [-1, 1] (a latent model's VAE);
    - `for_seeds(seeds)`: the denoiser for one batch, picking each sample's condition (class, prompt) from its seed;
    - `rows_independent = True`: each row's output depends on that row only (closed forms): no fixed row blocks;
    - `fingerprint()`: a string identifying its weights for cache keys, or None when the data identifies it.
    """

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor: ...


RANGE_RTOL = 1e-3  # relative slack at the ends of a sigma range: configs and text files round the printed range
#   (e.g. sigma_min=0.0292 for Stable Diffusion's 0.029168)


def inside_range(low: float, high: float, allowed: tuple[float, float]) -> bool:
    """[low, high] lies inside `allowed` = (lowest, highest), up to `RANGE_RTOL` at each end."""
    return low >= allowed[0] * (1 - RANGE_RTOL) and high <= allowed[1] * (1 + RANGE_RTOL)


@dataclass(frozen=True)
class Traits:
    """What a denoiser declares beyond `D(x, sigma)` (see `Denoiser`), as plain values."""

    image_shape: tuple[int, ...] | None
    sample_shape: tuple[int, ...] | None
    sigma_range: tuple[float, float] | None
    decodes: bool
    per_seed: bool
    rows_independent: bool


def traits(denoiser) -> Traits:
    def shape(name):
        value = getattr(denoiser, name, None)
        return tuple(int(d) for d in value) if value is not None else None

    sigma_range = getattr(denoiser, "sigma_range", None)
    return Traits(
        image_shape=shape("image_shape"),
        sample_shape=shape("sample_shape"),
        sigma_range=tuple(float(v) for v in sigma_range) if sigma_range is not None else None,
        decodes=callable(getattr(denoiser, "decode", None)),
        per_seed=callable(getattr(denoiser, "for_seeds", None)),
        rows_independent=bool(getattr(denoiser, "rows_independent", False)),
    )


# what a network's wrapper adds to its weights (a discrete model's output parametrisation, guidance, shapes)
_FINGERPRINTED_ATTRIBUTES = ("prediction_type", "timestep", "sigma_range", "guidance_scale", "image_shape",
                             "sample_shape")  # fmt: skip


def weights_fingerprint(denoiser) -> str | None:
    """A hash of a network's parameters and declared settings, so a retrained checkpoint at the same path never
    reuses stale caches. A model's own `fingerprint()` wins; other callables (closed forms written by a user)
    have none: their caches are keyed by their config and the data."""
    declared = getattr(denoiser, "fingerprint", None)
    if callable(declared):
        return declared()
    if not isinstance(denoiser, torch.nn.Module):
        return None
    import hashlib

    from fewstep.utils.storage import tensor_fingerprint

    digest = hashlib.sha256()
    for name, tensor in denoiser.state_dict().items():
        digest.update(f"{name}:{tensor_fingerprint(tensor)}".encode())
    for attribute in _FINGERPRINTED_ATTRIBUTES:
        digest.update(f"{attribute}={getattr(denoiser, attribute, None)!r}".encode())
    extra = getattr(denoiser, "fingerprint_extra", None)  # buffers a wrapper keeps outside its state dict
    if callable(extra):
        digest.update(str(extra()).encode())
    return digest.hexdigest()[:16]


def sigma_per_sample(sigma: float | torch.Tensor, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Sigma as one value per sample, shape (batch,), whether given as a number, a 0-d tensor or one per sample:
    how every model reads the `sigma` of `D(x, sigma)` (converted to `dtype` once, from float64)."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=device).reshape(-1)
    if s.numel() not in (1, batch):
        raise FewstepError(f"sigma must be one value or one per sample ({batch}), got {s.numel()} values")
    return s.expand(batch).to(dtype) if s.numel() == 1 else s.to(dtype)


def sigma_column(sigma: float | torch.Tensor, batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Sigma as a (batch, 1) column (see `sigma_per_sample`)."""
    return sigma_per_sample(sigma, batch, dtype, device).reshape(batch, 1)


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
    if (traits(denoiser).rows_independent or not isinstance(denoiser, torch.nn.Module)
            or torch.device(device).type != "cpu"):  # fmt: skip
        return for_seeds(denoiser, seeds)
    return RowBlocks(denoiser, seeds)


class OutputChecked:
    """A denoiser whose every output must have its input's shape: a wrong one (unbatched, flattened, another
    layout) would otherwise broadcast silently into the samples or fail deep inside a solver."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        out = self.denoiser(x, sigma)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
            raise FewstepError(f"the denoiser returned {got} for x of shape {tuple(x.shape)}: D(x, sigma) must "
                               "return the denoised x, a tensor of x's shape (batch first)")  # fmt: skip
        return out


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


def device_of(denoiser) -> torch.device:
    """Where a network's weights are (the CPU for a callable without any)."""
    if isinstance(denoiser, torch.nn.Module):
        for tensor in [*denoiser.parameters(), *denoiser.buffers()]:
            return tensor.device
    return torch.device("cpu")


def decode(denoiser, x: torch.Tensor) -> torch.Tensor:
    """Samples as images: a latent model defines `decode` (its VAE); any other model samples images directly."""
    dec = getattr(denoiser, "decode", None)
    return dec(x) if dec is not None else x


class CountingDenoiser:
    """Wraps a denoiser and counts its calls (the NFE a sampler really spent) and their rows (model evaluations,
    one per sample per call: what a search's record counts)."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.calls = self.rows = 0

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.denoiser(x, sigma)
