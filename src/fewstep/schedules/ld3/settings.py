"""Settings of the learned discretisation (`schedule=ld3`): the one source of their defaults, checked as a whole.

The teacher is GITS's (same keys, same defaults: iPNDM order 4 on the 61-point polynomial grid); the optimiser's
defaults are LD3's (vinhsuhi/LD3, configs/cifar10.yml and trainer.py). `conf/schedule/ld3.yaml` lists the same keys
and a test holds it equal to `DEFAULTS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from fewstep.errors import FewstepError
from fewstep.utils.options import MAX_SEED, integer, options_like, reject_unknown

LOSSES = ("l2", "mse", "l1")


@dataclass(frozen=True)
class Ld3Settings:
    base: str = "polynomial"  # the teacher's grid (as GITS)
    rho: float = 7.0
    base_options: dict = field(default_factory=dict)
    grid_size: int = 61
    teacher: str = "ipndm"  # teacher solver on the grid; its end samples are the targets
    teacher_order: int = 4
    init: str = "logsnr"  # the schedule the parameters start from (LD3: uniform in log-SNR); "best": the best
    #   range-free hand-crafted schedule on the validation samples (then never worse than any of them there)
    num_train: int = 50  # training samples (LD3: 50)
    num_validation: int = 50  # validation samples: the best parameters on them are kept (LD3: 50)
    batch_size: int = 2  # training samples per step (LD3: 2)
    rounds: int = 2  # passes over the training samples (LD3: training_rounds_v1 = 2)
    lr: float = 0.005  # RMSprop learning rate of the step parameters (LD3: lr_time_1)
    momentum: float = 0.9
    clip: float = 1.0  # gradient norm clip of the step parameters
    patience: int = 5  # validations without improvement before the best parameters are reloaded and lr decays
    lr_decay: float = 0.8
    min_lr: float = 5e-5
    prior_bound: float | None = None  # the soft teacher: each training sample's noise may move this far (L2, unit
    #   noise) to ease the target; null: LD3's 0.001 x (values per sample) / steps^2; 0: the hard teacher
    shift_lr: float | None = None  # step size of those noise moves; null: LD3's 12 / steps
    loss: str = "l2"  # l2 (per-sample Euclidean distance to the teacher's sample, as oss and the truncation error),
    #   mse (LD3's "L2": squared, per value) or l1
    warmup_seed: int = 1_000_000  # training seeds warmup_seed .., then the validation seeds

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULTS: dict = Ld3Settings().as_dict()


def ld3_settings(options: dict | Ld3Settings | None = None) -> Ld3Settings:
    """Settings from `options` (a config's `schedule` without its name, or keyword arguments): unknown names,
    wrong types and impossible values are one error each, before any work."""
    from fewstep.schedules import RANGE_FREE, SCHEDULES

    if isinstance(options, Ld3Settings):
        options = options.as_dict()
    options = {k: v for k, v in (options or {}).items() if k != "name"}
    reject_unknown("schedule 'ld3'", options, DEFAULTS)
    values = options_like("schedule", {**DEFAULTS, **options}, DEFAULTS)
    values["base_options"] = dict(values["base_options"] or {})
    for key in ("num_train", "num_validation", "batch_size", "rounds", "patience"):
        integer(f"schedule.{key}", values[key], 1)
    integer("schedule.warmup_seed", values["warmup_seed"], 0, MAX_SEED - values["num_train"] - values["num_validation"])
    integer("schedule.grid_size", values["grid_size"], 3)
    if values["loss"] not in LOSSES:
        raise FewstepError(f"schedule.loss must be one of {list(LOSSES)}, got {values['loss']!r}")
    if values["base"] not in SCHEDULES:
        raise FewstepError(f"schedule.base must be one of {sorted(SCHEDULES)}, got {values['base']!r}")
    if values["init"] not in (*RANGE_FREE, "best"):
        raise FewstepError(f"schedule.init must be one of {[*RANGE_FREE, 'best']}, got {values['init']!r}")
    for key in ("lr", "momentum", "clip", "lr_decay", "min_lr", "prior_bound", "shift_lr"):
        value = values[key]
        if value is not None and not (isinstance(value, int | float) and value >= 0):
            raise FewstepError(f"schedule.{key} must be a number >= 0, got {value!r}")
    if not values["lr"] > 0 or not 0 < values["lr_decay"] <= 1:
        raise FewstepError(f"schedule.lr must be > 0 and schedule.lr_decay in (0, 1], got {values['lr']}, "
                           f"{values['lr_decay']}")  # fmt: skip
    return Ld3Settings(**{f.name: values[f.name] for f in fields(Ld3Settings)})
