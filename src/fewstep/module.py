"""Lightning modules: seeds in, work sharded over ranks EDM-style (no duplicates, no padding).

`SamplingModule` samples and writes each batch atomically through `ShardWriter`; `WarmupModule` runs GITS
teacher trajectories and accumulates cost sums that the caller all-reduces.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from torch.utils.data import DataLoader

from fewstep.data.seeds import rank_batches, seeded_noise
from fewstep.errors import NonFiniteError
from fewstep.metrics.quantize import quantize
from fewstep.models.denoiser import decode
from fewstep.schedules.gits import WarmupJob, warmup_batch
from fewstep.solvers.sampler import Sampler
from fewstep.utils.logging import info
from fewstep.utils.runtime import quiet_lightning
from fewstep.utils.shards import ShardStore

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
    """GITS warm-up: teacher trajectories on the grid, reduced on the fly to per-pair cost sums."""

    def __init__(self, denoiser, job: WarmupJob, shape, batch_size):
        super().__init__(denoiser, shape, job.seeds, batch_size, job.description)
        self.job = job
        self.cost_sum = torch.zeros(len(job.grid), len(job.grid), dtype=torch.float64)
        self.count = 0

    def predict_step(self, seeds: torch.Tensor, batch_idx: int = 0) -> None:
        self.cost_sum += warmup_batch(self.job, self.denoiser, self.shape, seeds, self.device)
        self.count += len(seeds)

    def reduced(self) -> tuple[torch.Tensor, int]:
        """Cost sums and sample count summed over all ranks."""
        strategy = self.trainer.strategy
        device = strategy.root_device  # not self.device: after predict the module is back on the CPU
        total = strategy.reduce(self.cost_sum.to(device), reduce_op="sum").cpu()
        count = strategy.reduce(torch.tensor(float(self.count), device=device), reduce_op="sum")
        return total, int(count.item())


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
