"""Rectified-flow models (SD3, Flux style) seen as EDM denoisers.

A flow model predicts a velocity v(x_t, t) for x_t = (1 - t) x0 + t eps, t in [0, 1] (t = 1 is pure noise). With

    sigma = t / (1 - t),   x = x_t / (1 - t) = x0 + sigma eps,

the data are in fewstep's convention, and the model is the denoiser

    D(x, sigma) = x_t - t v(x_t, t)   at   t = sigma / (1 + sigma),  x_t = x / (1 + sigma).

Euler in sigma on x is then exactly the flow's Euler step in t (x_t' = x_t + (t' - t) v), so every solver and
search applies unchanged. x0- and eps-predicting flows give D = x0_hat and D = (x_t - t eps_hat) / (1 - t).

The start: flow samplers start from pure noise at t = 1, where sigma is infinite. fewstep starts at a finite
sigma_max, from x = sigma_max eps (x_t = t_max eps at t_max = sigma_max / (1 + sigma_max)), as EDM starts its
models; `docs/models.md` gives the error this makes (it falls as 1 / sigma_max).
"""

from __future__ import annotations

import torch
from torch import nn

from fewstep.errors import FewstepError
from fewstep.models.denoiser import sigma_column, traits, weights_fingerprint

PREDICTIONS = ("velocity", "x0", "eps")


def flow_time(sigma):
    """A flow's time t = sigma / (1 + sigma) of fewstep's sigma (float64 where given a tensor)."""
    return sigma / (1 + sigma)


def flow_sigma(t):
    """fewstep's sigma = t / (1 - t) of a flow's time t < 1."""
    return t / (1 - t)


class FlowDenoiser(nn.Module):
    """D(x, sigma) of a flow model `model(x_t, t)` predicting `prediction` (velocity, x0 or eps).

    `model` is called with x_t in x's dtype and t as one value per sample (shape (batch,), x's dtype) multiplied by
    `time_scale` (1000 for diffusers' transformers, which take t in [0, 1000]). The model's declared traits
    (image and sample shape, `decode`, `for_seeds`, `rows_independent`, `fingerprint`) carry over, so a flow
    model is used wherever an EDM one is.
    """

    def __init__(self, model, prediction: str = "velocity", time_scale: float = 1.0,
                 sigma_range: tuple[float, float] | None = None):  # fmt: skip
        super().__init__()
        if prediction not in PREDICTIONS:
            raise FewstepError(f"a flow model's prediction must be one of {list(PREDICTIONS)}, got {prediction!r}")
        if not callable(model):
            raise FewstepError(f"a flow model must be a callable model(x_t, t), got a {type(model).__name__}")
        if not time_scale > 0:
            raise FewstepError(f"time_scale must be positive (1 for t in [0, 1], 1000 for diffusers), got {time_scale}")
        self.model = model
        self.prediction = prediction
        self.time_scale = float(time_scale)
        declared = traits(model)
        self.image_shape, self.sample_shape = declared.image_shape, declared.sample_shape
        self.sigma_range = sigma_range if sigma_range is not None else declared.sigma_range
        self.rows_independent = declared.rows_independent
        if declared.decodes:
            self.decode = model.decode
        if callable(getattr(model, "for_seeds", None)):  # a conditional model (prompts, classes) stays one
            self.for_seeds = self._for_seeds

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        sigma = sigma_column(sigma, x.shape[0], torch.float64, x.device)
        t = flow_time(sigma)
        shape = (-1, *([1] * (x.dim() - 1)))
        x_t = x * (1 / (1 + sigma)).to(x.dtype).reshape(shape)
        out = self.model(x_t, (t * self.time_scale).reshape(-1).to(x.dtype))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
            raise FewstepError(f"the flow model returned {got} for x_t of shape {tuple(x.shape)}: it must return its "
                               f"{self.prediction} prediction, a tensor of x_t's shape")  # fmt: skip
        t = t.to(x.dtype).reshape(shape)
        if self.prediction == "velocity":
            return x_t - t * out
        if self.prediction == "x0":
            return out
        return (x_t - t * out) / (1 - t)

    def _for_seeds(self, seeds: torch.Tensor) -> FlowDenoiser:
        bound = FlowDenoiser(self.model.for_seeds(seeds), self.prediction, self.time_scale, self.sigma_range)
        bound.image_shape, bound.sample_shape = self.image_shape, self.sample_shape
        bound.rows_independent = self.rows_independent
        return bound

    def fingerprint(self) -> str | None:
        """The wrapped model's (None for a closed form or a plain callable), with how it is read."""
        inner = weights_fingerprint(self.model)
        return None if inner is None else f"{inner}:flow-{self.prediction}-{self.time_scale:g}"


def flow_denoiser(model, prediction: str = "velocity", time_scale: float = 1.0,
                  sigma_range: tuple[float, float] | None = None) -> FlowDenoiser:  # fmt: skip
    """The denoiser D(x, sigma) of a rectified-flow model `model(x_t, t)` that predicts the velocity eps - x0
    (`prediction="velocity"`), x0 or eps; see `FlowDenoiser`."""
    return FlowDenoiser(model, prediction, time_scale, sigma_range)


class DenoiserFlow(nn.Module):
    """The flow velocity v(x_t, t) = (x_t - D(x_t / (1 - t), t / (1 - t))) / t of a denoiser D: the optimal
    velocity of the data when D is their KDE (closed form, for exact tests), or any EDM model as a flow."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser
        declared = traits(denoiser)
        self.image_shape, self.rows_independent = declared.image_shape, declared.rows_independent

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device).reshape(-1)
        if ((t <= 0) | (t >= 1)).any():
            raise FewstepError(f"a denoiser's flow is defined for 0 < t < 1, got t in [{float(t.min())}, "
                               f"{float(t.max())}]")  # fmt: skip
        shape = (-1, *([1] * (x_t.dim() - 1)))
        x = x_t * (1 / (1 - t)).to(x_t.dtype).reshape(shape)
        x0 = self.denoiser(x, flow_sigma(t).expand(x_t.shape[0]))
        return (x_t - x0) / t.to(x_t.dtype).reshape(shape)

    def fingerprint(self) -> str | None:
        return weights_fingerprint(self.denoiser)


def kde_flow(data: torch.Tensor, chunk_size: int = 2048, dtype: str = "float32") -> FlowDenoiser:
    """The optimal flow of the data (the KDE's velocity), read back through the flow wrapper: a closed-form flow
    model (`model=flow_kde`) whose samples equal the KDE denoiser's from the same noise."""
    from fewstep.models.kde import KDEDenoiser

    return flow_denoiser(DenoiserFlow(KDEDenoiser(data, chunk_size=chunk_size, dtype=dtype)))
