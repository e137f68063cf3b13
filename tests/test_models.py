"""fewstep's own U-Net (EDM preconditioning, training task, shipped model) and EDM pickles."""

import json
import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from fewstep.app.config.plan import build_plan
from fewstep.data import digits, mnist5k, seeded_noise
from fewstep.errors import FewstepError
from fewstep.metrics.frechet import FeatureStats, frechet_distance
from fewstep.models import EDMPrecond, build_unet, load_edm_pickle, load_unet
from fewstep.models.training import edm_loss, ema_decay
from fewstep.models.unet import WEIGHTS_DIR, checkpoint
from fewstep.schedules import polynomial
from fewstep.solvers import get_solver

from .conftest import QUICK, ROOT, run_cli
from .edm_stub import TinyEDMNet, write_edm_pickle

TINY = {"in_channels": 1, "channels": [8, 16], "emb_dim": 16, "groups": 4, "image_shape": [1, 8, 8]}


class Affine(nn.Module):
    """F(x, c_noise) = 2 x + c_noise: makes the preconditioning checkable by hand."""

    def forward(self, x, c_noise):
        return 2 * x + c_noise.reshape(-1, 1, 1, 1)


def test_edm_preconditioning_matches_the_formula():
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.01, 1.0, 50.0], dtype=torch.float64)
    out = EDMPrecond(Affine(), sigma_data=0.5)(x, sigma)
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip, c_out, c_in = 0.25 / (s**2 + 0.25), s * 0.5 / (s**2 + 0.25).sqrt(), 1 / (s**2 + 0.25).sqrt()
    expected = c_skip * x + c_out * (2 * c_in * x + s.log() / 4)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)  # F runs in float32


def test_unet_shapes_and_ema_decay():
    for size, channels in ((8, [8, 16, 16]), (28, [8, 16, 16]), (7, [8, 16])):
        model = build_unet({**TINY, "channels": channels})
        x = torch.randn(2, 1, size, size)
        assert model(x, torch.tensor([0.5, 3.0])).shape == x.shape
    assert ema_decay(1000, 100, 10_000, None) == pytest.approx(0.5 ** (100 / 10_000))
    assert ema_decay(1000, 100, 10_000, 0.1) == pytest.approx(0.5)  # half-life 100 images early on


def test_training_step_lowers_the_fixed_noise_loss():
    torch.manual_seed(0)
    model = build_unet(TINY)
    images = digits().images[:64]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed():
        with torch.no_grad():
            return edm_loss(model, images, -1.2, 1.2, torch.Generator().manual_seed(1)).item()

    before = fixed()
    for _ in range(30):
        loss = edm_loss(model, images, -1.2, 1.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert fixed() < 0.8 * before


def test_train_task_then_sample_with_the_checkpoint(tmp_path):
    """`task=train` on digits lowers the loss and writes a weights-only checkpoint that `model=unet` samples with."""
    train_dir = tmp_path / "train"
    tiny = [
        "task.channels=[8,16]",
        "task.emb_dim=32",
        "task.groups=4",
        "task.log_every=10",
        "task.warmup_steps=5",
        "task.checkpoint_every=20",
    ]
    done = run_cli(["task=train", "dataset=digits", "task.steps=40", "task.batch_size=32", *tiny], train_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((train_dir / "run" / "unet_digits.json").read_text())
    assert record["steps"] == 40
    assert record["fixed_noise_loss_after"] < 0.9 * record["fixed_noise_loss_before"]
    weights = train_dir / "run" / "unet_digits.pt"
    blob = torch.load(weights, weights_only=True)
    assert blob["config"]["image_shape"] == [1, 8, 8] and (train_dir / "run" / "samples.png").is_file()
    assert (train_dir / "run" / "checkpoints" / "last.ckpt").is_file()

    more = run_cli(["task=train", "dataset=digits", "task.steps=50", "task.batch_size=32", "task.resume=true", *tiny],
                   train_dir)  # fmt: skip
    assert more.returncode == 0, more.stderr[-3000:]
    resumed = json.loads((train_dir / "run" / "unet_digits.json").read_text())
    assert resumed["resumed"] and resumed["steps"] == 50 and resumed["images_seen"] == 50 * 32
    assert resumed["fixed_noise_loss_before"] == record["fixed_noise_loss_before"]
    assert len(resumed["loss_history"]) == 5  # the whole run's losses, every 10 steps

    other = run_cli(["task=train", "dataset=digits", "task.steps=60", "task.resume=true", *tiny[1:],
                     "task.channels=[8,8]"], train_dir)  # fmt: skip
    assert other.returncode == 2 and "trained with other settings (channels)" in other.stderr

    # task.init_from continues the finished model (its EMA weights, its image count) in a new run directory
    # (no hydra.run.dir: the default run name, train_${hydra:runtime.choices.dataset}, resolves when it is checked)
    further = subprocess.run([sys.executable, str(ROOT / "run.py"), "task=train", "dataset=digits", "task.steps=10",
                              "task.batch_size=32", f"task.init_from={weights}", *tiny,
                              f"paths.log_dir={tmp_path / 'further'}", f"paths.cache_dir={tmp_path / 'cache'}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONWARNINGS": "default"})  # fmt: skip
    assert further.returncode == 0, further.stderr[-3000:]
    assert "Callback RunDirCheck" not in further.stderr, further.stderr[-3000:]
    (log,) = (tmp_path / "further").glob("runs/*/*_train_digits/unet_digits.json")
    continued = json.loads(log.read_text())
    assert continued["fixed_noise_loss_before"] == pytest.approx(resumed["fixed_noise_loss_after"], rel=1e-6)
    assert continued["images_seen"] == 50 * 32 + 10 * 32 and continued["steps"] == 10
    assert continued["init_from"]["images_seen"] == 50 * 32 and continued["init_from"]["log"]["steps"] == 50
    mismatch = run_cli(["task=train", "dataset=digits", "task.steps=10", f"task.init_from={weights}", *tiny[1:],
                        "task.channels=[8,8]"], tmp_path / "mismatch")  # fmt: skip
    assert mismatch.returncode == 2 and "task.init_from" in mismatch.stderr and "(channels)" in mismatch.stderr

    sample_dir = tmp_path / "sample"
    done = run_cli(["model=unet", f"model.denoiser.path={weights}", "nfe=4", *QUICK, "num_samples=16"], sample_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((sample_dir / "run" / "metrics.json").read_text())
    assert metrics["model"] == "unet" and metrics["nfe"] == 4 and metrics["fd"] > 0


def _frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    stats = []
    for x in (a, b):
        s = FeatureStats(x[0].numel())
        s.update(x.flatten(1))
        stats.append(s.mean_cov())
    return frechet_distance(*stats[0], *stats[1])


def test_shipped_model_samples_are_far_closer_to_mnist_than_noise():
    model = load_unet("unet_mnist5k.pt")
    assert model.image_shape == (1, 28, 28) and not any(p.requires_grad for p in model.parameters())
    data = mnist5k().images
    sigmas = torch.cat([polynomial(9, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])  # 10 Euler steps
    with torch.no_grad():
        samples = get_solver("euler").fn(model, seeded_noise(torch.arange(200), (1, 28, 28)) * 80.0, sigmas)
    noise = seeded_noise(torch.arange(1000, 1200), (1, 28, 28)).clamp(-1, 1)
    fd_model, fd_noise = _frechet(samples, data[:2000]), _frechet(noise, data[:2000])
    assert fd_model < 0.2 * fd_noise, (fd_model, fd_noise)
    log = json.loads((WEIGHTS_DIR / "unet_mnist5k.json").read_text())
    assert log["fixed_noise_loss_after"] < log["fixed_noise_loss_before"]


def test_corrupt_checkpoints_give_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(checkpoint(build_unet(TINY), TINY), good)
    assert isinstance(load_unet(good), EDMPrecond)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    for path in (truncated, garbage):
        with pytest.raises(FewstepError, match="could not be read as weights.*damaged"):
            load_unet(path)

    code = tmp_path / "code.pt"
    torch.save({"format": "fewstep-edm-unet-v1", "config": TINY, "state_dict": Affine()}, code)
    with pytest.raises(FewstepError, match="pickled code"):
        load_unet(code)

    edited = tmp_path / "edited.pt"
    torch.save(checkpoint(build_unet(TINY), {k: v for k, v in TINY.items() if k != "in_channels"}), edited)
    with pytest.raises(FewstepError, match="its config lacks or mangles 'in_channels'"):
        load_unet(edited)

    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {}}, wrong)
    with pytest.raises(FewstepError, match="not a fewstep U-Net checkpoint"):
        load_unet(wrong)
    with pytest.raises(FewstepError, match="no such file"):
        load_unet(tmp_path / "missing.pt")


def test_edm_pickle_needs_the_opt_in_and_then_loads(tmp_path):
    path = write_edm_pickle(tmp_path / "edm.pkl", TinyEDMNet())
    with pytest.raises(FewstepError, match="runs code.*allow_pickle=true"):
        load_edm_pickle(str(path))
    model = load_edm_pickle(str(path), allow_pickle=True)
    assert model.image_shape == (1, 8, 8) and model.sigma_range == (0.002, 80.0)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(model(x, 2.0), 0.5 * x / 5)

    labelled = load_edm_pickle(str(write_edm_pickle(tmp_path / "cond.pkl", TinyEDMNet(label_dim=10))), True, [3, 7])
    bound = labelled.for_seeds(torch.tensor([0, 1, 2]))  # labels cycle over seeds: 3, 7, 3
    out = bound(torch.zeros(3, 1, 8, 8), 1.0)
    assert out[:, 0, 0, 0].tolist() == [3.0, 7.0, 3.0]


def test_edm_pickle_without_its_code_or_damaged(tmp_path):
    module = types.ModuleType("edm_code_not_installed")

    class Net(TinyEDMNet):
        pass

    Net.__module__, Net.__qualname__ = module.__name__, "Net"
    module.Net = Net
    sys.modules[module.__name__] = module
    try:
        path = write_edm_pickle(tmp_path / "needs_code.pkl", Net())
    finally:
        del sys.modules[module.__name__]
    with pytest.raises(FewstepError, match="edm_code_not_installed.*PYTHONPATH"):
        load_edm_pickle(str(path), allow_pickle=True)
    damaged = tmp_path / "damaged.pkl"
    damaged.write_bytes(path.read_bytes()[:40])
    with pytest.raises(FewstepError, match="damaged"):
        load_edm_pickle(str(damaged), allow_pickle=True)


def test_setup_checks_shape_and_sigma_range(make_cfg, tmp_path):
    path = tmp_path / "digits.pt"
    torch.save(checkpoint(build_unet(TINY), {**TINY, "sigma_range": [0.01, 20.0]}), path)
    with pytest.raises(FewstepError, match="trained for sigma in \\[0.01, 20\\]"):
        build_plan(make_cfg("model=unet", f"model.denoiser.path={path}", "dataset=digits"), evaluate=False)
    plan = build_plan(make_cfg("model=unet", f"model.denoiser.path={path}", "dataset=digits", "model.sigma_min=0.01",
                                 "model.sigma_max=20", "solver=dpm", "nfe=5", "schedule=polynomial"),
                      evaluate=False)  # fmt: skip
    assert plan.shape == (1, 8, 8) and plan.identity["weights"]
    with pytest.raises(FewstepError, match="makes 1x8x8 images but dataset=mnist5k has 1x28x28"):
        build_plan(
            make_cfg("model=unet", f"model.denoiser.path={path}", "model.sigma_min=0.01", "model.sigma_max=20"),
            evaluate=False,
        )


@pytest.mark.slow
def test_train_with_two_ddp_processes(tmp_path):
    done = run_cli(["task=train", "dataset=digits", "trainer=ddp", "trainer.devices=2", "task.steps=20",
                    "task.batch_size=32", "task.channels=[8,16]", "task.groups=4"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "unet_digits.json").read_text())
    assert record["trainer"]["world_size"] == 2 and record["images_seen"] == 20 * 32 * 2
    assert record["fixed_noise_loss_after"] < record["fixed_noise_loss_before"]
