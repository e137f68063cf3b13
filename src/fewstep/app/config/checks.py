"""The whole config checked before anything loads: set values, strict types, ranges, and a solver dry run.

A config error is one line naming the key and what it accepts (`FewstepError`), raised before data, models or
Lightning load. Types are taken from the defaults that ship (signatures, GITS `DEFAULTS`, conf/task/*.yaml):
a boolean accepts only true/false, a count only an integer, a real number an int or a float.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fewstep.errors import FewstepError
from fewstep.utils.options import MAX_SEED, integer, like, options_like

NFE_LIMIT_PER_REFERENCE_STEP = 10  # nfe above 10x the reference solution's step count is surely a typo


def missing_values(cfg: DictConfig) -> None:
    """`???` left in the config (e.g. a checkpoint path): one line naming the key."""
    missing = sorted(_missing(cfg, ""))
    if missing:
        key = missing[0]
        example = "/path/to/checkpoint" if key.endswith("path") else "VALUE"
        raise FewstepError(f"{key} must be set (it has no default), e.g. {key}={example}"
                           + (f"; also unset: {', '.join(missing[1:])}" if len(missing) > 1 else ""))  # fmt: skip


def _missing(node, prefix: str) -> list[str]:
    """Keys set to `???` (not resolving interpolations: some only resolve inside a Hydra job)."""
    found = []
    for key in node.keys():
        full = f"{prefix}{key}"
        if full == "hydra":
            continue
        if OmegaConf.is_missing(node, key):
            found.append(full)
        else:
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_interpolation():
                found += _missing(child, f"{full}.")
    return found


def config_dir() -> Path:
    """The configs that ship with the package (`fewstep/conf`: in a checkout, a link to the top-level conf/)."""
    from importlib.resources import files

    folder = Path(str(files("fewstep") / "conf"))
    if not (folder / "config.yaml").is_file():
        raise FewstepError(f"fewstep's configs are missing ({folder}/config.yaml): reinstall the package, or "
                           "run from a checkout whose src/fewstep/conf links to conf/")  # fmt: skip
    return folder


def task_defaults(name: str) -> dict:
    path = config_dir() / "task" / f"{name}.yaml"
    if not path.is_file():
        raise FewstepError(f"task={name} has no config {path}; choose one of "
                           f"{sorted(p.stem for p in path.parent.glob('*.yaml'))}")  # fmt: skip
    return {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path), resolve=False).items()
            if not (isinstance(v, str) and "${" in v)}  # fmt: skip


def check_common(cfg: DictConfig) -> None:
    """Keys every task has: checked first, before any task-specific work."""
    missing_values(cfg)
    writable("paths.cache_dir", cfg.paths.cache_dir)
    task = OmegaConf.to_container(cfg.task, resolve=True)
    options_like("task", task, task_defaults(str(cfg.task.name)))
    num_samples = integer("num_samples", cfg.num_samples, 2, why=" (the Fréchet distance needs a covariance)")
    integer("seed", cfg.seed, 0, MAX_SEED - num_samples, f" so that the {num_samples} seeds stay below 2**63")
    integer("batch_size", cfg.batch_size, 1)
    like("denoise_to_zero", cfg.denoise_to_zero, False)
    check_trainer(cfg.trainer)
    for key in ("sigma_min", "sigma_max"):
        like(f"model.{key}", cfg.model.get(key), 1.0)
    denoiser = cfg.model.get("denoiser") or {}
    if "allow_pickle" in denoiser:
        like("model.denoiser.allow_pickle", denoiser.allow_pickle, False)
    eval_cfg = cfg.get("eval")
    if eval_cfg is not None:
        integer("eval.grid_size", eval_cfg.grid_size, 1, why=" (images in samples.png)")
        reference = eval_cfg.get("reference")
        if reference is not None and reference.get("solver"):
            integer("eval.reference.num_steps", reference.num_steps, 1)
            like("eval.reference.rho", reference.rho, 1.0)


GPU_ACCELERATORS = ("gpu", "cuda")


def available_cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def check_trainer(trainer, environ=None) -> None:
    """The Trainer's accelerator and device count, against this machine, before Lightning loads: a GPU trainer
    needs CUDA, and Lightning starts one process per device, so `trainer.devices` is at most the GPUs (or, on the
    CPU, the cores: more processes than cores is never faster). Ranks started by torchrun or SLURM exist already."""
    import os

    environ = os.environ if environ is None else environ
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    cuda = torch.cuda.is_available()
    if accelerator in GPU_ACCELERATORS and not cuda:
        raise FewstepError(f"trainer.accelerator={accelerator} needs a CUDA GPU, and torch {torch.__version__} sees "
                           "none here (torch.cuda.is_available() is false); use trainer=cpu, or trainer=ddp "
                           "trainer.devices=N for N CPU processes")  # fmt: skip
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    count = len(devices) if OmegaConf.is_list(devices) or isinstance(devices, list | tuple) else devices
    if isinstance(count, bool) or not isinstance(count, int):
        return  # "auto", "0,1": Lightning's own parsing
    if count == -1:
        return  # every device there is
    if count < 1:
        raise FewstepError(f"trainer.devices must be a positive integer (or -1, auto), got {devices!r}")
    if "LOCAL_WORLD_SIZE" in environ or "SLURM_NTASKS" in environ:
        return  # the launcher made the processes; Lightning checks that they match
    on_gpu = accelerator in GPU_ACCELERATORS or (accelerator == "auto" and cuda)
    limit, what = (torch.cuda.device_count(), "GPUs") if on_gpu else (available_cores(), "CPU cores")
    if count > limit:
        raise FewstepError(f"trainer.devices={count} would start {count} processes, and this machine has {limit} "
                           f"{what}; use trainer.devices={limit} or fewer")  # fmt: skip


def writable(key: str, folder) -> None:
    """A folder the run will write to: creatable and writable now, not after the sampling."""
    import os

    path = Path(str(folder))
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".fewstep-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise FewstepError(
            f"{key}={folder} cannot be written ({err.strerror}); set {key} to a writable folder"
        ) from None


def check_nfe(cfg: DictConfig) -> int:
    """nfe: a positive integer below a limit no schedule can usefully pass (10x the reference's steps)."""
    nfe = cfg.nfe
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise FewstepError(f"nfe must be a positive integer, got {nfe!r}")
    reference = cfg.eval.reference
    limit = NFE_LIMIT_PER_REFERENCE_STEP * int(reference.num_steps)
    if nfe > limit:
        raise FewstepError(f"nfe={nfe} is above the limit of {limit} ({NFE_LIMIT_PER_REFERENCE_STEP} x "
                           f"eval.reference.num_steps={reference.num_steps}): the reference solution would be coarser "
                           "than the sampler; lower nfe or raise eval.reference.num_steps")  # fmt: skip
    return nfe
