"""fewstep entry point: `python run.py solver=ipndm schedule=polynomial nfe=5` (Hydra overrides)."""

import sys

import hydra
from omegaconf import DictConfig

from fewstep.utils.runtime import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from fewstep import FewstepError, run
    from fewstep.errors import RunInterrupted
    from fewstep.utils.runtime import os_error_line, print_run_dir, quiet_lightning, stop_on_signals

    quiet_lightning()
    stop_on_signals()
    try:
        metrics = run(cfg)
    except FewstepError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as err:
        print(f"stopped by {err}: finished batches are kept; re-run the same command to resume", file=sys.stderr)
        sys.exit(128 + err.signum)
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        sys.exit(1)
    print_run_dir(cfg)
    # the value an optimizing sweeper (hydra/sweeper=optuna) minimises
    return metrics.get(cfg.get("optimized_metric", "fid")) if isinstance(metrics, dict) else None


if __name__ == "__main__":
    main()
