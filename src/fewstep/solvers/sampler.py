"""The sampler as one value: a solver, its sigmas and options, the AFS prior and the noise policy.

Everything that makes a sample goes through a `Sampler`: the run's samples and its baseline, the reference
solution, the GITS teacher and its AFS insertion, `task=analyze`, training previews and `fewstep.sample`. It
binds the denoiser to the batch's seeds (per-seed conditions, fixed row blocks on the CPU) and, for a stochastic
solver, draws the step noise from per-seed generators, so a sample depends on its seed and never on its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from fewstep.solvers.nfe import SolverSpec


@dataclass(frozen=True, eq=False)
class Sampler:
    spec: SolverSpec
    sigmas: torch.Tensor  # float64, strictly decreasing, a final 0 where the solver denoises
    options: Mapping[str, Any] = field(default_factory=dict)
    afs_prior: Any = None  # the closed-form denoiser answering the first call (AFS), or None

    def __post_init__(self):
        object.__setattr__(self, "sigmas", torch.as_tensor(self.sigmas, dtype=torch.float64).detach().cpu())
        object.__setattr__(self, "options", dict(self.options))

    @classmethod
    def of(cls, solver: str, sigmas, afs_prior=None, **options) -> Sampler:
        """A sampler by solver name, with its options checked against the solver's signature."""
        from fewstep.solvers.registry import check_options, get_solver

        spec = get_solver(solver)
        return cls(spec, sigmas, check_options(spec, options), afs_prior)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stochastic(self) -> bool:
        return self.spec.stochastic

    def with_sigmas(self, sigmas) -> Sampler:
        return replace(self, sigmas=sigmas)

    def __call__(self, denoiser, noise: torch.Tensor, seeds, *, callback=None) -> torch.Tensor:
        """Samples from unit Gaussian `noise` (one row per seed, e.g. `seeded_noise(seeds, shape)`), started at
        sigmas[0]."""
        return self.solve(denoiser, noise * float(self.sigmas[0]), seeds, callback=callback)

    def counted(self, denoiser, noise: torch.Tensor, seeds) -> tuple[torch.Tensor, int]:
        """Samples and the number of denoiser calls they took (the NFE really spent)."""
        from fewstep.models.denoiser import CountingDenoiser

        counters = []

        def count(bound):
            counters.append(CountingDenoiser(bound))
            return counters[-1]

        samples = self.solve(denoiser, noise * float(self.sigmas[0]), seeds, wrap=count)
        return samples, counters[0].calls

    def solve(self, denoiser, x: torch.Tensor, seeds, *, callback=None, sigmas=None, wrap=None) -> torch.Tensor:
        """Integrate from `x` (already at the first sigma) along `sigmas` (default: the sampler's)."""
        from fewstep.models.denoiser import OutputChecked, bind_seeds
        from fewstep.solvers.sde import per_sample_noise

        seeds = torch.as_tensor(seeds, dtype=torch.long)
        bound = OutputChecked(bind_seeds(denoiser, seeds, x.device))
        if wrap is not None:
            bound = wrap(bound)
        afs = self.afs_prior.to(x.device) if isinstance(self.afs_prior, torch.nn.Module) else self.afs_prior
        options = dict(self.options)
        if self.spec.stochastic:  # step noise from per-seed generators too: samples do not depend on the batching
            options["noise"] = per_sample_noise(seeds, tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        path = self.sigmas if sigmas is None else sigmas
        return self.spec.fn(bound, x, path, callback=callback, afs=afs, **options)

    def model_calls(self, sigmas=None) -> int:
        """Model calls one trajectory of this sampler makes on `sigmas` (default: its own); a call its AFS prior
        answers is not one. Counted on a toy denoiser."""
        calls = []

        def probe(x, sigma):
            calls.append(sigma)
            return 0.5 * x

        afs = (lambda x, sigma: 0.5 * x) if self.afs_prior is not None else None
        path = self.sigmas if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float64)
        options = dict(self.options)
        if self.spec.stochastic:
            from fewstep.solvers.sde import per_sample_noise

            options["noise"] = per_sample_noise(torch.zeros(1, dtype=torch.long), (1,), dtype=torch.float64)
        self.spec.fn(probe, torch.ones(1, 1, dtype=torch.float64), path, afs=afs, **options)
        return len(calls)

    def as_solver(self, seeds) -> Callable:
        """This sampler in the plain solver signature `solver(denoiser, x, sigmas, *, callback=None)`, for code that
        records trajectories (GITS teacher, geometry)."""

        def solver(denoiser, x, sigmas, *, callback=None):
            return self.solve(denoiser, x, seeds, callback=callback, sigmas=sigmas)

        return solver
