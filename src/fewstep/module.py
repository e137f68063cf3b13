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
from fewstep.models.denoiser import CountingDenoiser, bind_seeds, decode
from fewstep.schedules.gits import cost_sums, teacher_trajectory
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

    def noise(self, seeds: torch.Tensor, sigma: float) -> torch.Tensor:
        return seeded_noise(seeds, self.shape).to(self.device) * sigma


class SamplingModule(SeedShardedModule):
    """Runs `solver` from per-seed noise at sigmas[0] for every seed that `store` does not hold yet."""

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
        stochastic: bool = False,
        description: str = "sampling",
    ):
        super().__init__(denoiser, shape, seeds, batch_size, description)
        self.solver = solver
        self.stochastic = stochastic
        self.sigmas = sigmas.to(torch.float64).cpu()
        self.store = store
        self.solver_options = dict(solver_options or {})
        self.afs = afs
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
        x = self.noise(seeds, float(self.sigmas[0]))
        counter = CountingDenoiser(bind_seeds(self.denoiser, seeds, x.device))
        afs = self.afs.to(self.device) if isinstance(self.afs, torch.nn.Module) else self.afs
        options = dict(self.solver_options)
        if self.stochastic:  # step noise from per-seed generators too: samples do not depend on the batching
            from fewstep.solvers.sde import per_sample_noise

            options["noise"] = per_sample_noise(seeds, self.shape, dtype=x.dtype, device=x.device)
        start = time.perf_counter()
        samples = self.solver(counter, x, self.sigmas, afs=afs, **options)
        seconds = time.perf_counter() - start
        self.solver_seconds += seconds
        _check_finite(samples, seeds, self.description, NAN_SAMPLES_CAUSE)
        self.nfe_per_batch.append(counter.calls)
        if getattr(self.denoiser, "decode", None) is None:
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

    def __init__(
        self,
        denoiser,
        teacher: Callable,
        teacher_options: dict,
        grid: torch.Tensor,
        metric: str,
        shape,
        seeds,
        batch_size,
        description: str = "GITS warm-up",
    ):
        super().__init__(denoiser, shape, seeds, batch_size, description)
        self.teacher, self.teacher_options = teacher, dict(teacher_options)
        self.grid = grid.to(torch.float64).cpu()
        self.metric = metric
        self.cost_sum = torch.zeros(len(grid), len(grid), dtype=torch.float64)
        self.count = 0

    def predict_step(self, seeds: torch.Tensor, batch_idx: int = 0) -> None:
        x = self.noise(seeds, float(self.grid[0]))
        denoiser = bind_seeds(self.denoiser, seeds, x.device)
        states, slopes = teacher_trajectory(self.teacher, denoiser, x, self.grid, **self.teacher_options)
        sums = cost_sums(states, slopes, self.grid, self.metric)
        if not torch.isfinite(sums).all():
            from fewstep.tasks.search import WARMUP_NAN_CAUSE

            raise NonFiniteError(f"GITS warm-up: non-finite costs for seeds {seeds[0].item()}..{seeds[-1].item()}: "
                                 f"{WARMUP_NAN_CAUSE}; nothing was cached")  # fmt: skip
        self.cost_sum += sums
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
