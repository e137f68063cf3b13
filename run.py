"""fewstep entry point in a checkout: `python run.py solver=ipndm schedule=polynomial nfe=5` (Hydra overrides).
The same job as the `fewstep` console script of an installed wheel; both read these configs (conf/, shipped in the
wheel as fewstep/conf)."""

import hydra
from omegaconf import DictConfig

from fewstep.app.command import register_resolvers, reporting_config_errors, run_job

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    return run_job(cfg)


if __name__ == "__main__":
    reporting_config_errors(main)  # Hydra's config errors as one `error:` line
