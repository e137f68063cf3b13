"""fewstep entry point: `python run.py solver=ipndm schedule=polynomial nfe=5` (Hydra overrides)."""

import hydra
from omegaconf import DictConfig

from fewstep.utils.runtime import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from fewstep.utils.runtime import print_run_dir, quiet_lightning, run_reporting_errors

    quiet_lightning()
    metrics = run_reporting_errors(cfg)
    print_run_dir(cfg)
    # the value an optimizing sweeper (hydra/sweeper=optuna) minimises
    return metrics.get(cfg.get("optimized_metric", "fid")) if isinstance(metrics, dict) else None


if __name__ == "__main__":
    main()
