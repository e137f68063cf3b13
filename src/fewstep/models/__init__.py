"""Denoisers D(x, sigma) -> x0: the protocol, closed-form denoisers, fewstep's own U-Net, and loaders that wrap
real checkpoints (diffusers UNets, latent diffusion, EDM pickles) to the same interface."""

from fewstep.models.denoiser import CountingDenoiser, Denoiser, decode, for_seeds
from fewstep.models.edm_pickle import load_edm_pickle
from fewstep.models.flow import flow_denoiser, kde_flow
from fewstep.models.gaussian import GaussianDenoiser
from fewstep.models.kde import KDEDenoiser
from fewstep.models.unet import EDMPrecond, UNet, build_unet, load_unet

__all__ = [
    "CountingDenoiser",
    "Denoiser",
    "EDMPrecond",
    "GaussianDenoiser",
    "KDEDenoiser",
    "UNet",
    "build_unet",
    "decode",
    "flow_denoiser",
    "for_seeds",
    "kde_flow",
    "load_edm_pickle",
    "load_unet",
]
