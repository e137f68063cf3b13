"""The papers' setups by name compose, and dry runs with stand-in tiny checkpoints go end to end on the CPU."""

import json

import numpy as np
import torch

from .conftest import run_cli
from .edm_stub import TinyEDMNet, write_edm_pickle

OFFLINE = {"HF_HUB_OFFLINE": "1"}


def run_job(args: list[str], tmp_path) -> dict:
    """`python run.py ARGS` offline; it must succeed; its metrics.json."""
    done = run_cli(args, tmp_path, env_extra=OFFLINE)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_paper_experiments_compose(make_cfg):
    cifar = make_cfg("experiment=gits_cifar10")
    assert (cifar.model.name, cifar.solver.name, cifar.schedule.name) == ("edm_pickle", "ipndm", "gits")
    assert cifar.num_samples == 50000 and cifar.eval.features.name == "inception" and cifar.trainer.accelerator == "gpu"
    assert cifar.schedule.grid_size == 61 and cifar.schedule.coeff == 1.15 and cifar.solver.afs is True
    assert not cifar.model.denoiser.allow_pickle  # the opt-in stays the user's
    sd = make_cfg("experiment=gits_sd")
    assert (sd.model.sigma_min, sd.model.sigma_max) == (0.0292, 14.61)
    assert sd.model.denoiser.guidance_scale == 7.5 and sd.solver.max_order == 2
    assert (sd.schedule.base, sd.schedule.teacher, sd.schedule.coeff) == ("discrete", "dpmpp", 1.2)


def test_gits_cifar10_dry_run(tmp_path):
    """EDM pickle (stand-in) + GITS + AFS + Inception FID against 'published' statistics, 4 samples."""
    weights = write_edm_pickle(tmp_path / "edm.pkl", TinyEDMNet(resolution=32, channels=3))
    stats = tmp_path / "cifar10-32x32.npz"
    np.savez(stats, mu=np.zeros(2048), sigma=np.eye(2048) * 1e-2)
    metrics = run_job(
        ["experiment=gits_cifar10", "trainer=cpu", f"model.denoiser.path={weights}", "model.denoiser.allow_pickle=true",
         f"eval.reference_stats={stats}", "num_samples=4", "batch_size=4", "schedule.num_warmup=4",
         "schedule.afs_batch=4", "eval.grid_size=4"],
        tmp_path,
    )  # fmt: skip
    assert metrics["nfe"] == 5 and metrics["afs"] and metrics["features"] == "inception"
    assert np.isfinite(metrics["fid"]) and "fd" not in metrics and "truncation_error" not in metrics
    schedule = json.loads((tmp_path / "run" / "schedule.json").read_text())
    assert len(schedule["sigmas"]) == 7 and "gits" in schedule  # 6 steps, the first answered by AFS


def test_gits_cifar10_refuses_the_pickle_without_opt_in(tmp_path):
    weights = write_edm_pickle(tmp_path / "edm.pkl", TinyEDMNet(resolution=32, channels=3))
    stats = tmp_path / "stats.npz"  # present, so that the pickle is what is refused
    np.savez(stats, mu=np.zeros(4), sigma=np.eye(4))
    done = run_cli(["experiment=gits_cifar10", "trainer=cpu", f"model.denoiser.path={weights}",
                    f"eval.reference_stats={stats}"], tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "allow_pickle=true" in done.stderr and "Traceback" not in done.stderr


def test_gits_sd_dry_run(tmp_path):
    """A tiny latent pipeline (UNet2DConditionModel + VAE + CLIP) through the SD experiment: GITS on the discrete
    base grid, DPM-Solver++(2M), classifier-free guidance with two prompts, decoded images."""
    from .test_diffusers_models import save_latent_pipeline

    save_latent_pipeline(tmp_path / "sd")
    metrics = run_job(
        ["experiment=gits_sd", "trainer=cpu", f"model.denoiser.path={tmp_path / 'sd'}", "model.denoiser.dtype=float32",
         'model.denoiser.prompts=["a cat on a mat","a dog"]', "nfe=4",
         "num_samples=4", "batch_size=2", "schedule.num_warmup=2", "eval.grid_size=4", "eval.reference.solver=heun",
         "eval.reference.num_steps=8"],
        tmp_path,
    )  # fmt: skip
    assert metrics["nfe"] == 4 and metrics["model"] == "stable_diffusion" and "fid" not in metrics
    assert np.isfinite(metrics["truncation_error"])  # measured on the decoded images
    assert (tmp_path / "run" / "samples.png").is_file()
    (shard, *_) = (tmp_path / "run" / "samples").glob("*/*.pt")
    stored = torch.load(shard, weights_only=True)["samples"]
    assert stored.dtype == torch.uint8 and stored.shape[1:] == (3, 16, 16)  # decoded images, 1 byte per value


def test_diffusers_ddpm_model_runs_end_to_end(tmp_path):
    """model=ddpm_cifar10 with a stand-in tiny UNet2DModel folder (flat layout): GITS searched on it, sampled with
    the model's own sigma range, truncation error measured; no data here, so no FID."""
    from .test_diffusers_models import save_unet, tiny_unet

    save_unet(tmp_path / "ddpm", tiny_unet())
    metrics = run_job(
        ["model=ddpm_cifar10", "dataset=none", f"model.denoiser.path={tmp_path / 'ddpm'}", "schedule=gits",
         "schedule.num_warmup=4", "nfe=4", "num_samples=4", "batch_size=4", "eval.grid_size=4",
         "eval.reference.num_steps=8"],
        tmp_path,
    )  # fmt: skip
    assert metrics["sigmas"][0] == 157.407 and metrics["nfe"] == 4 and np.isfinite(metrics["truncation_error"])
    too_wide = run_cli(["model=ddpm_cifar10", "dataset=none", f"model.denoiser.path={tmp_path / 'ddpm'}",
                        "model.sigma_max=200"], tmp_path, env_extra=OFFLINE)  # fmt: skip
    assert too_wide.returncode == 2 and "model.sigma_max=200; set them inside that range" in too_wide.stderr
    assert "Traceback" not in too_wide.stderr and "accelerate" not in too_wide.stderr
    wrong_data = run_cli(["model=ddpm_cifar10", "dataset=cifar10", f"model.denoiser.path={tmp_path / 'ddpm'}"],
                         tmp_path, env_extra=OFFLINE)  # fmt: skip
    assert wrong_data.returncode == 2 and "makes 1x8x8 images but dataset=cifar10 has 3x32x32" in wrong_data.stderr
