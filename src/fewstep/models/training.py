"""EDM training of a denoiser (Karras et al. 2022, section 5): log-normal noise levels, the loss weight
lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, Adam with a linear warm-up, and an EMA of the weights whose
half-life ramps up with the images seen (as EDM's `ema_halflife_kimg` / `ema_rampup_ratio`)."""

from __future__ import annotations

import copy

import lightning as L
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


class DiffusionTraining(L.LightningModule):
    """Trains `model` with the EDM loss; `ema` (same architecture) is what gets saved and sampled."""

    def __init__(self, model: EDMPrecond, lr: float = 1e-3, warmup_steps: int = 50, p_mean: float = -1.2,
                 p_std: float = 1.2, ema_halflife_images: float = 10_000, ema_rampup: float | None = 0.1):  # fmt: skip
        super().__init__()
        self.model = model
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.lr, self.warmup_steps = float(lr), int(warmup_steps)
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        self.ema_halflife_images, self.ema_rampup = float(ema_halflife_images), ema_rampup
        self.images_seen = 0
        self.losses: list[float] = []
        self.initial_loss: float | None = None  # the fixed-noise loss before any training (set by the task)
        self.network: dict = {}  # the network's config, kept in checkpoints to check a resume against

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (images,) = batch
        self.batch_images = images.shape[0]
        loss = edm_loss(self.model, images, self.p_mean, self.p_std)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the EDM loss is {loss.item()} at step {self.global_step}; lower task.lr")
        self.losses.append(loss.item())
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimizer step, then the EMA update: both happen before any checkpoint of this step is written."""
        super().optimizer_step(*args, **kwargs)
        self.update_ema(self.batch_images * self.trainer.world_size)

    def update_ema(self, batch_size: int) -> None:
        self.images_seen += batch_size
        beta = ema_decay(self.images_seen, batch_size, self.ema_halflife_images, self.ema_rampup)
        with torch.no_grad():
            for ema, live in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                ema.lerp_(live, 1 - beta)
            for ema, live in zip(self.ema.buffers(), self.model.buffers(), strict=True):
                ema.copy_(live)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        warmup = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / max(1, self.warmup_steps))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fewstep"] = {"images_seen": self.images_seen, "losses": self.losses,
                                 "initial_loss": self.initial_loss, "network": self.network}  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("fewstep", {})
        self.images_seen = int(saved.get("images_seen", 0))
        self.losses = list(saved.get("losses", []))
        self.initial_loss = saved.get("initial_loss", self.initial_loss)
