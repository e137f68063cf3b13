"""What every schedule search shares before it differs: the fine base grid, the teacher solver on it and the
teacher's trajectories (states and slopes at every grid point)."""

from __future__ import annotations

import torch

from fewstep.errors import FewstepError
from fewstep.solvers.sampler import Sampler

WARMUP_NAN_CAUSE = ("the denoiser returned NaN/inf on the teacher's trajectories; check the model and its sigma "
                    "range (model.sigma_min / model.sigma_max)")  # fmt: skip


def base_grid(settings, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The grid a search picks its steps from: `settings.grid_size` points of `settings.base` (with its `rho` and
    `base_options`) from sigma_max down to sigma_min."""
    from fewstep.schedules import make_schedule

    options = {"rho": settings.rho} if settings.base in ("polynomial", "discrete") else {}
    options.update(settings.base_options or {})
    return make_schedule(settings.base, int(settings.grid_size) - 1, sigma_min, sigma_max, **options)


def check_grid_steps(settings, num_steps: int, needs: str, grid: str) -> None:
    """A path of `num_steps` steps from sigma_max to sigma_min must fit on a grid of `settings.grid_size` points
    (`grid` names it in the message: "a GITS grid", "an oss grid")."""
    if not 1 <= num_steps <= int(settings.grid_size) - 1:
        raise FewstepError(f"{needs or f'{num_steps} steps'} from sigma_max to sigma_min, which {grid} of "
                           f"{settings.grid_size} points cannot provide; change nfe or schedule.grid_size")  # fmt: skip


def teacher(settings, grid: torch.Tensor, afs_prior=None) -> Sampler:
    """The teacher solver on the grid (`settings.teacher`, `teacher_order`); its first call answered by `afs_prior`
    only with `settings.teacher_afs`."""
    from fewstep.solvers import get_solver
    from fewstep.utils.options import function_options

    spec = get_solver(settings.teacher)
    if spec.stochastic:
        raise FewstepError(f"schedule.teacher={spec.name} is stochastic; a teacher trajectory must be an ODE "
                           "solution: use heun, ipndm, dpmpp, ...")  # fmt: skip
    options = {"max_order": int(settings.teacher_order)} if "max_order" in function_options(spec.fn, ()) else {}
    return Sampler(spec, grid, options, afs_prior if getattr(settings, "teacher_afs", False) else None)


def check_teacher(settings) -> None:
    """The teacher with its options (`teacher`, `teacher_order`) runs now on a toy denoiser and a 3-point grid, so
    that a bad option fails in one line before any data, model or warm-up."""
    from fewstep.solvers.registry import dry_run

    grid = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    sampler = teacher(settings, grid)
    try:
        dry_run(sampler.spec, sampler.options, grid)
    except FewstepError as err:
        raise FewstepError(f"schedule.teacher={sampler.name} schedule.teacher_order={settings.teacher_order}: "
                           f"{err}") from None  # fmt: skip


def teacher_trajectory(solver, denoiser, x: torch.Tensor, grid: torch.Tensor, **options):
    """States at every grid point (N, B, ...) and the model's slopes d = (x - D)/sigma at points 0..N-2."""
    states, slopes = [], []

    def record(info):
        states.append(info["x"])
        slopes.append((info["x"] - info["denoised"]) / info["sigma"])

    final = solver(denoiser, x, grid, callback=record, **options)
    return torch.stack([*states, final]), torch.stack(slopes)
