"""fewstep entry point: `python run.py solver=ipndm schedule=polynomial nfe=5` (Hydra overrides)."""

import hydra
from omegaconf import DictConfig

from fewstep.command import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from fewstep.command import print_run_dir, run_reporting_errors
    from fewstep.utils.runtime import quiet_lightning

    quiet_lightning()
    metrics = run_reporting_errors(cfg)
    print_run_dir(cfg)
    # the value an optimizing sweeper (hydra/sweeper=optuna) minimises
    return metrics.get(cfg.get("optimized_metric", "fid")) if isinstance(metrics, dict) else None


if __name__ == "__main__":
    main()
