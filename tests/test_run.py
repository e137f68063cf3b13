"""The sampling task end to end: files written, determinism, DDP, and clean errors for bad input."""

import subprocess
import sys

import pytest
import torch

from fewstep import FewstepError, run
from fewstep.app.shards import ShardStore

from .conftest import QUICK, ROOT, run_cli


def load_samples(run_dir, num):
    (store,) = (run_dir / "samples").iterdir()
    return ShardStore(store).load(list(range(num)))


def test_more_nfe_less_truncation_error(make_cfg):
    errors = [run(make_cfg(*QUICK, "solver=heun", f"nfe={n}", f"seed={n}"))["truncation_error"] for n in (4, 16)]
    assert errors[1] < errors[0] / 4


def test_same_seeds_same_images_whatever_the_batch_size(tmp_path):
    from .conftest import compose_config

    samples = {}
    for batch in (7, 64):
        cfg = compose_config(
            [*QUICK, "num_samples=64", f"batch_size={batch}", "dataset=mnist5k"], tmp_path / str(batch)
        )
        run(cfg)
        samples[batch] = load_samples(tmp_path / str(batch) / "run", 64)
    assert torch.equal(samples[7], samples[64])


def test_resume_skips_finished_seeds(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK)
    first = run(cfg)
    shards = sorted((tmp_path / "run" / "samples").glob("*/*.pt"))
    shards[0].write_bytes(b"truncated")  # a damaged shard is recomputed, not trusted
    second = run(make_cfg(*QUICK))
    assert second["truncation_error"] == first["truncation_error"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["nfe=0"], "nfe must be a positive integer"),
        (["solver=heun", "solver.afs=false", "nfe=5"], "can spend nfe in {2, 4, 6"),
        (["model.sigma_min=-0.1"], "sigma_min must be a positive number"),
        (["num_samples=0"], "num_samples must be at least 2"),
        (["schedule=explicit", "schedule.sigmas=[80,10,20,0.002]"], "strictly decreasing"),
        (["schedule=explicit", "nfe=3"], "set nfe=5"),
        (["solver.max_order=7"], "max_order must be 1, 2, 3 or 4"),
        (["+solver.orderr=2"], "not ['orderr']"),
        (["batch_size=0"], "batch_size must be at least 1"),
        (["eval.grid_size=0"], "eval.grid_size"),
        (["schedule=time_uniform", "schedule.epsilon_s=0"], "epsilon_s"),
        (["eval.reference.solver=er_sde"], "must be an ODE solution"),
        (["schedule=gits", "nfe=70"], "cannot provide"),
        (["schedule=explicit", "denoise_to_zero=true"], "end it with 0"),
        (["task=analyze", "task.solver=euler_ancestral"], "stochastic"),
        (["eval.baseline=flow", "+eval.baseline_options.shfit=3"], "eval.baseline_options={'shfit': 3}: schedule "
         "'flow' takes options ['mu', 'shift'], not ['shfit']"),
        (["schedule=flow", "schedule.shift=0"], "schedule.shift (the flow's time shift, SD3 uses 3.0)"),
    ],
)
def test_bad_input_is_a_clear_error(make_cfg, overrides, message):
    with pytest.raises(FewstepError, match=None) as err:
        run(make_cfg(*QUICK, *overrides))
    assert message in str(err.value)


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["solver=heun", "solver.afs=false", "nfe=5"],
            ["error: solver 'heun' cannot spend nfe=5", "afs=auto"],
        ),
        (["num_samples=0"], ["error: num_samples must be at least 2"]),
    ],
)
def test_cli_bad_input_without_traceback(tmp_path, args, expected):
    result = run_cli(args, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr


def test_install_has_no_cuda_or_torchvision():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_install.py")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shard_store_keeps_decoded_images_as_uint8(tmp_path):
    from fewstep.metrics.quantize import quantize as to_uint8

    images = torch.rand(3, 3, 4, 4) * 2 - 1
    store = ShardStore(tmp_path)
    store.write(torch.tensor([5, 6, 7]), to_uint8(images))
    loaded = store.load([7, 5])
    assert loaded.dtype == torch.float32 and (loaded - images[[2, 0]]).abs().max() <= 1 / 127.5
