"""EDM training of a denoiser (Karras et al. 2022, section 5): log-normal noise levels, the loss weight
lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2; or a rectified flow's (logit-normal times, as SD3); Adam with a
linear warm-up, and an EMA of the weights whose half-life ramps up with the images seen (as EDM's
`ema_halflife_kimg` / `ema_rampup_ratio`)."""

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


def flow_loss(model, images: torch.Tensor, logit_mean: float, logit_std: float, generator=None) -> torch.Tensor:
    """The rectified-flow loss: mean squared error of the velocity eps - x0 at x_t = (1 - t) x0 + t eps, with
    logit-normal times t = sigmoid(N(logit_mean, logit_std^2)) (SD3's training: 0 and 1)."""
    normal = torch.randn(images.shape[0], generator=generator, device=images.device)
    t = torch.sigmoid(normal * logit_std + logit_mean).reshape(-1, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    x_t = (1 - t) * images + t * noise
    return ((model(x_t, t.flatten()) - (noise - images)) ** 2).mean()


def training_loss(model, images: torch.Tensor, objective: str, p_mean: float, p_std: float, logit_mean: float,
                  logit_std: float, generator=None) -> torch.Tensor:  # fmt: skip
    """The loss of `objective`: EDM's (`edm_loss`) or the rectified flow's (`flow_loss`)."""
    if objective == "flow":
        return flow_loss(model, images, logit_mean, logit_std, generator)
    return edm_loss(model, images, p_mean, p_std, generator)


def ema_decay(images_seen: int, batch_size: int, halflife_images: float, rampup: float | None) -> float:
    """Per-step EMA decay for a half-life in images, shortened early in training (rampup x images seen)."""
    halflife = halflife_images if rampup is None else min(halflife_images, images_seen * rampup)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


def init_from(module, source, config: dict) -> dict | None:
    """Starts `module` (network and EMA) from the EMA weights of `task.init_from`, whose network config must equal
    `config`; the EMA keeps counting images from the checkpoint's count. Returns what the log records of it."""
    if not source:
        return None
    import json

    from fewstep.errors import FewstepError
    from fewstep.models.unet import load_unet_checkpoint, resolve_weights
    from fewstep.utils.logging import info
    from fewstep.utils.storage import file_digest

    path = resolve_weights(source, "task.init_from")
    model, blob = load_unet_checkpoint(path, option="task.init_from")
    if blob["config"] != config:
        saved = blob["config"]
        changed = sorted(k for k in {**saved, **config} if saved.get(k) != config.get(k))
        raise FewstepError(f"task.init_from={source} was trained with other settings ({', '.join(changed)}); use the "
                           "same task.channels/emb_dim/groups/sigma_* and dataset, or no task.init_from")  # fmt: skip
    module.model.load_state_dict(model.state_dict())
    module.ema.load_state_dict(model.state_dict())
    log = path.with_suffix(".json")
    record = json.loads(log.read_text()) if log.is_file() else {}
    module.images_seen = int(blob.get("images_seen", record.get("images_seen", 0)))
    info(f"task.init_from: continuing {path.name} ({module.images_seen:,} images seen)")
    return {"path": str(source), "sha256": file_digest(path), "images_seen": module.images_seen, "log": record}
