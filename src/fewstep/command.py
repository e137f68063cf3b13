"""What `run.py` does around `fewstep.run(cfg)`: resolvers, the run-dir check, signals, one-line errors and exit
statuses. The top of the import graph: nothing in the package imports this module."""

from __future__ import annotations

from fewstep.utils.logging import global_rank


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

    from fewstep import run
    from fewstep.errors import FewstepError, RunInterrupted

    stop_on_signals()
    try:
        return run(cfg)
    except FewstepError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as err:
        print(f"stopped by {err}: finished batches are kept; re-run the same command to resume", file=sys.stderr)
        sys.exit(128 + err.signum)
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        sys.exit(1)


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
    unwritable `hydra.run.dir` is one line instead of Hydra's traceback."""

    def on_run_start(self, config, **kwargs) -> None:
        _check_dir(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config, **kwargs) -> None:
        _check_dir(config.hydra.sweep.dir, "hydra.sweep.dir")


def _check_dir(path: str, key: str) -> None:
    import sys

    from fewstep.config.checks import writable
    from fewstep.errors import FewstepError

    try:
        writable(key, path)
    except FewstepError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def register_resolvers() -> None:
    """`${fewstep.cwd:}`: the directory the command was started from. Hydra's `${hydra:runtime.cwd}` is not set
    yet when a multirun's sweep directory is resolved, so `paths.root_dir` cannot use it."""
    import os

    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("fewstep.cwd", os.getcwd, replace=True)


def print_run_dir(cfg) -> None:
    if global_rank() == 0:
        print(f"run_dir: {cfg.paths.output_dir}", flush=True)
