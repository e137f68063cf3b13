"""Searched schedules into diffusers and k-diffusion: a diffusers pipeline loop on the exported schedule samples
what fewstep's own solver samples on the same model, noise and schedule."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)

from fewstep import FewstepError  # noqa: E402
from fewstep.data import seeded_noise  # noqa: E402
from fewstep.models.diffusers_models import load_unet2d  # noqa: E402
from fewstep.schedules import polynomial  # noqa: E402
from fewstep.schedules.export import export_record, nearest_timesteps, training_sigmas  # noqa: E402
from fewstep.schedules.schedule import Schedule  # noqa: E402
from fewstep.solvers import euler  # noqa: E402

from .test_diffusers_models import SD1_SCHEDULER, _offline_single_thread, save_unet, tiny_unet  # noqa: E402, F401

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context"),
]

DDPM = {"num_train_timesteps": 1000, "beta_schedule": "linear"}


def searched_like(sigma_min: float, sigma_max: float) -> Schedule:
    """An uneven 5-step schedule (as a search gives) ending in 0."""
    sigmas = torch.cat([polynomial(5, sigma_min, sigma_max, rho=3.0), torch.zeros(1, dtype=torch.float64)])
    return Schedule(sigmas, {"indices": list(range(6)), "grid": sigmas[:-1].tolist(), "path_cost": 0.0})


def test_diffusers_euler_loop_on_the_exported_schedule_equals_fewsteps_euler(tmp_path):
    unet = tiny_unet()
    denoiser = load_unet2d(str(save_unet(tmp_path / "model", unet)))
    low, high = denoiser.sigma_range
    schedule = searched_like(low * 2, 80.0)
    scheduler = schedule.to_diffusers(EulerDiscreteScheduler(**DDPM))
    seeds = torch.arange(4)
    noise = seeded_noise(seeds, (1, 8, 8))
    x = noise * float(schedule.sigmas[0])
    with torch.no_grad():
        for t in scheduler.timesteps:  # the diffusers pipeline loop
            eps = unet(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(eps, t, x).prev_sample
        ours = euler(denoiser, noise * float(schedule.sigmas[0]), schedule.sigmas)
    assert len(scheduler.timesteps) == 6
    assert torch.allclose(x, ours, rtol=1e-4, atol=1e-4), (x - ours).abs().max()


def test_schedulers_that_cannot_run_the_schedule_are_refused():
    schedule = searched_like(0.02, 80.0)
    with pytest.raises(FewstepError, match=r"trained on \[0.029\d*, 14.6\d*\]: it would clamp"):
        schedule.to_diffusers(EulerDiscreteScheduler.from_config(SD1_SCHEDULER))  # SD's sigmas end at 14.6
    with pytest.raises(FewstepError, match="DDIMScheduler steps by equal strides"):
        schedule.to_diffusers(DDIMScheduler(**DDPM))


def test_timestep_schedulers_get_the_nearest_integer_timesteps():
    schedule = searched_like(0.02, 80.0)
    scheduler = schedule.to_diffusers(DPMSolverMultistepScheduler(**DDPM))
    table = training_sigmas(DDPMScheduler(**DDPM).alphas_cumprod)
    timesteps, error = nearest_timesteps(schedule.sigmas.tolist(), table)
    assert scheduler.timesteps.tolist() == timesteps and timesteps == sorted(timesteps, reverse=True)
    near = table[timesteps]
    positive = schedule.sigmas[:-1]
    assert abs(error - float(((near - positive) / positive).abs().max())) < 1e-12  # the rounding, reported
    for t, sigma in zip(timesteps, positive.tolist(), strict=True):  # each is the nearest in log sigma
        assert abs(table[t].log() - torch.tensor(sigma).log()) <= (table.log() - torch.tensor(sigma).log()).abs().min()


def test_k_diffusion_export_ends_in_zero_at_full_precision():
    schedule = Schedule(torch.tensor([80.0, 1.2345678901234567, 0.002], dtype=torch.float64), {})
    exported = schedule.to_k_diffusion()
    assert exported.tolist() == [80.0, 1.2345678901234567, 0.002, 0.0]
    record = export_record([80.0, 1.2345678901234567, 0.0])
    assert record["k_diffusion_sigmas"] == [80.0, 1.2345678901234567, 0.0]  # already ends in 0: not doubled
