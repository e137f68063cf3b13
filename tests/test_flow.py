"""Rectified-flow models through the flow wrapper: the convention (Euler in sigma = the flow's Euler in t), the three
predictions, the KDE's flow, the flow schedules against diffusers, and export into diffusers' flow schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fewstep import FewstepError
from fewstep.data import digits, seeded_noise
from fewstep.models import KDEDenoiser
from fewstep.models.flow import DenoiserFlow, flow_denoiser, flow_sigma, flow_time, kde_flow
from fewstep.schedules import flow, flow_shift_factor, flux_mu, make_schedule, polynomial
from fewstep.solvers import SOLVERS, euler

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context"),
]


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture(scope="module")
def velocity(data):
    """The optimal velocity of the digits (their KDE's), float64: a flow model with an exact answer."""
    return DenoiserFlow(KDEDenoiser(data.images, dtype="float64"))


def flow_euler(velocity, x_t: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """The flow's own Euler loop in t (diffusers' FlowMatchEulerDiscreteScheduler): x_t <- x_t + (t' - t) v."""
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x_t = x_t + (t_next - t) * velocity(x_t, t.expand(len(x_t)))
    return x_t


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_in_sigma_is_the_flows_euler_in_t(data, velocity, shift):
    sigmas = flow(7, 0.05, 1e4, shift=shift)  # ends above the KDE's snapping, where round-off would hide nothing
    noise = seeded_noise(torch.arange(8), data.shape).double()
    ours = euler(flow_denoiser(velocity), noise * sigmas[0], sigmas)
    times = flow_time(sigmas)
    theirs = flow_euler(velocity, noise * times[0], times) / (1 - times[-1])  # x = x_t / (1 - t)
    assert (ours - theirs).abs().max() < 1e-6 * theirs.abs().max()


def test_velocity_x0_and_eps_predictions_give_one_denoiser(data, velocity):
    x0_model = lambda x_t, t: x_t - t.reshape(-1, 1, 1, 1) * velocity(x_t, t)  # noqa: E731
    eps_model = lambda x_t, t: x_t + (1 - t.reshape(-1, 1, 1, 1)) * velocity(x_t, t)  # noqa: E731
    x = seeded_noise(torch.arange(6), data.shape).double() * 3.0 + data.images[:6].double()
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0, 20.0, 500.0], dtype=torch.float64)
    reference = flow_denoiser(velocity)(x, sigma)
    for prediction, model in (("x0", x0_model), ("eps", eps_model)):
        denoised = flow_denoiser(model, prediction=prediction)(x, sigma)
        torch.testing.assert_close(denoised, reference, rtol=1e-9, atol=1e-9)
    # and the wrapper is the denoiser whose flow it read: D(x, sigma) of the KDE itself
    torch.testing.assert_close(reference, velocity.denoiser(x, sigma), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("solver", ["heun", "ipndm"])
def test_the_kde_flows_samples_equal_the_kde_denoisers(data, solver):
    noise = seeded_noise(torch.arange(16), data.shape)
    sigmas = polynomial(6, 0.002, 80.0)
    flow_samples = SOLVERS[solver].fn(kde_flow(data.images), noise * 80.0, sigmas)
    kde_samples = SOLVERS[solver].fn(KDEDenoiser(data.images), noise * 80.0, sigmas)
    torch.testing.assert_close(flow_samples, kde_samples, rtol=1e-4, atol=1e-4)


def test_the_wrapper_keeps_the_models_traits_and_refuses_bad_input(velocity):
    wrapped = flow_denoiser(velocity)
    assert wrapped.rows_independent and wrapped.image_shape == velocity.image_shape
    assert wrapped.fingerprint() is None  # a closed form: identified by its data
    assert not callable(getattr(wrapped, "for_seeds", None))
    with pytest.raises(FewstepError, match="prediction must be one of"):
        flow_denoiser(velocity, prediction="v")
    with pytest.raises(FewstepError, match="returned shape"):
        flow_denoiser(lambda x_t, t: x_t[:, 0])(torch.zeros(2, 1, 8, 8), 1.0)


def test_diffusers_transformer_time_is_scaled(data, velocity):
    seen = []

    def model(x_t, t):
        seen.append(t.clone())
        return velocity(x_t, t / 1000)

    x = seeded_noise(torch.arange(2), data.shape).double()
    flow_denoiser(model, time_scale=1000)(x, 3.0)
    torch.testing.assert_close(seen[0], torch.full((2,), 750.0, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------------
# Schedules


def test_a_time_shift_multiplies_sigma():
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    for shift in (0.5, 3.0):
        shifted = shift * t / (1 + (shift - 1) * t)
        torch.testing.assert_close(flow_sigma(shifted), shift * flow_sigma(t), rtol=1e-12, atol=0)
    mu = 1.15
    shifted = math.exp(mu) / (math.exp(mu) + (1 / t - 1))
    torch.testing.assert_close(flow_sigma(shifted), math.exp(mu) * flow_sigma(t), rtol=1e-12, atol=0)
    assert flow_shift_factor(mu=mu) == math.exp(mu) and flow_shift_factor(3.0) == 3.0


@pytest.mark.parametrize("num_steps", [4, 9, 28])
@pytest.mark.parametrize("shift, mu", [(1.0, None), (3.0, None), (1.0, 0.5), (1.0, 1.15)])
def test_flow_schedule_equals_diffusers_flow_match_sigmas(num_steps, shift, mu):
    from diffusers import FlowMatchEulerDiscreteScheduler

    u = np.linspace(0.995, 0.02, num_steps + 1)  # the un-shifted times, as the Flux pipeline passes them
    if mu is None:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(sigmas=u)
        exact = shift * u / (1 + (shift - 1) * u)  # diffusers' formula, in float64
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
        scheduler.set_timesteps(sigmas=u, mu=mu)
        exact = scheduler.time_shift(mu, 1.0, u)  # diffusers' own function, in float64
    ours = flow_time(make_schedule("flow", num_steps, flow_sigma(exact[-1]), flow_sigma(exact[0]), shift=shift, mu=mu))
    np.testing.assert_allclose(ours.numpy(), exact, rtol=1e-12, atol=0)
    stored = scheduler.sigmas[:-1].double().numpy()  # diffusers keeps float32 values
    np.testing.assert_allclose(ours.numpy(), stored, rtol=3e-7, atol=0)


def test_sd3s_default_schedule_is_the_flow_schedule_from_t_near_one():
    """diffusers' SD3 default (shift 3, set_timesteps(n)) starts at t = 1, where sigma is infinite: fewstep's flow
    schedule over [sigma of its last time, 1e9] is the same list, its first time 1 - 1e-9."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(8)
    theirs = scheduler.sigmas[:-1].double()
    ours = flow_time(flow(7, float(flow_sigma(theirs[-1])), 1e9, shift=3.0))
    torch.testing.assert_close(ours, theirs, rtol=3e-7, atol=2e-9)


def test_flux_mu_is_diffusers_calculate_shift():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    for seq_len in (256, 1024, 4096, 6000):
        assert math.isclose(flux_mu(seq_len), calculate_shift(seq_len), rel_tol=1e-12)


def test_flow_schedule_refuses_two_shifts_and_bad_values():
    with pytest.raises(FewstepError, match="set one"):
        flow(5, 0.002, 80.0, shift=3.0, mu=1.0)
    with pytest.raises(FewstepError, match="schedule.shift"):
        flow(5, 0.002, 80.0, shift=0.0)
    with pytest.raises(FewstepError, match="schedule.mu"):
        flow(5, 0.002, 80.0, mu="high")


# ---------------------------------------------------------------------------------------------------------------
# Export


@pytest.fixture(scope="module", params=[80.0, 999.0, 1e4])
def searched(data, request):
    """A GITS schedule searched on the digits' flow for Euler at NFE 6 from sigma_max 80, 999 (the flow configs')
    or 1e4, ending with the step to 0."""
    from fewstep import search_schedule

    return search_schedule(kde_flow(data.images), shape=data.shape, nfe=6, solver="euler", method="gits",
                           sigma_min=0.002, sigma_max=request.param, afs=False, denoise_to_zero=True,
                           num_warmup=16)  # fmt: skip


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_diffusers_flow_match_euler_loop_on_the_exported_schedule_equals_fewsteps_euler(data, searched, shift):
    from diffusers import FlowMatchEulerDiscreteScheduler

    assert searched.sigmas[-1] == 0 and len(searched.sigmas) == 7
    model = DenoiserFlow(KDEDenoiser(data.images))  # float32, as a pipeline runs
    scheduler = searched.to_diffusers(FlowMatchEulerDiscreteScheduler(shift=shift))
    noise = seeded_noise(torch.arange(8), data.shape)
    t_max = float(flow_time(searched.sigmas[0]))
    x_t, theirs = noise * t_max, []  # fewstep's start x = sigma_max eps, as a flow state (the same start for both)
    for t in scheduler.timesteps:  # the pipeline loop
        x_t = scheduler.step(model(x_t, (t / 1000).expand(len(x_t))), t, x_t).prev_sample
        theirs.append(x_t)
    ours = []  # every state, as the flow's x_t = x / (1 + sigma): the last one alone snaps onto data points
    euler(flow_denoiser(model), noise * float(searched.sigmas[0]), searched.sigmas,
          callback=lambda step: ours.append(step["x_next"] / (1 + step["sigma_next"])))  # fmt: skip
    assert len(theirs) == len(ours) == 6
    for a, b in zip(theirs, ours, strict=True):  # float32 round-off
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert searched.to_flow_pipeline(scheduler)["sigmas"] == pytest.approx(
        [float(t / (shift - (shift - 1) * t)) for t in flow_time(searched.sigmas[:-1])], rel=1e-12)


def test_flow_schedulers_that_cannot_run_the_schedule_are_refused(searched):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from fewstep.schedules.schedule import Schedule

    with pytest.raises(FewstepError, match="use_dynamic_shifting=True"):
        searched.to_diffusers(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True))
    no_zero = Schedule(searched.sigmas[:-1], searched.record)
    with pytest.raises(FewstepError, match="denoise_to_zero=true"):
        no_zero.to_diffusers(FlowMatchEulerDiscreteScheduler())
    with pytest.raises(FewstepError, match="rewrote the flow times"):
        searched.to_diffusers(FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True))


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
def test_flow_sigma_schedulers_get_the_schedules_times(searched, name):
    import diffusers

    scheduler = getattr(diffusers, name)(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    searched.to_diffusers(scheduler)
    times = flow_time(searched.sigmas[:-1])
    torch.testing.assert_close(scheduler.sigmas.double(), torch.cat([times, torch.zeros(1, dtype=torch.float64)]),
                               rtol=1e-6, atol=0)  # fmt: skip
    assert scheduler.timesteps.tolist() == [round(float(t) * 1000) for t in times]


# ---------------------------------------------------------------------------------------------------------------
# A whole run


@pytest.mark.slow  # the README's `model=flow_mnist5k schedule=gits` run covers a flow model through run.py in make test
def test_a_flow_model_runs_end_to_end_with_a_searched_schedule(tmp_path):
    """`python run.py model=flow_kde experiment=quick schedule=gits nfe=5`: the flow wrapper through the CLI, the
    search, sampling and scoring; the searched schedule beats the baseline on the truncation error."""
    import json

    from .conftest import run_cli

    result = run_cli(["model=flow_kde", "experiment=quick", "schedule=gits", "nfe=5"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "flow_kde" and metrics["sigmas"][0] == 999.0
    assert math.isfinite(metrics["fid"]) and metrics["truncation_error"] < metrics["baseline_truncation_error"]


# ---------------------------------------------------------------------------------------------------------------
# Training a flow (task.objective=flow)


def test_flow_loss_is_the_velocity_error_at_logit_normal_times(data):
    from fewstep.models.training import flow_loss

    images = data.images[:16]
    seen = {}

    def model(x_t, t):
        seen["x_t"], seen["t"] = x_t, t
        return torch.zeros_like(x_t)

    loss = flow_loss(model, images, 0.3, 0.7, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)  # the same draws, made here
    t = torch.sigmoid(torch.randn(16, generator=generator) * 0.7 + 0.3)
    noise = torch.randn(images.shape, generator=generator)
    torch.testing.assert_close(seen["t"], t)
    torch.testing.assert_close(seen["x_t"], (1 - t.reshape(-1, 1, 1, 1)) * images + t.reshape(-1, 1, 1, 1) * noise)
    torch.testing.assert_close(loss, ((noise - images) ** 2).mean())


@pytest.mark.slow  # 15 s; the flow loss and the flow checkpoint's loading are tested in make test
def test_train_a_flow_then_sample_with_it(tmp_path):
    """`task=train task.objective=flow` lowers the flow loss and writes flow_digits.pt, which `model=unet` loads
    as a flow denoiser (D = x_t - t v) and samples with."""
    import json

    from fewstep.models.flow import FlowDenoiser
    from fewstep.models.unet import load_unet

    from .conftest import run_cli

    tiny = ["task.channels=[8,16]", "task.emb_dim=32", "task.groups=4", "task.log_every=10", "task.warmup_steps=5"]
    done = run_cli(["task=train", "dataset=digits", "task.objective=flow", "task.sigma_max=999", "task.steps=40",
                    "task.batch_size=32", *tiny], tmp_path / "train")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "train" / "run" / "flow_digits.json").read_text())
    assert record["network"]["objective"] == "flow"
    assert record["fixed_noise_loss_after"] < record["fixed_noise_loss_before"]
    weights = tmp_path / "train" / "run" / "flow_digits.pt"
    model = load_unet(str(weights))
    assert isinstance(model, FlowDenoiser) and model.sigma_range == (0.002, 999.0)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0.2, 0.5, 0.9])
    sigma = t / (1 - t)
    velocity = model.model(x * (1 - t).reshape(-1, 1, 1, 1), t)
    torch.testing.assert_close(model(x, sigma), x * (1 - t).reshape(-1, 1, 1, 1) - t.reshape(-1, 1, 1, 1) * velocity)
    sampled = run_cli(["model=unet", f"model.denoiser.path={weights}", "dataset=digits", "model.sigma_max=999",
                       "schedule=flow", "solver=euler", "nfe=4", "num_samples=8", "eval.reference.num_steps=8"],
                      tmp_path / "sample")  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert math.isfinite(json.loads((tmp_path / "sample" / "run" / "metrics.json").read_text())["truncation_error"])


@pytest.mark.parametrize("name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler"])
def test_flow_sigma_multistep_schedulers_sample_what_fewsteps_solvers_do(data, velocity, searched, name):
    """diffusers' DPM-Solver++(2M) and UniPC in flow mode (use_flow_sigmas, flow_prediction) on the exported times,
    against fewstep's dpmpp / unipc on the same sigmas: every state, as the flow's x_t (float64 model; diffusers rounds
    its DPM state to float32 in each step)."""
    import diffusers

    from fewstep.solvers import dpmpp, unipc

    scheduler = getattr(diffusers, name)(use_flow_sigmas=True, prediction_type="flow_prediction", solver_order=2,
                                         lower_order_final=True)  # fmt: skip
    searched.to_diffusers(scheduler)
    scheduler.sigmas = scheduler.sigmas.to(torch.float64)
    scheduler.set_begin_index(0)
    times = scheduler.sigmas
    noise = seeded_noise(torch.arange(4), data.shape).double()
    x_t, theirs = noise * times[0], []
    for k, step in enumerate(scheduler.timesteps):
        x_t = scheduler.step(velocity(x_t, times[k].expand(len(x_t))), step, x_t).prev_sample.double()
        if k > 0 and name.startswith("UniPC"):
            theirs[-1] = scheduler.last_sample  # UniPC corrects the previous state once the model ran there
        theirs.append(x_t)
    sigmas = flow_sigma(times)
    solver, options = (dpmpp, {"max_order": 2}) if name.startswith("DPM") else (unipc, {"max_order": 2})
    ours = []
    solver(flow_denoiser(velocity), noise * sigmas[0], sigmas, **options,
           callback=lambda step: ours.append(step["x_next"] / (1 + step["sigma_next"])))  # fmt: skip
    assert len(ours) == len(theirs) == 6
    for a, b in zip(ours, theirs, strict=True):
        assert (a - b).abs().max() < 1e-5 * b.abs().max()
