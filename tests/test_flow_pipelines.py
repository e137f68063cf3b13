"""The SD3 and Flux loaders on tiny random pipelines: fewstep's Euler on the loaded denoiser equals the diffusers
pipeline's own sampling loop over the exported schedule, and both sample end to end through run.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from fewstep import FewstepError  # noqa: E402
from fewstep.data import seeded_noise  # noqa: E402
from fewstep.models.denoiser import for_seeds  # noqa: E402
from fewstep.models.flow import flow_time  # noqa: E402
from fewstep.models.flow_pipelines import load_flux, load_sd3  # noqa: E402
from fewstep.schedules import polynomial  # noqa: E402
from fewstep.schedules.schedule import Schedule  # noqa: E402
from fewstep.solvers import euler  # noqa: E402

from .conftest import run_cli  # noqa: E402
from .flow_stub import save_flux_pipeline, save_sd3_pipeline  # noqa: E402
from .test_diffusers_models import _offline_single_thread  # noqa: E402, F401

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context"),
]

PROMPTS = ["a cat", "a dog on a mat", "dog"]
SEEDS = torch.arange(4)


def uneven_schedule() -> Schedule:
    """A 5-step schedule as a search gives it (uneven), ending with the step to 0."""
    sigmas = torch.cat([polynomial(5, 0.01, 999.0, rho=3.0), torch.zeros(1, dtype=torch.float64)])
    return Schedule(sigmas, {"indices": None, "grid": [], "path_cost": 0.0})


def fewstep_euler(denoiser, schedule: Schedule) -> torch.Tensor:
    noise = seeded_noise(SEEDS, denoiser.sample_shape)
    with torch.no_grad():
        return euler(for_seeds(denoiser, SEEDS), noise * float(schedule.sigmas[0]), schedule.sigmas)


def start_latents(denoiser, schedule: Schedule) -> torch.Tensor:
    """fewstep's start x = sigma_max eps as the flow's state x_t = x / (1 + sigma_max)."""
    return seeded_noise(SEEDS, denoiser.sample_shape) * float(flow_time(schedule.sigmas[0]))


@pytest.mark.parametrize("t5", [False, True])
def test_sd3_denoiser_equals_the_diffusers_pipeline_loop(tmp_path, t5):
    from diffusers import StableDiffusion3Pipeline

    parts = save_sd3_pipeline(tmp_path / "sd3", t5=t5)
    denoiser = load_sd3(str(tmp_path / "sd3"), guidance_scale=3.0, prompts=PROMPTS, negative_prompt="mat",
                        max_sequence_length=8)  # fmt: skip
    assert denoiser.sample_shape == (4, 8, 8) and denoiser.image_shape == (3, 16, 16)
    schedule = uneven_schedule()
    pipe = StableDiffusion3Pipeline(**parts)
    with torch.no_grad():
        theirs = pipe(prompt=[PROMPTS[i % 3] for i in SEEDS.tolist()], negative_prompt=["mat"] * len(SEEDS),
                      guidance_scale=3.0, latents=start_latents(denoiser, schedule), height=16, width=16,
                      output_type="latent", max_sequence_length=8,
                      **schedule.to_flow_pipeline(pipe.scheduler)).images  # fmt: skip
    assert pipe.scheduler.config.shift == 3.0  # the pipeline's own shift, undone by to_flow_pipeline
    torch.testing.assert_close(fewstep_euler(denoiser, schedule), theirs, rtol=1e-5, atol=1e-5)
    images = denoiser.decode(theirs)
    assert images.shape == (4, 3, 16, 16) and images.abs().max() <= 1


@pytest.mark.parametrize("guidance", [True, False])
def test_flux_denoiser_equals_the_diffusers_pipeline_loop(tmp_path, guidance):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    parts = save_flux_pipeline(tmp_path / "flux", guidance=guidance)
    denoiser = load_flux(str(tmp_path / "flux"), guidance_scale=2.5, prompts=PROMPTS, height=16, width=16,
                         max_sequence_length=8)  # fmt: skip
    assert denoiser.sample_shape == (4, 8, 8)
    schedule = uneven_schedule()
    pipe = FluxPipeline(**parts)
    with pytest.raises(FewstepError, match="use_dynamic_shifting=True"):  # Flux's scheduler shifts by the image size
        schedule.to_flow_pipeline(pipe.scheduler)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, use_dynamic_shifting=False)
    start = start_latents(denoiser, schedule)
    with torch.no_grad():
        packed = pipe(prompt=[PROMPTS[i % 3] for i in SEEDS.tolist()], guidance_scale=2.5, height=16, width=16,
                      latents=pipe._pack_latents(start, len(SEEDS), 4, 8, 8), output_type="latent",
                      max_sequence_length=8, **schedule.to_flow_pipeline(pipe.scheduler)).images  # fmt: skip
    theirs = pipe._unpack_latents(packed, 16, 16, pipe.vae_scale_factor)
    torch.testing.assert_close(fewstep_euler(denoiser, schedule), theirs, rtol=1e-5, atol=1e-5)


def test_flow_loaders_refuse_incomplete_folders_and_bad_sizes(tmp_path):
    save_flux_pipeline(tmp_path / "flux")
    with pytest.raises(FewstepError, match="must be positive multiples of 4"):
        load_flux(str(tmp_path / "flux"), height=18, width=16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FewstepError, match="has no transformer/ folder"):
        load_sd3(str(tmp_path / "empty"))


def flow_run(tmp_path, experiment: str, folder, *extra: str) -> dict:
    done = run_cli([f"experiment={experiment}", "trainer=cpu", f"model.denoiser.path={folder}",
                    "model.denoiser.prompts=[a cat,a dog]", "model.denoiser.max_sequence_length=8", "nfe=4",
                    "num_samples=4", "batch_size=2", "eval.grid_size=4", "eval.reference.solver=heun",
                    "eval.reference.num_steps=8", *extra], tmp_path, env_extra={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


OSS_SMALL = ("schedule.min_warmup=2", "schedule.num_validation=4", "schedule.validation_chunk=2")


@pytest.mark.parametrize("search", ["gits", "oss"])
@pytest.mark.parametrize("model", ["sd3", "flux"])
def test_stand_ins_run_end_to_end_with_a_search(tmp_path, model, search):
    """experiment=sd3 / experiment=flux on the tiny pipelines, with either search, through run.py."""
    if model == "sd3":
        save_sd3_pipeline(tmp_path / model)
        extra, baseline = (), "flow(shift=3.0)"
    else:
        save_flux_pipeline(tmp_path / model)
        extra, baseline = ("model.denoiser.height=16", "model.denoiser.width=16"), "flow(mu=1.15)"
    sizes = ("schedule.num_warmup=2", *(OSS_SMALL if search == "oss" else ()))
    metrics = flow_run(tmp_path, model, tmp_path / model, f"schedule={search}", *extra, *sizes)
    assert metrics["model"] == model and metrics["schedule"] == search and metrics["nfe"] == 4
    assert metrics["baseline_schedule"] == baseline and np.isfinite(metrics["truncation_error"])
    assert json.loads((tmp_path / "run" / "schedule.json").read_text())["sigmas"][-1] == 0  # the step to t = 0
