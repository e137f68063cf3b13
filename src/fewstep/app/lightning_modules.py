"""Lightning modules: seeds in, work sharded over ranks EDM-style (no duplicates, no padding); and the EDM
training module of `task=train`.

`SamplingModule` samples and writes each batch atomically through `ShardWriter`; `WarmupModule` runs a
search's warm-up (GITS's teacher trajectories) and accumulates sums that the caller all-reduces.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from torch.utils.data import DataLoader

from fewstep.app.runtime import quiet_lightning
from fewstep.app.shards import ShardStore
from fewstep.data.seeds import rank_batches, seeded_noise
from fewstep.errors import NonFiniteError
from fewstep.geometry.recording import record_trajectories, write_batch
from fewstep.metrics.quantize import quantize
from fewstep.models.denoiser import bind_seeds, decode
from fewstep.models.training import ema_decay, training_loss
from fewstep.models.unet import EDMPrecond
from fewstep.solvers.sampler import Sampler
from fewstep.utils.logging import info

quiet_lightning()  # again, now that Lightning is imported (its import installs warning filters of its own)


class SeedShardedModule(L.LightningModule):
    """Rank 0 decides which seeds still need work and broadcasts them; each rank takes its share."""

    def __init__(self, denoiser, shape: tuple[int, ...], seeds: list[int], batch_size: int, description: str = ""):
        super().__init__()
        self.denoiser = denoiser
        self.shape = tuple(shape)
        self.seeds = list(seeds)
        self.batch_size = int(batch_size)
        self.description = description or type(self).__name__

    def pending_seeds(self) -> list[int]:
        return self.seeds

    def predict_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        pending = self.trainer.strategy.broadcast(self.pending_seeds() if rank == 0 else None, src=0)
        self.report(pending)
        return DataLoader(rank_batches(pending, self.batch_size, rank, world), batch_size=None, shuffle=False)

    def report(self, pending: list[int]) -> None:
        info(f"{self.description}: computing {len(pending)} samples")


class SamplingModule(SeedShardedModule):
    """Runs `sampler` from per-seed noise for every seed that `store` does not hold yet."""

    def __init__(
        self,
        denoiser: torch.nn.Module | Callable,
        sampler: Sampler,
        shape: tuple[int, ...],
        seeds: list[int],
        store: ShardStore,
        batch_size: int = 64,
        description: str = "sampling",
        decodes: bool = False,
    ):
        super().__init__(denoiser, shape, seeds, batch_size, description)
        self.sampler = sampler
        self.decodes = decodes
        self.store = store
        self.nfe_per_batch: list[int] = []
        self.solver_seconds = 0.0  # this process's compute time, in this run
        self.reused_seconds = 0.0  # the compute time of the samples found in the store (rank 0)

    def pending_seeds(self) -> list[int]:
        pending = self.store.missing(self.seeds)
        self.reused_seconds = self.store.found_seconds
        return pending

    def report(self, pending: list[int]) -> None:
        reused = len(self.seeds) - len(pending)
        if not pending:
            info(f"{self.description}: all {reused} samples reused from {self.store.root}")
        else:
            info(f"{self.description}: computing {len(pending)} samples"
                 + (f", {reused} reused from {self.store.root}" if reused else ""))  # fmt: skip

    def predict_step(self, seeds: torch.Tensor, batch_idx: int = 0) -> dict:
        noise = seeded_noise(seeds, self.shape).to(self.device)
        start = time.perf_counter()
        samples, calls = self.sampler.counted(self.denoiser, noise, seeds)
        seconds = time.perf_counter() - start
        self.solver_seconds += seconds
        _check_finite(samples, seeds, self.description, NAN_SAMPLES_CAUSE)
        self.nfe_per_batch.append(calls)
        if not self.decodes:
            return {"seeds": seeds, "samples": samples, "seconds": seconds}
        images = decode(self.denoiser, samples)
        _check_finite(images, seeds, self.description, NAN_DECODE_CAUSE)
        return {"seeds": seeds, "samples": quantize(images), "seconds": seconds}  # stored as PNG-like bytes: 4x smaller


NAN_SAMPLES_CAUSE = (
    "the denoiser returned NaN/inf; check the model and its sigma range (model.sigma_min / model.sigma_max)"
)
NAN_DECODE_CAUSE = "the VAE decoder returned NaN/inf (a float16 VAE overflowing? try dtype float32)"


def _check_finite(samples: torch.Tensor, seeds: torch.Tensor, stage: str, why: str) -> None:
    if not torch.isfinite(samples).all():
        bad = seeds[~torch.isfinite(samples.flatten(1)).all(dim=1).cpu()].tolist()
        span = f"{seeds[0].item()}..{seeds[-1].item()}"
        raise NonFiniteError(f"{stage}: non-finite samples for {len(bad)} of seeds {span} (first: {bad[:3]}): {why}; "
                             "nothing of this batch was written")  # fmt: skip


def total_seconds(trainer, module: SamplingModule) -> float:
    """Solver seconds of all the module's samples: summed over ranks, plus those of samples reused from shards.
    Called on every rank (a collective)."""
    strategy = trainer.strategy
    mine = torch.tensor(module.solver_seconds, dtype=torch.float64, device=strategy.root_device)
    return float(strategy.reduce(mine, reduce_op="sum")) + module.reused_seconds


class ShardWriter(BasePredictionWriter):
    """Writes each predicted sampling batch to its module's `store` as one atomic shard."""

    def __init__(self):
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        if isinstance(pl_module, SamplingModule):
            pl_module.store.write(prediction["seeds"], prediction["samples"], prediction.get("seconds", 0.0))


class WarmupModule(SeedShardedModule):
    """A search's warm-up job (GITS: teacher trajectories on the grid), reduced on the fly to sums (GITS: per-pair
    costs) that `reduced` all-reduces; see `fewstep.schedules.searches.local_warmup` for the job's interface."""

    def __init__(self, denoiser, job, shape, batch_size):
        super().__init__(denoiser, shape, job.seeds, batch_size, job.description)
        self.job = job
        self.cost_sum = job.empty()
        self.count = 0

    def predict_step(self, seeds: torch.Tensor, batch_idx: int = 0) -> None:
        self.cost_sum += self.job.sums(self.denoiser, self.shape, seeds, self.device)
        self.count += len(seeds)

    def reduced(self) -> tuple[torch.Tensor, int]:
        """Cost sums and sample count summed over all ranks."""
        strategy = self.trainer.strategy
        device = strategy.root_device  # not self.device: after predict the module is back on the CPU
        total = strategy.reduce(self.cost_sum.to(device), reduce_op="sum").cpu()
        count = strategy.reduce(torch.tensor(float(self.count), device=device), reduce_op="sum")
        return total, int(count.item())


class DiffusionTraining(L.LightningModule):
    """Trains `model` with the EDM loss (or the rectified flow's, `objective="flow"`); `ema` (same architecture) is
    what gets saved and sampled."""

    def __init__(self, model: EDMPrecond, lr: float = 1e-3, warmup_steps: int = 50, p_mean: float = -1.2,
                 p_std: float = 1.2, ema_halflife_images: float = 10_000, ema_rampup: float | None = 0.1,
                 objective: str = "edm", logit_mean: float = 0.0, logit_std: float = 1.0):  # fmt: skip
        super().__init__()
        self.objective, self.logit_mean, self.logit_std = objective, float(logit_mean), float(logit_std)
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
        loss = training_loss(self.model, images, self.objective, self.p_mean, self.p_std, self.logit_mean,
                             self.logit_std)  # fmt: skip
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the {self.objective} loss is {loss.item()} at step {self.global_step}; lower "
                                     "task.lr")  # fmt: skip
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


class TrajectoryModule(SeedShardedModule):
    """`task=analyze`: each batch's whole trajectories, reduced at once by `measure(batch, denoiser, shape,
    **helpers)` to per-sample measures; both are written to `folder/batch-NNNNNN.npz`, NNNNNN the batch's place in
    the seed order, so any number of ranks writes the same files."""

    def __init__(self, denoiser, sampler: Sampler, shape, seeds, batch_size, folder, measure, helpers=None):
        steps = len(sampler.sigmas) - 1
        super().__init__(denoiser, shape, seeds, batch_size, f"trajectories: {steps} {sampler.name} steps")
        self.sampler, self.folder, self.measure = sampler, Path(folder), measure
        self.helpers = torch.nn.ModuleDict(helpers or {})  # moved to the device with the module
        self.index: dict[int, int] = {}

    def predict_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        batches = rank_batches(self.seeds, self.batch_size, rank, world)
        self.index = {int(batch[0]): rank + k * world for k, batch in enumerate(batches)}
        self.report(self.seeds)
        return DataLoader(batches, batch_size=None, shuffle=False)

    def predict_step(self, seeds: torch.Tensor, batch_idx: int = 0) -> None:
        sigmas = self.sampler.sigmas
        x = seeded_noise(seeds, self.shape).to(self.device) * float(sigmas[0])
        batch = record_trajectories(self.sampler.as_solver(seeds), self.denoiser, x, sigmas, seeds=seeds)
        measures = self.measure(batch, bind_seeds(self.denoiser, seeds, x.device), self.shape, **self.helpers)
        write_batch(self.folder, self.index[int(seeds[0])], batch, {f"measure_{k}": v for k, v in measures.items()})
        info(f"recorded {len(seeds)} trajectories of {len(sigmas) - 1} {self.sampler.name} steps")


class LabelledProgressBar(TQDMProgressBar):
    """Lightning's bar (with its time estimate), labelled with what the module computes, not "Predicting"."""

    @property
    def predict_description(self) -> str:
        module = self.trainer.lightning_module if self._trainer is not None else None
        return getattr(module, "description", None) or "Predicting"

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self.predict_progress_bar.set_description(self.predict_description)


def build_trainer(trainer_cfg, *callbacks) -> L.Trainer:
    """The configured Trainer, writing sample shards, with a labelled progress bar where bars are on."""
    from hydra.utils import instantiate

    callbacks = [ShardWriter(), *callbacks]
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(LabelledProgressBar())
    return instantiate(trainer_cfg, callbacks=callbacks, logger=False)
