"""Denoisers D(x, sigma) -> x0: the protocol, closed-form denoisers, and (later) network wrappers."""

from fewstep.models.denoiser import CountingDenoiser, Denoiser
from fewstep.models.gaussian import GaussianDenoiser
from fewstep.models.kde import KDEDenoiser

__all__ = ["CountingDenoiser", "Denoiser", "GaussianDenoiser", "KDEDenoiser"]
