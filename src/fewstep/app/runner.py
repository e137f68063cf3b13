"""The Lightning side of a run, behind a narrow interface: the Trainer (built on first use, so config errors never
wait for Lightning to import), rank-sharded GITS warm-ups with all-reduced sums, and broadcasts from rank 0."""

from __future__ import annotations

from collections.abc import Callable


class LightningRunner:
    def __init__(self, trainer_config):
        self.trainer_config = trainer_config
        self._trainer = None

    @property
    def trainer(self):
        if self._trainer is None:
            from fewstep.app.lightning_modules import build_trainer

            self._trainer = build_trainer(self.trainer_config)
        return self._trainer

    @property
    def is_main(self) -> bool:
        return self.trainer.is_global_zero

    def broadcast(self, payload):
        """Rank 0's payload on every rank. Under an external launcher (torchrun, SLURM) the ranks may get here before
        any prediction has made the process group (a search from a cached cost matrix): it is made now. Under
        Lightning's own launcher the other ranks do not exist yet; they repeat this step when launched."""
        import torch.distributed as dist

        strategy = self.trainer.strategy
        if self.trainer.world_size > 1 and not (dist.is_available() and dist.is_initialized()):
            environment = getattr(strategy, "cluster_environment", None)
            if environment is None or not environment.creates_processes_externally:
                return payload
            strategy.setup_environment()
        return strategy.broadcast(payload, src=0)

    def place(self, module):
        """Move a network to this rank's device (predict's teardown leaves it on the CPU); returns the device."""
        import torch

        device = self.trainer.strategy.root_device
        if isinstance(module, torch.nn.Module):
            module.to(device)
        return device

    def warmup(self, denoiser, shape: tuple[int, ...], batch_size: int) -> Callable:
        """`warmup(job) -> (cost sums, count)` over all ranks: a Lightning prediction over rank-sharded seeds."""

        def run(job):
            from fewstep.app.lightning_modules import WarmupModule

            module = WarmupModule(denoiser, job, shape, batch_size)
            self.trainer.predict(module, return_predictions=False)
            return module.reduced()

        return run


class LocalRunner:
    """This process alone, without Lightning: what `build_plan(cfg)` uses when no runner is given (notebooks)."""

    is_main = True

    def broadcast(self, payload):
        return payload

    def place(self, module):
        from fewstep.models.denoiser import device_of

        return device_of(module)

    def warmup(self, denoiser, shape: tuple[int, ...], batch_size: int) -> Callable:
        from fewstep.schedules.searches import local_warmup

        return local_warmup(denoiser, shape, batch_size, self.place(denoiser))
