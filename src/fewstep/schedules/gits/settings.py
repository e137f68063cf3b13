"""GITS settings: the one source of their defaults (the reference code's), checked as a whole.

`conf/schedule/gits.yaml` lists the same keys so that Hydra overrides like `schedule.coeff=1.2` compose; a test
holds it equal to `DEFAULTS`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from fewstep.errors import FewstepError
from fewstep.utils.options import MAX_SEED, integer, options_like, reject_unknown


@dataclass(frozen=True)
class GitsSettings:
    base: str = "polynomial"  # base grid schedule
    rho: float = 7.0  # its exponent (polynomial, discrete)
    base_options: dict = field(default_factory=dict)  # other options of the base schedule
    grid_size: int = 61  # grid points
    teacher: str = "ipndm"  # teacher solver on the grid
    teacher_order: int = 4  # its max_order
    num_warmup: int | str = 256  # warm-up trajectories, or "auto": rounds of 16, 32, ... until the path stops changing
    max_warmup: int = 256  # with num_warmup=auto: the most trajectories the rounds grow to
    warmup_seed: int = 1_000_000  # warm-up seeds: warmup_seed .. warmup_seed + num_warmup - 1
    coeff: float = 1.15  # DP discount: V_k(i) = min_j C[i, j] + coeff * V_{k-1}(j)
    metric: str = "dev"  # l1 | l2 | dev (deviation from the chord x_T -> x_0)
    afs_insert: bool = True  # with AFS: DP over one step fewer, then the AFS step where the solver lands closest
    afs_batch: int = 32  # warm-up seeds that pick the AFS step
    teacher_afs: bool = False  # with AFS, the teacher's first call answered by the run's AFS prior too (the
    #   reference code's behaviour; with solver.afs_prior=reference it reproduces its cost matrix exactly)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def auto(self) -> bool:
        return self.num_warmup == "auto"

    @property
    def warmup_limit(self) -> int:
        """The most warm-up trajectories (and seeds) this search may use."""
        return int(self.max_warmup) if self.auto else int(self.num_warmup)

    @property
    def afs_seeds(self) -> list[int]:
        """The warm-up seeds that pick the AFS step."""
        first = int(self.warmup_seed)
        return list(range(first, first + min(int(self.afs_batch), self.warmup_limit)))

    def warmup_part(self) -> dict:
        """The settings the cost matrix depends on (not the DP's or the AFS insertion's)."""
        return {k: v for k, v in self.as_dict().items() if k not in ("coeff", "afs_insert", "afs_batch")}


DEFAULTS: dict = GitsSettings().as_dict()


def gits_settings(options: dict | GitsSettings | None = None) -> GitsSettings:
    """Settings from `options` (a config's `schedule` without its name, or keyword arguments): unknown names,
    wrong types and impossible values are one error each, before any work."""
    from fewstep.schedules import SCHEDULES
    from fewstep.schedules.gits.kernel import METRICS

    if isinstance(options, GitsSettings):
        options = options.as_dict()
    options = {k: v for k, v in (options or {}).items() if k != "name"}
    reject_unknown("schedule 'gits'", options, DEFAULTS)
    auto = options.get("num_warmup") == "auto"
    values = options_like("schedule", {**DEFAULTS, **options, **({"num_warmup": 1} if auto else {})}, DEFAULTS)
    values["base_options"] = dict(values["base_options"] or {})
    if auto:
        values["num_warmup"] = "auto"
    limit = int(values["max_warmup"]) if auto else int(values["num_warmup"])
    integer("schedule.warmup_seed", values["warmup_seed"], 0, MAX_SEED - max(limit, 0))
    if values["metric"] not in METRICS:
        raise FewstepError(f"schedule.metric must be one of {list(METRICS)}, got {values['metric']!r}")
    if values["base"] not in SCHEDULES:
        raise FewstepError(f"schedule.base must be one of {sorted(SCHEDULES)}, got {values['base']!r}")
    if limit < 1 or int(values["grid_size"]) < 3 or not values["coeff"] > 0:
        raise FewstepError("gits needs num_warmup >= 1 (or auto, with max_warmup >= 1), grid_size >= 3 and coeff > 0")
    return GitsSettings(**{f.name: values[f.name] for f in fields(GitsSettings)})
