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
            from fewstep.module import build_trainer

            self._trainer = build_trainer(self.trainer_config)
        return self._trainer

    @property
    def is_main(self) -> bool:
        return self.trainer.is_global_zero

    def broadcast(self, payload):
        return self.trainer.strategy.broadcast(payload, src=0)

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
            from fewstep.module import WarmupModule

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
        from fewstep.schedules.gits import local_warmup

        return local_warmup(denoiser, shape, batch_size, self.place(denoiser))
