"""A discrete-time VP network (DDPM-style: epsilon, v or x0 prediction at integer timesteps) as a denoiser D(x, sigma).

A VP model sees x_vp = alpha_t x0 + s_t eps with alpha_t = sqrt(abar_t), s_t = sqrt(1 - abar_t). Dividing by alpha_t
gives the VE state x = x0 + sigma_t eps with sigma_t = s_t / alpha_t = sqrt((1 - abar_t) / abar_t), so at any sigma
the network input is x_vp = x / sqrt(1 + sigma^2) (alpha = 1 / sqrt(1 + sigma^2), s = sigma / sqrt(1 + sigma^2)).
The timestep fed to the network is found from sigma on the discrete table sigma_0 < ... < sigma_{T-1}.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from fewstep.errors import FewstepError
from fewstep.models.denoiser import inside_range, sigma_per_sample

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_MODES = ("interpolate", "nearest")


def vp_linear_betas(sigma_min: float, sigma_max: float, epsilon_s: float = 1e-3) -> tuple[float, float]:
    """(beta_d, beta_min) of the linear-beta VP-SDE, sigma(t)^2 = exp(beta_d t^2 / 2 + beta_min t) - 1, with
    sigma(epsilon_s) = sigma_min and sigma(1) = sigma_max."""
    log_max, log_min = math.log1p(sigma_max**2), math.log1p(sigma_min**2)
    beta_d = 2 * (log_min / epsilon_s - log_max) / (epsilon_s - 1)
    return beta_d, log_max - 0.5 * beta_d


def discrete_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t) for every discrete timestep t, in float64 (increasing with t)."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
    return ((1 - abar) / abar).sqrt()


def sigma_to_t(log_sigmas: torch.Tensor, sigma: torch.Tensor, mode: str = "interpolate") -> torch.Tensor:
    """The (float) timestep of each sigma on the increasing table log_sigmas[t] = log sigma_t.

    "nearest": argmin_t |log sigma - log sigma_t|. "interpolate": t = i + w with w = (log sigma - log sigma_i) /
    (log sigma_{i+1} - log sigma_i), i.e. linear in log sigma between the neighbours (k-diffusion's
    DiscreteSchedule.sigma_to_t); clamped to [0, T-1] outside the table.
    """
    log_sigma = sigma.to(torch.float64).log()
    if mode == "nearest":
        return (log_sigma.reshape(-1, 1) - log_sigmas).abs().argmin(dim=1).to(torch.float64).reshape(sigma.shape)
    high = torch.searchsorted(log_sigmas, log_sigma.contiguous()).clamp(1, len(log_sigmas) - 1)
    low = high - 1
    w = ((log_sigma - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])).clamp(0, 1)
    return low.to(torch.float64) + w


class VPDiscreteDenoiser(nn.Module):
    """D(x, sigma) for a discrete-time VP network `net(x_vp, t, **cond) -> output` (t: float tensor, one per sample).

    prediction_type (diffusers' names): "epsilon" -> D = x - sigma eps; "v_prediction" (v = alpha eps - s x0)
    -> D = alpha x_vp - s v; "sample" -> D = output. `timestep` picks how sigma maps to t: "interpolate" (float t,
    linear in log sigma) or "nearest" (the closest discrete timestep).

    Conditioning: `cond` (a dict of keyword arguments for `net`) is held by the denoiser. With a `conditioner`
    (seeds -> cond dict, one condition per seed), `for_seeds(seeds)` returns a copy bound to that batch's conditions;
    an unbound call conditions on seeds 0..B-1. The sigma/t conversion runs in float64, the rest in x's dtype.
    """

    def __init__(
        self,
        net: Callable[..., torch.Tensor],
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        timestep: str = "interpolate",
        *,
        cond: dict | None = None,
        conditioner: Callable[[torch.Tensor], dict] | None = None,
    ):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise FewstepError(
                f"prediction_type={prediction_type!r} is not supported; choose one of {PREDICTION_TYPES}"
            )
        if timestep not in TIMESTEP_MODES:
            raise FewstepError(f"timestep={timestep!r} is not supported; choose one of {TIMESTEP_MODES}")
        self.net = net
        self.prediction_type = prediction_type
        self.timestep = timestep
        self.cond = dict(cond or {})
        self.conditioner = conditioner
        self.batch: int | None = None  # the batch size a bound copy was made for
        # Plain float64 tensors, not buffers: `.half()` or `.to(dtype)` on the module must not round the schedule.
        sigmas = discrete_sigmas(alphas_cumprod)
        if not (torch.isfinite(sigmas).all() and (sigmas > 0).all() and (sigmas.diff() > 0).all()):
            raise FewstepError(
                "alphas_cumprod must decrease strictly inside (0, 1) so that sigma_t = sqrt((1 - abar_t) / abar_t) "
                "increases with t; check the scheduler config (betas, rescale_betas_zero_snr)"
            )
        self._log_sigmas = {torch.device("cpu"): sigmas.log()}
        self._sigma_range = (float(sigmas[0]), float(sigmas[-1]))

    @property
    def sigma_range(self) -> tuple[float, float]:
        """(smallest, largest) sigma of the discrete training timesteps."""
        return self._sigma_range

    def training_sigmas(self) -> torch.Tensor:
        """sigma_t of the discrete training timesteps, float64, increasing with t (what integer timesteps mean)."""
        return self._log_sigmas[torch.device("cpu")].exp()

    def fingerprint_extra(self) -> str:
        """The sigma table, kept outside the state dict (see `models.denoiser.weights_fingerprint`)."""
        from fewstep.utils.storage import tensor_fingerprint

        return tensor_fingerprint(self._log_sigmas[torch.device("cpu")])

    def for_seeds(self, seeds: torch.Tensor) -> VPDiscreteDenoiser:
        """A shallow copy (sharing the network) conditioned on `conditioner(seeds)`; self if unconditional."""
        if self.conditioner is None:
            return self
        bound = copy.copy(self)
        bound.cond = {**self.cond, **self.conditioner(torch.as_tensor(seeds).reshape(-1))}
        bound.batch = len(torch.as_tensor(seeds).reshape(-1))
        return bound

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        s = self._sigma_per_sample(sigma, batch, x.device)
        t = sigma_to_t(self._log_sigmas_on(x.device), s, self.timestep)
        c_in = (1 + s**2).rsqrt().reshape(-1, *[1] * (x.dim() - 1))  # alpha = 1 / sqrt(1 + sigma^2)
        x_in = x * c_in.to(x.dtype)
        out = self.net(x_in, t.to(torch.float32), **self._cond_for(batch)).to(x.dtype)
        s_col = s.reshape(c_in.shape)
        if self.prediction_type == "epsilon":
            return x - s_col.to(x.dtype) * out
        if self.prediction_type == "v_prediction":
            return c_in.to(x.dtype) * x_in - (s_col * c_in).to(x.dtype) * out
        return out

    def _cond_for(self, batch: int) -> dict:
        if self.batch is not None and self.batch != batch:
            raise FewstepError(
                f"this denoiser was bound by for_seeds to {self.batch} seeds but got a batch of {batch}; "
                "call for_seeds with the seeds of this very batch"
            )
        if self.conditioner is not None and self.batch is None:
            return {**self.cond, **self.conditioner(torch.arange(batch))}
        return self.cond

    def _sigma_per_sample(self, sigma: float | torch.Tensor, batch: int, device) -> torch.Tensor:
        where = sigma.device if isinstance(sigma, torch.Tensor) else "cpu"  # a number: checked without a device sync
        s = sigma_per_sample(sigma, batch, torch.float64, where)
        lo, hi = torch.stack(torch.aminmax(s)).tolist()
        sigma_min, sigma_max = self._sigma_range
        if not inside_range(lo, hi, self._sigma_range):  # a little outside: let through, timestep clamped
            given = f"sigma={lo:.6g}" if lo == hi else f"sigma in [{lo:.6g}, {hi:.6g}]"
            raise FewstepError(
                f"{given} is outside the model's trained range [{sigma_min:.6g}, "
                f"{sigma_max:.6g}]; set model.sigma_min / model.sigma_max inside it"
            )
        return s.to(device)

    def _log_sigmas_on(self, device) -> torch.Tensor:
        device = torch.device(device)
        if device not in self._log_sigmas:
            self._log_sigmas[device] = self._log_sigmas[torch.device("cpu")].to(device)
        return self._log_sigmas[device]
