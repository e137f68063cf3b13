"""fewstep entry point: `python run.py solver=ipndm schedule=polynomial nfe=5` (Hydra overrides)."""

import sys

import hydra
from omegaconf import DictConfig

from fewstep.utils.runtime import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from fewstep import FewstepError, run
    from fewstep.utils.runtime import print_run_dir, quiet_lightning

    quiet_lightning()
    try:
        metrics = run(cfg)
    except FewstepError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print_run_dir(cfg)
    # the value an optimizing sweeper (hydra/sweeper=optuna) minimises
    return metrics.get(cfg.get("optimized_metric", "fid")) if isinstance(metrics, dict) else None


if __name__ == "__main__":
    main()
