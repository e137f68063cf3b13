"""Stochastic solvers through run.py's path: per-sample step noise, and GITS schedules."""

import pytest
import torch

from fewstep import run
from fewstep.app.shards import ShardStore

from .conftest import QUICK, compose_config


def samples(run_dir, count):
    (store,) = (run_dir / "samples").iterdir()
    return ShardStore(store).load(list(range(count)))


@pytest.mark.parametrize("solver", ["er_sde", "euler_ancestral", "edm_stochastic"])
def test_stochastic_samples_do_not_depend_on_the_batch_size(tmp_path, solver):
    outputs = []
    for batch in (3, 16):
        cfg = compose_config([*QUICK, f"solver={solver}", "num_samples=16", f"batch_size={batch}", "nfe=6"],
                             tmp_path / str(batch))  # fmt: skip
        metrics = run(cfg)
        assert metrics["nfe"] == 6
        outputs.append(samples(tmp_path / str(batch) / "run", 16))
    assert torch.equal(outputs[0], outputs[1])


def test_stochastic_and_deterministic_runs_differ(tmp_path):
    ode = run(compose_config([*QUICK, "solver=er_sde", "solver.phi=x", "solver.order=1"], tmp_path / "ode"))
    sde = run(compose_config([*QUICK, "solver=er_sde", "solver.order=1"], tmp_path / "sde"))
    euler = run(compose_config([*QUICK, "solver=euler"], tmp_path / "euler"))
    assert ode["truncation_error"] == pytest.approx(euler["truncation_error"], rel=1e-6)  # phi = x is the ODE
    assert sde["truncation_error"] != pytest.approx(euler["truncation_error"], rel=1e-3)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_gits_schedules_work_with_er_sde(tmp_path, order):
    cfg = compose_config([*QUICK, "schedule=gits", "schedule.num_warmup=12", "schedule.grid_size=21",
                          "solver=er_sde", f"solver.order={order}", "nfe=5"], tmp_path)  # fmt: skip
    metrics = run(cfg)
    assert metrics["schedule"] == "gits" and metrics["nfe"] == 5 and len(metrics["sigmas"]) == 6
    assert torch.isfinite(samples(tmp_path / "run", 24)).all()


def test_a_user_phi_target_is_instantiated(tmp_path):
    named = run(compose_config([*QUICK, "solver=er_sde", "solver.phi=x2"], tmp_path / "named"))
    target = run(compose_config([*QUICK, "solver=er_sde", "solver.phi={_target_: numpy.square, _partial_: true}"],
                                tmp_path / "target"))  # fmt: skip
    assert target["truncation_error"] == pytest.approx(named["truncation_error"], rel=1e-6)
