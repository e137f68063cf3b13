"""Solvers: pure functions `solver(denoiser, x, sigmas, *, callback=None, afs=None, **options) -> x`."""

from __future__ import annotations

from fewstep.solvers.afs import ReferenceAFS, make_afs_prior
from fewstep.solvers.multistep import deis, dpmpp, ipndm_v, unipc
from fewstep.solvers.nfe import SolverSpec, StepPlan, nfe_of, plan_for_schedule, plan_steps, spendable_nfes
from fewstep.solvers.ode import dpm, euler, heun, ipndm
from fewstep.solvers.registry import SOLVER_ARGUMENTS, SOLVERS, check_options, get_solver
from fewstep.solvers.sampler import Sampler
from fewstep.solvers.sde import edm_stochastic, er_sde, euler_ancestral, per_sample_noise

__all__ = [
    "SOLVERS",
    "SOLVER_ARGUMENTS",
    "Sampler",
    "ReferenceAFS",
    "SolverSpec",
    "StepPlan",
    "check_options",
    "deis",
    "dpm",
    "dpmpp",
    "edm_stochastic",
    "er_sde",
    "euler_ancestral",
    "euler",
    "get_solver",
    "heun",
    "ipndm",
    "ipndm_v",
    "make_afs_prior",
    "nfe_of",
    "per_sample_noise",
    "plan_for_schedule",
    "plan_steps",
    "spendable_nfes",
    "unipc",
]
