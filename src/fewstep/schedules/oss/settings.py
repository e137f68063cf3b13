"""Settings of the solver-aware search (`schedule=oss`): the one source of their defaults, checked as a whole.

The grid and teacher are GITS's (same keys, same defaults); `conf/schedule/oss.yaml` lists the same keys and a
test holds it equal to `DEFAULTS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from fewstep.errors import FewstepError
from fewstep.utils.options import MAX_SEED, integer, options_like, reject_unknown

GITS_REFERENCE_WARMUP = 256  # GITS's reference warm-up size: the unit of `budget`


@dataclass(frozen=True)
class OssSettings:
    base: str = "polynomial"  # base grid schedule (as GITS)
    rho: float = 7.0
    base_options: dict = field(default_factory=dict)
    grid_size: int = 61  # grid points
    teacher: str = "ipndm"  # teacher solver on the grid
    teacher_order: int = 4
    num_warmup: int = 32  # the most warm-up samples the DP runs the student on
    budget: float = 0.5  # the DP (and the teacher on its samples) spend at most this many GITS reference warm-ups
    #   (256 x (grid_size-1) evaluations): fewer samples where a DP sample costs more, never below min_warmup;
    #   below that (solvers that evaluate at every candidate target: heun, dpm, unipc), the DP steps between every
    #   2nd, 3rd, ... grid point
    min_warmup: int = 8
    num_validation: int = 128  # other samples that pick the schedule among the DP's best paths into the last point
    #   and every hand-crafted schedule (exactly), and score the refinement: whole runs only
    validation_chunk: int = 32  # validation seeds per chunk: a start candidate runs the next chunk only while it is
    #   not significantly worse than the best so far; of the refinement's trials at a point only the best on the
    #   first chunk runs the others, and only when it beats the path there
    finalists: int = 8  # how many of the DP's paths into the last point the validation samples compare
    warmup_seed: int = 1_000_000  # warm-up seeds: warmup_seed .. warmup_seed + num_warmup - 1 (as GITS), then the
    #   validation seeds
    metric: str = "l2"  # l2 | l1 | dev (excess deviation from the teacher's chord, as the GITS metric)
    per_sample: bool = False  # false: one DP over the mean distance; true: a DP per sample, paths aggregated by the
    #   median grid index at each step (the OSS paper's code)
    refine: bool = True  # then coordinate descent on the end distance of whole runs, from the race's pick (the
    #   best of the DP's finalists and the hand-crafted schedules)
    refine_window: int = 3  # grid points each interior step may move per trial
    max_warmups: float = 2.0  # the refinement stops (keeping its path) before the search's own runs (the DP's,
    #   the validation's and the polish's planned ones; not the teacher, which a sweep's cells share) would pass
    #   this many GITS reference warm-ups of model evaluations
    polish: int = 0  # then this many gradient steps on the path's sigmas, off the grid (LD3's parametrisation,
    #   Adam), against the teacher's samples of the warm-up seeds; 0: none. Needs a denoiser autograd sees through
    polish_batch: int = 8  # warm-up samples per gradient step
    polish_lr: float = 0.02  # Adam's learning rate on the logits of the steps' shares of the fall in log sigma
    polish_every: int = 4  # the sigmas after every this many steps are screened on the first validation chunk; the
    #   best, if below the path there, runs the other chunks and is taken when lower by `significance` paired SE
    significance: float = 2.0  # a start candidate stops running once the best so far is lower by more than this many
    #   standard errors of the paired per-sample difference (0: any lower mean) ...
    race_margin: float = 0.05  # ... and by more than this fraction of its mean (near-ties run on: a chunk without
    #   the few seeds that land on another mode shows a hair's difference with almost no spread)
    refine_significance: float = 3.0  # a refinement move must lower the end distance by more than this many paired
    #   standard errors: a sweep tests dozens of moves, and at 2 one of them passes by chance about every sweep

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULTS: dict = OssSettings().as_dict()


def oss_settings(options: dict | OssSettings | None = None) -> OssSettings:
    """Settings from `options` (a config's `schedule` without its name, or keyword arguments): unknown names,
    wrong types and impossible values are one error each, before any work."""
    from fewstep.schedules import SCHEDULES
    from fewstep.schedules.oss.kernel import DISTANCES

    if isinstance(options, OssSettings):
        options = options.as_dict()
    options = {k: v for k, v in (options or {}).items() if k != "name"}
    reject_unknown("schedule 'oss'", options, DEFAULTS)
    values = options_like("schedule", {**DEFAULTS, **options}, DEFAULTS)
    values["base_options"] = dict(values["base_options"] or {})
    integer("schedule.num_warmup", values["num_warmup"], 1)
    integer("schedule.min_warmup", values["min_warmup"], 1, values["num_warmup"], " (and at most num_warmup)")
    integer("schedule.num_validation", values["num_validation"], 1)
    integer("schedule.finalists", values["finalists"], 1)
    integer("schedule.validation_chunk", values["validation_chunk"], 1)
    seeds = values["num_warmup"] + values["num_validation"]
    integer("schedule.warmup_seed", values["warmup_seed"], 0, MAX_SEED - seeds)
    integer("schedule.grid_size", values["grid_size"], 3)
    integer("schedule.refine_window", values["refine_window"], 1)
    integer("schedule.polish", values["polish"], 0)
    integer("schedule.polish_batch", values["polish_batch"], 1)
    integer("schedule.polish_every", values["polish_every"], 1)
    if values["metric"] not in DISTANCES:
        raise FewstepError(f"schedule.metric must be one of {list(DISTANCES)}, got {values['metric']!r}")
    if values["base"] not in SCHEDULES:
        raise FewstepError(f"schedule.base must be one of {sorted(SCHEDULES)}, got {values['base']!r}")
    non_negative = {"significance": "standard errors", "refine_significance": "standard errors",
                    "race_margin": "a fraction of the best mean", "max_warmups": "GITS reference warm-ups"}  # fmt: skip
    for key, unit in non_negative.items():
        if not values[key] >= 0:
            raise FewstepError(f"schedule.{key} must be >= 0 ({unit}), got {values[key]}")
    if not values["polish_lr"] > 0:
        raise FewstepError(f"schedule.polish_lr must be positive, got {values['polish_lr']}")
    if not values["budget"] > 0:
        raise FewstepError(f"schedule.budget must be positive (GITS reference warm-ups), got {values['budget']}")
    return OssSettings(**{f.name: values[f.name] for f in fields(OssSettings)})
