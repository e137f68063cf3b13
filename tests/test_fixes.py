"""Regression tests for review findings: cache keys, early checks, stochastic solvers with GITS + AFS."""

import numpy as np
import pytest
import torch

from fewstep import FewstepError, run
from fewstep.app.config.build import eval_settings
from fewstep.metrics.evaluation import prepare_features, save_statistics
from fewstep.metrics.features import WEIGHTS_DIR, LeNetFeatures

from .conftest import QUICK, compose_config


def test_explicit_list_reaches_odd_nfe_with_afs_for_heun(make_cfg):
    metrics = run(make_cfg(*QUICK, "solver=heun", "schedule=explicit", "schedule.sigmas=[80,10,2,0.5,0.002]",
                           "nfe=7"))  # fmt: skip
    assert metrics["nfe"] == 7 and metrics["afs"] is True and metrics["num_steps"] == 4


def test_reference_cache_depends_on_the_whole_interval(tmp_path):
    for last in ("0.5", "0.1"):
        run(compose_config([*QUICK, "schedule=explicit", f"schedule.sigmas=[80,10,2,{last},0]", "nfe=4"],
                           tmp_path / last))  # fmt: skip
    shared = tmp_path / "0.5" / "cache" / "reference"
    assert len(list(shared.iterdir())) == 1
    other = tmp_path / "0.1" / "cache" / "reference"
    assert next(shared.iterdir()).name != next(other.iterdir()).name


def test_feature_identity_follows_the_weights_bytes(tmp_path):
    shipped = LeNetFeatures("digits")
    state = torch.load(WEIGHTS_DIR / "lenet_digits.pt", weights_only=True)
    state["head.bias"] = state["head.bias"] + 1  # same size, other bytes
    torch.save(state, tmp_path / "lenet_digits.pt")
    assert LeNetFeatures("digits", tmp_path / "lenet_digits.pt").identity != shipped.identity


def test_published_statistics_must_match_the_feature_space(make_cfg, tmp_path):
    save_statistics(tmp_path / "edm.npz", np.zeros(2048), np.eye(2048), 50000)
    cfg = make_cfg(*QUICK, f"eval.reference_stats={tmp_path / 'edm.npz'}")
    from fewstep.data import digits

    with pytest.raises(FewstepError, match="need eval/features=inception"):
        prepare_features(eval_settings(cfg.eval), digits())
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(FewstepError, match="cannot be read: it is not an npz archive"):
        prepare_features(eval_settings(make_cfg(*QUICK, f"eval.reference_stats={tmp_path / 'bad.npz'}").eval), digits())


def test_gits_with_a_stochastic_solver_and_afs(make_cfg):
    metrics = run(make_cfg(*QUICK, "schedule=gits", "schedule.num_warmup=12", "schedule.grid_size=21",
                           "solver=edm_stochastic", "nfe=5"))  # fmt: skip
    assert metrics["nfe"] == 5 and metrics["afs"] is True and metrics["num_steps"] == 3
