"""The Lightning sampling module: seeds in, samples out, sharded over ranks, written atomically per batch."""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from fewstep.data.seeds import rank_batches, seeded_noise
from fewstep.models.denoiser import CountingDenoiser
from fewstep.utils.shards import ShardStore


class SamplingModule(L.LightningModule):
    """Runs `solver` from per-seed noise at sigmas[0] for every seed that `store` does not hold yet.

    Rank 0 decides which seeds are missing and broadcasts the list, then each rank takes its EDM-style
    share (no duplicates, no padding). Each batch's samples go to `store` through `ShardWriter`.
    """

    def __init__(
        self,
        denoiser: torch.nn.Module | Callable,
        solver: Callable,
        sigmas: torch.Tensor,
        shape: tuple[int, ...],
        seeds: list[int],
        store: ShardStore,
        batch_size: int = 64,
        solver_options: dict | None = None,
        afs=None,
    ):
        super().__init__()
        self.denoiser = denoiser
        self.solver = solver
        self.sigmas = sigmas.to(torch.float64).cpu()
        self.shape = tuple(shape)
        self.seeds = list(seeds)
        self.store = store
        self.batch_size = int(batch_size)
        self.solver_options = dict(solver_options or {})
        self.afs = afs
        self.nfe_per_batch: list[int] = []
        self.solver_seconds = 0.0

    def predict_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        missing = self.store.missing(self.seeds) if rank == 0 else None
        missing = self.trainer.strategy.broadcast(missing, src=0)
        return DataLoader(rank_batches(missing, self.batch_size, rank, world), batch_size=None, shuffle=False)

    def predict_step(self, seeds: torch.Tensor, batch_idx: int = 0) -> dict:
        x = seeded_noise(seeds, self.shape).to(self.device) * float(self.sigmas[0])
        counter = CountingDenoiser(self.denoiser)
        afs = self.afs.to(self.device) if isinstance(self.afs, torch.nn.Module) else self.afs
        start = time.perf_counter()
        samples = self.solver(counter, x, self.sigmas, afs=afs, **self.solver_options)
        self.solver_seconds += time.perf_counter() - start
        if not torch.isfinite(samples).all():
            raise FloatingPointError(
                f"non-finite samples for seeds {seeds[0].item()}..{seeds[-1].item()}: the denoiser returned "
                "NaN/inf; check the model and its sigma range (model.sigma_min / model.sigma_max)"
            )
        self.nfe_per_batch.append(counter.calls)
        return {"seeds": seeds, "samples": samples}


class ShardWriter(BasePredictionWriter):
    """Writes each predicted batch to its module's `store` as one atomic shard."""

    def __init__(self):
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        pl_module.store.write(prediction["seeds"], prediction["samples"])
