"""The schedule-search contract: what a search may use (`SearchContext`) and how every caller runs one
(`find_schedule`). A search is one package exposing a `SearchMethod` (`fewstep.schedules.registry`: its settings, a
check made before anything loads, the search itself, its plot) plus one line in `REGISTRY` and one
`conf/schedule/<name>.yaml`. Everything else (the run's plan, the Python API, `task=search`, the outputs, the plots,
the dashboard and the CLI listing) goes through these modules or the record's `"method"`, never a search's name.

    context = SearchContext(sampler, denoiser, shape, sigma_min, sigma_max, steps, sampler_key, cache=...)
    schedule = find_schedule("gits", {"coeff": 1.2}, context)  # a Schedule: sigmas (+ a final 0) and the record

A search runs in every process: its model work may be spread over them (`context.warmup`: `local_warmup` here, the
Lightning runner's rank-sharded prediction in a run), the rest
runs on the main process and reaches the others through `on_main_then_broadcast`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fewstep.errors import FewstepError
from fewstep.schedules.registry import get_search
from fewstep.schedules.schedule import Schedule
from fewstep.schedules.search_cache import SearchCache
from fewstep.solvers.nfe import SolverSpec, StepPlan
from fewstep.solvers.sampler import Sampler
from fewstep.utils.logging import info


@dataclass(frozen=True, eq=False)
class SearchContext:
    """What a search may use: the run's sampler (solver, options, AFS prior), the model and where it runs, the
    interval and step plan, the cache, and the processes' roles."""

    sampler: Sampler
    denoiser: Any  # D(x, sigma)
    shape: tuple[int, ...]
    sigma_min: float
    sigma_max: float
    steps: StepPlan  # the run's: nfe, steps, AFS, denoise_to_zero
    sampler_key: dict  # names the sampler in cache keys
    cache: SearchCache | None = None
    warmup: Callable | None = None  # warmup(job) -> (cost sums, count), summed over every process (GITS's)
    place: Callable[[], Any] = lambda: "cpu"  # puts the denoiser where the main process runs it; returns the device
    is_main: bool = True
    broadcast: Callable[[Any], Any] = lambda payload: payload  # the main process's payload on every process

    @property
    def num_steps(self) -> int:
        """Steps from sigma_max to sigma_min (the run's steps less a final step to 0)."""
        return self.steps.num_steps - int(self.steps.denoise_to_zero)


def check_search(name: str, options: dict, spec: SolverSpec, steps: StepPlan) -> None:
    """The search's options and its fit with the solver and step plan, before anything loads."""
    search = get_search(name)
    search.check(search.settings(options), spec, steps)


def find_schedule(name: str, options: dict, context: SearchContext) -> Schedule:
    """Run search `name` with `options` (a config's `schedule` less its name, or keyword arguments) in every
    process; the searched sigmas (with a final 0 where the run denoises) and the record, which names its method."""
    search = get_search(name)
    settings = search.settings({k: v for k, v in options.items() if k != "name"})
    search.check(settings, context.sampler.spec, context.steps)
    record = {**search.run(settings, context), "method": search.name}
    sigmas = torch.tensor(record["sigmas"], dtype=torch.float64)
    if context.steps.denoise_to_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return Schedule(sigmas, record)


# eval.also_search=auto: the search sampled beside a run of the key's (oss, rarely worse than a hand-crafted schedule
# on the held-out bench, beside GITS, the design card's default)
SHOWN_BESIDE = {"gits": "oss"}


def shown_beside(name: str) -> str | None:
    """The search `eval.also_search=auto` samples beside a run of search `name`, if any."""
    return SHOWN_BESIDE.get(name)


def needs_steps(steps: StepPlan) -> str:
    """The step count a search must provide, in the user's words (for a check's message)."""
    return f"nfe={steps.nfe} needs {steps.num_steps - int(steps.denoise_to_zero)} steps"


def on_main_then_broadcast(compute: Callable[[], dict], is_main: bool, broadcast: Callable,
                           keep: Callable[[dict], None] | None = None) -> dict:  # fmt: skip
    """`compute()` on the main process, its result on every process; an error there is raised on every process
    (so that none waits in the broadcast forever). `keep(record)` (the cache write) runs on the main process only
    after the broadcast: under torchrun or SLURM a slower rank that found the schedule already cached would skip
    the broadcast that the main process waits in."""
    payload = None
    if is_main:
        try:
            payload = {"record": compute()}
        except FewstepError as err:
            payload = {"error": str(err)}
    payload = broadcast(payload)
    if "error" in payload:
        raise FewstepError(payload["error"])
    if is_main and keep is not None:
        keep(payload["record"])
    return payload["record"]


def local_warmup(denoiser, shape: tuple[int, ...], batch_size: int = 64, device="cpu") -> Callable:
    """A warm-up in this process, in batches: `warmup(job) -> (sums, count)` for a job with `seeds`, `empty()`
    and `sums(denoiser, shape, seeds, device)` (GITS's `WarmupJob`); the Lightning runner shards the same jobs."""

    def warmup(job) -> tuple[torch.Tensor, int]:
        total = job.empty()
        with torch.no_grad():
            for batch in torch.as_tensor(job.seeds, dtype=torch.long).split(int(batch_size)):
                total += job.sums(denoiser, shape, batch, device)
        return total, len(job.seeds)

    return warmup


def cached_on_main(name: str, cache: SearchCache | None, what: dict, grid: torch.Tensor, num_steps: int,
                   sigma_range: tuple[float, float], compute: Callable[[], dict], is_main: bool, broadcast: Callable,
                   on_grid: bool | None = True) -> dict:  # fmt: skip
    """A search whose whole work runs on the main process (oss, ld3): its cached record (keyed by `what` and the
    grid, checked before use), or `compute()` there, broadcast to every process and then cached."""
    key = None
    if cache:
        key = cache.key(what, grid)
        record = cache.read_schedule(key, grid, num_steps, sigma_range, on_grid)
        if record is not None:
            info(f"{name} schedule reused from {cache.schedule_path(key)}")
            return record

    def computed() -> dict:
        record = compute()
        record.update(identity=cache.identity if cache else None, schedule_key=key)
        return record

    keep = (lambda record: cache.write_schedule(key, record)) if cache else None
    return on_main_then_broadcast(computed, is_main, broadcast, keep)


def run_on_main(search: Callable[..., dict], settings, context: SearchContext) -> dict:
    """A search function in the signature of `oss_search` / `ld3_search`, called with the context: on the main
    process it places the model there; the record reaches the other processes through the broadcast."""
    device = context.place() if context.is_main else "cpu"
    return search(
        settings, sampler=context.sampler, denoiser=context.denoiser, shape=context.shape,
        sigma_min=context.sigma_min, sigma_max=context.sigma_max, num_steps=context.num_steps,
        total_steps=context.steps.num_steps, to_zero=context.steps.denoise_to_zero, device=device,
        sampler_key=context.sampler_key, cache=context.cache, is_main=context.is_main, broadcast=context.broadcast,
    )  # fmt: skip
