"""The solvers by name, with their NFE cost per step, order and options."""

from __future__ import annotations

from fewstep.errors import FewstepError
from fewstep.solvers.multistep import deis, dpmpp, ipndm_v, unipc
from fewstep.solvers.nfe import SolverSpec
from fewstep.solvers.ode import dpm, euler, heun, ipndm
from fewstep.solvers.sde import edm_stochastic, er_sde, euler_ancestral

SOLVERS: dict[str, SolverSpec] = {
    spec.name: spec
    for spec in [
        SolverSpec("euler", euler, 1, 1, "Euler / DDIM"),
        SolverSpec("heun", heun, 2, 2, "Heun's 2nd order (EDM)"),
        SolverSpec("dpm", dpm, 2, 2, "DPM-Solver-2, singlestep (option r)"),
        SolverSpec("ipndm", ipndm, 1, 4, "improved PNDM: Adams-Bashforth with equal-step weights (max_order <= 4)"),
        SolverSpec("ipndm_v", ipndm_v, 1, 4, "iPNDM with variable-step Adams-Bashforth weights (max_order <= 4)"),
        SolverSpec("dpmpp", dpmpp, 1, 3, "DPM-Solver++ 2M/3M multistep, data prediction (max_order <= 3)"),
        SolverSpec("unipc", unipc, 1, 3, "UniPC predictor-corrector, bh1/bh2 (max_order <= 3; corrector +1)"),
        SolverSpec("deis", deis, 1, 3, "DEIS tAB, polynomial in VP time (max_order <= 4, default 3)"),
        SolverSpec("er_sde", er_sde, 1, 3, "ER-SDE-Solver 1/2/3, VE form, noise scale phi (stochastic)", True),
        SolverSpec("euler_ancestral", euler_ancestral, 1, 1, "Euler ancestral, k-diffusion (eta; stochastic)", True),
        SolverSpec("edm_stochastic", edm_stochastic, 2, 2, "EDM Algorithm 2, Heun with churn (stochastic)", True),
    ]
}


SOLVER_ARGUMENTS = ("denoiser", "x", "sigmas", "callback", "afs", "noise")  # what the pipeline passes, not options


def get_solver(name: str) -> SolverSpec:
    if name not in SOLVERS:
        raise FewstepError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name]


def check_options(spec: SolverSpec, options: dict) -> dict:
    """Reject options the solver function does not take (a typo must not be silently ignored)."""
    from fewstep.utils.options import function_options, reject_unknown

    reject_unknown(f"solver {spec.name!r}", options, function_options(spec.fn, SOLVER_ARGUMENTS))
    return dict(options)


def dry_run(spec: SolverSpec, options: dict, sigmas) -> None:
    """Run the solver with its options on a toy denoiser, so that a bad option (max_order=9, a wrong type)
    fails now, not after the data and the model have loaded."""
    import torch

    from fewstep.solvers.sde import per_sample_noise

    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    seeds = torch.zeros(1, dtype=torch.long)
    noise = {"noise": per_sample_noise(seeds, (1, 2, 2), x.dtype, x.device)} if spec.stochastic else {}
    try:
        with torch.no_grad():
            spec.fn(lambda x, sigma: x * 0.5, x, sigmas, afs=None, **options, **noise)
    except FewstepError:
        raise
    except Exception as err:
        shown = ", ".join(f"solver.{k}={v!r}" for k, v in options.items()) or "its defaults"
        raise FewstepError(f"solver={spec.name} fails with {shown}: {type(err).__name__}: {err}") from None
