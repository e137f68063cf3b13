"""The teacher's runs a search compares against, computed once per model and block of seeds.

A search's teacher (its solver on the base grid, from seeded noise) depends on the model, the grid, the teacher's
settings and the seeds, not on the sampling solver or the step count: a sweep over solvers and NFE needs it once, as
GITS's warm-up. `TeacherRuns` computes a block (its end samples, or its states at every grid point) the first time
and keeps it in the search's cache folder (`<cache>/<method>/teachers/<key>.pt`, sealed; checked before use: the
seeds, the grid, the shape, finite values); a damaged entry is reported and computed again. A block is always
computed whole, in one batch, so a cached block is bit for bit what the search would compute: the search's result
does not depend on what is cached, only its cost does (`computed` evaluations now, `reused` from the cache).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fewstep.data.seeds import seeded_noise
from fewstep.errors import NonFiniteError
from fewstep.schedules.search_cache import SearchCache
from fewstep.schedules.teacher import WARMUP_NAN_CAUSE, teacher, teacher_trajectory
from fewstep.utils.cache import finite, load_torch, read_entry, require, write_torch


class TeacherRuns:
    """The teacher of `settings` on `grid` for `denoiser`, by block of seeds, through `cache` (None: always run)."""

    def __init__(self, search: str, settings, grid: torch.Tensor, denoiser, shape: tuple[int, ...], device="cpu",
                 cache: SearchCache | None = None):  # fmt: skip
        self.search, self.settings, self.grid = search, settings, grid.double()
        self.denoiser, self.shape, self.device, self.cache = denoiser, tuple(shape), device, cache
        self.computed = 0  # model evaluations (per sample) run now
        self.reused = 0  # evaluations a cached block saved
        self.seconds = 0.0  # the time the computed blocks took

    def noise(self, seeds: list[int]) -> torch.Tensor:
        """The blocks' starting points: the seeds' noise at the grid's first sigma."""
        return seeded_noise(torch.tensor(seeds, dtype=torch.long), self.shape).to(self.device) * float(self.grid[0])

    def samples(self, seeds: list[int]) -> torch.Tensor:
        """The teacher's samples (B, ...) from the seeds' noise."""
        return self._block(list(seeds), "samples")

    def states(self, seeds: list[int]) -> torch.Tensor:
        """The teacher's states at every grid point (N, B, ...) from the seeds' noise."""
        return self._block(list(seeds), "states")

    def path(self, seeds: list[int], kind: str) -> Path | None:
        if self.cache is None:
            return None
        what = {"teacher": self.settings.teacher, "teacher_order": int(self.settings.teacher_order),
                "teacher_afs": bool(getattr(self.settings, "teacher_afs", False)), "seeds": seeds, "kind": kind}
        return Path(self.cache.root) / "teachers" / f"{self.cache.key(what, self.grid)}.pt"

    def _block(self, seeds: list[int], kind: str) -> torch.Tensor:
        path = self.path(seeds, kind)
        evaluations = (len(self.grid) - 1) * len(seeds)
        if path is not None:
            entry = read_entry(path, load_torch, self._check(seeds, kind), f"{self.search} teacher cache",
                               "running the teacher again")  # fmt: skip
            if entry is not None:
                self.reused += evaluations
                return entry["values"].to(self.device)
        started = time.perf_counter()
        values = self._run(seeds, kind)
        self.seconds += time.perf_counter() - started
        self.computed += evaluations
        if not finite(values):
            raise NonFiniteError(f"{self.search} search: non-finite teacher {kind}: {WARMUP_NAN_CAUSE}; nothing was "
                                 "cached")  # fmt: skip
        if path is not None:
            write_torch(path, {"values": values.detach().cpu(), "seeds": seeds, "grid": self.grid, "kind": kind})
        return values

    def _run(self, seeds: list[int], kind: str) -> torch.Tensor:
        batch = torch.tensor(seeds, dtype=torch.long)
        solver = teacher(self.settings, self.grid)
        with torch.no_grad():
            if kind == "samples":
                return solver.solve(self.denoiser, self.noise(seeds), batch)
            return teacher_trajectory(solver.as_solver(batch), self.denoiser, self.noise(seeds), self.grid)[0]

    def _check(self, seeds: list[int], kind: str):
        expected = (len(seeds), *self.shape) if kind == "samples" else (len(self.grid), len(seeds), *self.shape)

        def check(entry: dict) -> None:
            values = entry.get("values")
            require(entry.get("kind") == kind and entry.get("seeds") == seeds, "another block of seeds")
            require(isinstance(entry.get("grid"), torch.Tensor) and torch.equal(entry["grid"].double(), self.grid),
                    "a different grid")  # fmt: skip
            require(isinstance(values, torch.Tensor) and tuple(values.shape) == expected,
                    f"teacher {kind} are not {expected}")  # fmt: skip
            require(values.is_floating_point() and finite(values), "non-finite teacher values")

        return check
