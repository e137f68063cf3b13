"""EDM training of a denoiser (Karras et al. 2022, section 5): log-normal noise levels, the loss weight
lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, Adam with a linear warm-up, and an EMA of the weights whose
half-life ramps up with the images seen (as EDM's `ema_halflife_kimg` / `ema_rampup_ratio`)."""

from __future__ import annotations

import torch

from fewstep.models.unet import EDMPrecond


def edm_loss(model: EDMPrecond, images: torch.Tensor, p_mean: float, p_std: float, generator=None) -> torch.Tensor:
    """Mean weighted denoising error over a batch, noise levels ln(sigma) ~ N(p_mean, p_std^2)."""
    normal = torch.randn(images.shape[0], generator=generator, device=images.device)
    sigma = (normal * p_std + p_mean).exp().reshape(-1, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator, device=images.device) * sigma
    sd = model.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    return (weight * (model(images + noise, sigma.flatten()) - images) ** 2).mean()


def ema_decay(images_seen: int, batch_size: int, halflife_images: float, rampup: float | None) -> float:
    """Per-step EMA decay for a half-life in images, shortened early in training (rampup x images seen)."""
    halflife = halflife_images if rampup is None else min(halflife_images, images_seen * rampup)
    return 0.5 ** (batch_size / max(halflife, 1e-8))
