"""What `run.py` and the `fewstep` console script do around `fewstep.run(cfg)`: resolvers, the run-dir check,
signals, one-line errors and exit statuses. The top of the import graph: only the CLI imports this module."""

from __future__ import annotations

from fewstep.utils.logging import global_rank

CONFIG_PACKAGE = "pkg://fewstep.conf"  # conf/ as the wheel ships it (a link to the checkout's conf/ in a checkout)


def run_job(cfg):
    """One Hydra job: the task, its errors as one line, the run directory printed; returns the value an optimizing
    sweeper (hydra/sweeper=optuna) minimises."""
    from fewstep.app.runtime import quiet_lightning

    quiet_lightning()
    metrics = run_reporting_errors(cfg)
    leave_process_group()
    print_run_dir(cfg)
    return metrics.get(cfg.get("optimized_metric", "fid")) if isinstance(metrics, dict) else None


def leave_process_group() -> None:
    """Destroy this rank's process group before the interpreter exits. Ranks other than 0 finish first (they skip
    the scoring); one exiting with its gloo group alive was seen to abort ("terminate called without an active
    exception", SIGABRT) while rank 0 still scored, and torchrun then stopped rank 0 too."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def hydra_main() -> None:
    """`fewstep KEY=VALUE ...` (also -m, --help, --cfg job): the job `python run.py` runs, on the shipped configs."""
    import hydra

    register_resolvers()
    reporting_config_errors(hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="config")(run_job))


OWN_FULL_ERROR = "FEWSTEP_SET_HYDRA_FULL_ERROR"  # HYDRA_FULL_ERROR=1 set by fewstep, not by the user


def reporting_config_errors(main) -> None:
    """Run a `@hydra.main` function with Hydra's composition errors (an unknown group option, a misspelled key, an
    unreadable override) as one `error:` line naming what exists, exit status 2. Hydra raises them to us only
    with HYDRA_FULL_ERROR=1; a user who set it keeps Hydra's full report."""
    import os
    import sys

    from hydra.errors import CompactHydraException

    if os.environ.get("HYDRA_FULL_ERROR") and not os.environ.get(OWN_FULL_ERROR):
        return main()
    os.environ.update({"HYDRA_FULL_ERROR": "1", OWN_FULL_ERROR: "1"})
    try:
        return main()
    except CompactHydraException as err:
        from fewstep.app.config.overrides import composition_error_line

        print(f"error: {composition_error_line(err, sys.argv[1:])}", file=sys.stderr)
        remove_rejected_sweep_dir()
        sys.exit(2)


def stop_on_signals() -> None:
    """SIGTERM (SLURM preemption, `timeout`, `kill`, container stops) and SIGINT raise `RunInterrupted` in the
    main thread: the run stops at once, atomic writes leave only whole shards, and a rerun resumes. Lightning
    composes its own SIGTERM handler with this one while it runs."""
    import signal

    from fewstep.errors import RunInterrupted

    def interrupt(signum, frame):
        raise RunInterrupted(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupt)


def run_reporting_errors(cfg):
    """`fewstep.run(cfg)` as the command line runs it: SIGTERM/SIGINT stop it, and every error a user can cause or
    fix (bad config, non-finite results, a full disk, an unwritable folder, a stop request) is one line on stderr
    and an exit status (2: fix the input, 1: the machine, 128 + signal: stopped)."""
    import sys

    from hydra.errors import InstantiationException

    from fewstep.app.tasks import run
    from fewstep.errors import FewstepError, RunInterrupted

    stop_on_signals()
    try:
        if cfg is not None:
            check_added_overrides(cfg)
            set_threads(cfg)
        return run(cfg)
    except (FewstepError, InstantiationException) as err:  # a constructor refusing its config: one line too
        from fewstep.app.config.overrides import one_line

        print(f"error: {one_line(str(err))}", file=sys.stderr)
        remove_rejected_run_dir()
        sys.exit(2)
    except RunInterrupted as err:
        print(f"stopped by {err}: {resume_hint(cfg)}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        sys.exit(1)


def check_added_overrides(cfg) -> None:
    """`+key=value` on the command line: refused when nothing reads the key (see `config.overrides`)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        from fewstep.app.config.overrides import check_added_keys

        hydra_cfg = HydraConfig.get()
        check_added_keys(cfg, list(hydra_cfg.overrides.task), hydra_cfg.runtime.choices.keys())


HYDRA_BOOKKEEPING = (".hydra",)


def remove_rejected_run_dir() -> None:
    """A config refused before any work leaves nothing behind: the run directory Hydra made for this job is
    removed when it holds only Hydra's own files (.hydra/, the job's log) and did not exist before the run."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or global_rank() != 0:
        return
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if str(run_dir) in RunDirCheck.existing or not run_dir.is_dir():
        return
    own = {*HYDRA_BOOKKEEPING, f"{hydra_cfg.job.name}.log"}
    if all(entry.name in own for entry in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def remove_rejected_sweep_dir() -> None:
    """A sweep whose jobs fail to compose leaves nothing behind: the new sweep directory is removed when it holds
    only Hydra's multirun.yaml."""
    import shutil

    made = RunDirCheck.new_sweep_dir
    if made is not None and made.is_dir() and all(p.name == "multirun.yaml" for p in made.iterdir()):
        shutil.rmtree(made, ignore_errors=True)


def resume_hint(cfg) -> str:
    """How to continue a stopped run: sampling resumes from its cached shards; training from the last checkpoint in
    its own run directory, which a re-run of the same command would not find."""
    if cfg is not None and cfg.get("task") is not None and cfg.task.get("name") == "train":
        try:
            run_dir = cfg.paths.output_dir
        except Exception:  # no Hydra runtime (an API call)
            run_dir = "<its run directory>"
        return (f"checkpoints/last.ckpt is kept (every task.checkpoint_every steps); continue with the same command "
                f"plus task.resume=true hydra.run.dir={run_dir}")  # fmt: skip
    return "finished batches are kept; re-run the same command to resume"


def parallel_jobs(cores: int) -> int:
    """How many jobs of this sweep the launcher runs at once on this machine: joblib's n_jobs (negative: cores + 1 +
    n_jobs, as joblib counts), 1 for a single run or a launcher that runs jobs one after another or elsewhere."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    launcher = HydraConfig.get().launcher
    if "JoblibLauncher" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = launcher.get("n_jobs")
    n_jobs = -1 if n_jobs is None else int(n_jobs)
    return max(1, n_jobs if n_jobs > 0 else cores + 1 + n_jobs)


def submitit_cpus() -> int | None:
    """The CPUs a submitit launcher (hydra/launcher=slurm, local_jobs) reserves for each task, if it says."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    launcher = HydraConfig.get().launcher
    if "submitit" not in str(launcher.get("_target_", "")):
        return None
    cpus = launcher.get("cpus_per_task")
    return int(cpus) if cpus else None


def set_threads(cfg) -> int | None:
    """`threads`: torch's intra-op threads for this job. `auto`: left alone for a single run; under a submitit
    launcher, its `cpus_per_task`; when joblib runs several jobs at once on this machine, cores / jobs each, so that
    they do not oversubscribe the CPU (two 2-thread processes on 2 cores made the GITS warm-up 30x slower)."""
    import torch

    from fewstep.app.config.checks import available_cores
    from fewstep.errors import FewstepError
    from fewstep.utils.logging import info

    value = cfg.get("threads", "auto")
    cores = available_cores()
    if value == "auto":
        reserved = submitit_cpus()
        jobs = parallel_jobs(cores)
        if reserved:
            threads = reserved
            info(f"threads: {threads} (the launcher's cpus_per_task)")
        elif jobs > 1:
            threads = max(1, cores // jobs)
            info(f"threads: {threads} per job ({cores} cores, {jobs} jobs at once)")
        else:
            return None
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        threads = value
    else:
        raise FewstepError(f"threads must be auto or a positive integer, got {value!r}")
    torch.set_num_threads(threads)
    return threads


def os_error_line(err: OSError) -> str:
    """One line for a failed write or read: what, where, and which setting moves it."""
    import errno

    where = err.filename or "a file"
    if err.errno == errno.ENOSPC:
        return (
            f"no space left on the device writing {where}; free space, or point paths.cache_dir / "
            "hydra.run.dir to another disk (finished shards are kept: re-run the same command to resume)"
        )
    if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return (
            f"cannot write {where} ({err.strerror}); set paths.cache_dir=... (caches) or hydra.run.dir=... "
            "(this run's outputs) to a writable folder"
        )
    return f"{err.strerror or type(err).__name__}: {where}"


def _hydra_callback():
    from hydra.experimental.callback import Callback

    return Callback


class RunDirCheck(_hydra_callback()):
    """A Hydra callback: the run (or sweep) directory must be creatable, checked before Hydra makes it, so an
    unwritable `hydra.run.dir` is one line instead of Hydra's traceback. It notes a run directory that exists
    already (`task.resume=true hydra.run.dir=...`): a rejected config never removes that one."""

    existing: set[str] = set()
    new_sweep_dir = None  # a sweep directory this multirun makes

    def on_run_start(self, config, **kwargs) -> None:
        import os

        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)  # run names may use ${hydra:runtime.choices...}; Hydra sets it too
        run_dir = os.path.abspath(str(config.hydra.run.dir))
        if os.path.exists(run_dir):
            RunDirCheck.existing.add(run_dir)
        _check_dir(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        from pathlib import Path

        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        if not sweep_dir.exists():
            RunDirCheck.new_sweep_dir = sweep_dir
        _check_dir(config.hydra.sweep.dir, "hydra.sweep.dir")
        _check_slurm(config.hydra.launcher)


def _check_slurm(launcher) -> None:
    """The SLURM launcher submits with sbatch: without it (not on a cluster), one line instead of a traceback."""
    import shutil
    import sys

    if "SlurmLauncher" in str(launcher.get("_target_", "")) and shutil.which("sbatch") is None:
        print("error: hydra/launcher=slurm submits the jobs with sbatch, which is not on this machine's PATH: run "
              "the sweep on the cluster's login node, or try it here with hydra/launcher=submitit_local",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)


def _check_dir(path: str, key: str) -> None:
    import sys

    from fewstep.app.config.checks import writable
    from fewstep.errors import FewstepError

    try:
        writable(key, path)
    except FewstepError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def register_resolvers() -> None:
    """`${fewstep.cwd:}`: the directory the command was started from. Hydra's `${hydra:runtime.cwd}` is not set
    yet when a multirun's sweep directory is resolved, so `paths.root_dir` cannot use it.
    `${fewstep.run_stamp:}`: the run folder's date and time, the same on every rank of an external launcher."""
    import os

    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("fewstep.cwd", os.getcwd, replace=True)
    OmegaConf.register_new_resolver("fewstep.run_stamp", run_stamp, replace=True, use_cache=True)


STAMP_FORMAT = "%Y-%m-%d/%H-%M-%S-%f"


def run_stamp(environ=None, wait_seconds: float = 120.0) -> str:
    """`DATE/TIME` naming this run's folder. One process: now. Under torchrun or SLURM every rank starts Hydra
    itself and would read its own clock, so the ranks agree instead: on one node rank 0 writes its stamp to a
    file named by the launcher's job id (torchrun's TORCHELASTIC_RUN_ID, SLURM's job and step ids) and the others
    read it; across nodes, where no file is shared, the job id names the folder (`DATE-of-the-id/torchrun-ID`)."""
    import os
    import tempfile
    import time
    from datetime import datetime
    from pathlib import Path

    env = os.environ if environ is None else environ
    now = datetime.now().strftime(STAMP_FORMAT)
    if int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1")) or 1) <= 1:
        return now
    if "TORCHELASTIC_RUN_ID" in env:
        job, rank, local = f"torchrun-{env['TORCHELASTIC_RUN_ID']}", env.get("RANK", "0"), env.get("LOCAL_WORLD_SIZE")
        single_node = local is not None and local == env.get("WORLD_SIZE")
    elif "SLURM_JOB_ID" in env:
        job = f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_STEP_ID', '0')}"
        rank, single_node = env.get("SLURM_PROCID", "0"), env.get("SLURM_NNODES", "1") == "1"
    else:
        return now  # a launcher we do not know: as before (give hydra.run.dir=... to every rank)
    if not single_node:
        return f"{job}/run"
    shared = Path(tempfile.gettempdir()) / f"fewstep-stamp-{job}"
    if rank == "0":
        partial = shared.with_suffix(f".{os.getpid()}.part")
        partial.write_text(now)
        os.replace(partial, shared)
        return now
    started, deadline = time.time(), time.monotonic() + wait_seconds
    while time.monotonic() < deadline:  # a file left by an earlier launch with the same id is too old to count
        if shared.is_file() and shared.stat().st_mtime > started - 60:
            return shared.read_text().strip()
        time.sleep(0.05)
    return f"{job}/run"


def print_run_dir(cfg) -> None:
    if global_rank() == 0:
        print(f"run_dir: {cfg.paths.output_dir}", flush=True)
