"""Diffusers checkpoints as fewstep denoisers: tiny random models saved with save_pretrained, loaded back offline.

Every check compares the wrapper with a hand computation from the raw diffusers modules: the VP input
x_vp = x / sqrt(1 + sigma^2), the timestep of sigma, and the eps / v / x0 -> x0 conversion. The DDIM check runs
diffusers' DDIMScheduler loop and fewstep's Euler solver from the same state (x_vp = x_ve / sqrt(1 + sigma^2)).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from fewstep.errors import FewstepError  # noqa: E402
from fewstep.models.denoiser import decode, for_seeds  # noqa: E402
from fewstep.models.diffusers_models import (  # noqa: E402
    LatentDenoiser,
    alphas_cumprod_from_config,
    load_latent_diffusion,
    load_unet2d,
)
from fewstep.models.vp import VPDiscreteDenoiser, discrete_sigmas  # noqa: E402
from fewstep.solvers import get_solver  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context"),
]

SD1_SCHEDULER = {  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


@pytest.fixture(autouse=True)
def _offline_single_thread(monkeypatch):
    """No network; one intra-op thread: on a busy 2-core machine, tiny convolutions with 2 threads wait on each other
    (measured 32 ms vs 0.09 ms per call)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_unet(num_class_embeds=None) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    ).eval()


def save_unet(folder, unet, layout="flat", prediction_type="epsilon", safe=True):
    """The flat google/ddpm-cifar10-32 layout, or a pipeline folder (model_index.json, unet/, scheduler/)."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type)
    if layout == "flat":
        unet.save_pretrained(folder, safe_serialization=safe)
        scheduler.save_pretrained(folder)
    else:
        unet.save_pretrained(folder / "unet", safe_serialization=safe)
        scheduler.save_pretrained(folder / "scheduler")
        index = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "x"]}
        (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def vp_reference(unet, x, sigma, t, prediction_type, **cond):
    """D(x, sigma) by hand: the raw UNet at x / sqrt(1 + sigma^2) and timestep t, converted to x0."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1, 1)
    alpha, s = 1 / (1 + sigma**2).sqrt(), sigma / (1 + sigma**2).sqrt()
    x_in = (x.double() * alpha).to(x.dtype)
    with torch.no_grad():
        out = unet(x_in, torch.as_tensor(t, dtype=torch.float32).reshape(-1), **cond).sample.double()
    if prediction_type == "epsilon":
        return (x.double() - sigma * out).to(x.dtype)
    if prediction_type == "v_prediction":
        return (alpha * x_in.double() - s * out).to(x.dtype)
    return out.to(x.dtype)


def table_sigmas() -> torch.Tensor:
    return discrete_sigmas(DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod)


# ---------------------------------------------------------------------------------------------------------------
# UNet2DModel (pixel space)


@pytest.mark.parametrize("layout", ["flat", "pipeline"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_unet2d_matches_hand_conversion(tmp_path, layout, prediction_type):
    unet = tiny_unet()
    folder = save_unet(tmp_path, unet, layout, prediction_type)
    sigmas = table_sigmas()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    steps = [0, 137, 999]

    nearest = load_unet2d(str(folder), timestep="nearest")  # prediction_type from the scheduler config
    assert nearest.prediction_type == prediction_type
    assert nearest.sigma_range == pytest.approx((float(sigmas[0]), float(sigmas[-1])))
    for k in steps:  # exact discrete sigmas: t = k, one sigma for the batch
        expected = vp_reference(unet, x, sigmas[k], [k] * 3, prediction_type)
        # float32: x - sigma eps cancels at large sigma, so the tolerance grows with sigma
        atol = 1e-6 * (1 + float(sigmas[k]))
        torch.testing.assert_close(nearest(x, float(sigmas[k])), expected, atol=atol, rtol=1e-5)

    interp = load_unet2d(str(folder), timestep="interpolate")
    # per-sample sigmas 30% of the way between table entries in log sigma -> t = k + 0.3
    k = torch.tensor([3, 250, 700])
    sigma = (0.7 * sigmas[k].log() + 0.3 * sigmas[k + 1].log()).exp()
    expected = vp_reference(unet, x, sigma, k + 0.3, prediction_type)
    torch.testing.assert_close(interp(x, sigma), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(interp(x, sigmas[k]), vp_reference(unet, x, sigmas[k], k, prediction_type))
    # nearest rounds in log sigma: 30% of the way -> k, 70% -> k + 1
    sigma_70 = (0.3 * sigmas[k].log() + 0.7 * sigmas[k + 1].log()).exp()
    torch.testing.assert_close(nearest(x, sigma), vp_reference(unet, x, sigma, k, prediction_type))
    torch.testing.assert_close(nearest(x, sigma_70), vp_reference(unet, x, sigma_70, k + 1, prediction_type))


def test_unet2d_bin_weights_load_with_weights_only(tmp_path, monkeypatch):
    """diffusers 0.42 reads .bin checkpoints with torch.load(weights_only=True): recorded here."""
    unet = tiny_unet()
    save_unet(tmp_path, unet, safe=False)
    assert (tmp_path / "diffusion_pytorch_model.bin").exists()
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = load_unet2d(str(tmp_path))
    assert calls and all(flag is True for flag in calls)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(model(x, 1.0), vp_reference(unet, x, 1.0, model_t(1.0), "epsilon"))


def model_t(sigma: float) -> float:
    """The interpolated timestep of sigma on the linear DDPM table."""
    log_sigmas = table_sigmas().log()
    high = int(torch.searchsorted(log_sigmas, torch.tensor(math.log(sigma), dtype=torch.float64)))
    return high - 1 + float((math.log(sigma) - log_sigmas[high - 1]) / (log_sigmas[high] - log_sigmas[high - 1]))


def test_class_conditional_unet2d_labels_from_seeds(tmp_path):
    unet = tiny_unet(num_class_embeds=3)
    save_unet(tmp_path, unet)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = [model_t(2.0)] * 4

    cycle = load_unet2d(str(tmp_path), class_labels="cycle")
    seeds = torch.tensor([5, 1, 3, 7])  # labels seed % 3 = 2, 1, 0, 1
    got = for_seeds(cycle, seeds)(x, 2.0)
    torch.testing.assert_close(got, vp_reference(unet, x, 2.0, t, "epsilon", class_labels=torch.tensor([2, 1, 0, 1])))
    # the same seed in another batch gets the same label, hence the same output
    other = for_seeds(cycle, torch.tensor([9, 5]))(x[[3, 0]], 2.0)
    torch.testing.assert_close(other[1], got[0])

    listed = load_unet2d(str(tmp_path), class_labels=[2, 0])
    got = for_seeds(listed, torch.arange(4))(x, 2.0)
    torch.testing.assert_close(got, vp_reference(unet, x, 2.0, t, "epsilon", class_labels=torch.tensor([2, 0, 2, 0])))

    with pytest.raises(FewstepError, match="class_labels"):
        load_unet2d(str(tmp_path))  # class-conditional needs labels
    with pytest.raises(FewstepError, match=r"\[0, 3\)"):
        load_unet2d(str(tmp_path), class_labels=[0, 3])
    with pytest.raises(FewstepError, match="bound by for_seeds to 2"):
        for_seeds(cycle, torch.tensor([0, 1]))(x, 2.0)


def ddim_and_euler(folder, unet, dtype):
    """Trajectories (VE scaling, one state per step) of diffusers' DDIM loop and fewstep's Euler, same start."""
    model = load_unet2d(str(folder), dtype=str(dtype).removeprefix("torch."))
    unet = unet.to(dtype)
    ddim = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
    ddim.set_timesteps(10)
    if dtype == torch.float64:  # DDIM's step arithmetic in float64 too (the same float32-built abar values)
        ddim.alphas_cumprod = ddim.alphas_cumprod.double()
    timesteps = ddim.timesteps.tolist()  # 900, 800, ..., 0; the last step goes to abar = 1 (set_alpha_to_one)
    abar = ddim.alphas_cumprod.to(torch.float64)[timesteps]
    sigmas = torch.cat([((1 - abar) / abar).sqrt(), torch.zeros(1, dtype=torch.float64)])

    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x_vp = (noise * sigmas[0] / (1 + sigmas[0] ** 2).sqrt()).to(dtype)
    steps, ddim_states = [], []
    with torch.no_grad():
        get_solver("euler").fn(model, (noise * sigmas[0]).to(dtype), sigmas, callback=steps.append)
        for i, t in enumerate(timesteps):
            x_vp = ddim.step(unet(x_vp, t).sample, t, x_vp).prev_sample
            ddim_states.append(x_vp.double() * (1 + sigmas[i + 1] ** 2).sqrt())  # back to VE: x_vp sqrt(1 + s^2)
    unet.float()
    return torch.stack(ddim_states), torch.stack([step["x_next"].double() for step in steps])


def test_ddim_scheduler_loop_matches_fewstep_euler(tmp_path):
    """diffusers DDIM (eta=0, set_alpha_to_one) == fewstep Euler on the sigmas of the same 10 timesteps, then 0,
    compared after every step. float64: equal to rounding. float32: both are float64's trajectory up to float32
    rounding (DDIM's x0 = (x_vp - sqrt(1 - abar) eps) / sqrt(abar) amplifies it at large sigma)."""
    unet = tiny_unet()
    save_unet(tmp_path, unet)
    ddim64, euler64 = ddim_and_euler(tmp_path, unet, torch.float64)
    ddim32, euler32 = ddim_and_euler(tmp_path, unet, torch.float32)
    scale = float(euler64.abs().max())
    diffs = {
        "ddim64 vs euler64": float((ddim64 - euler64).abs().max()),
        "ddim32 vs euler32": float((ddim32 - euler32).abs().max()),
        "euler32 vs float64": float((euler32 - euler64).abs().max()),
        "ddim32 vs float64": float((ddim32 - ddim64).abs().max()),
        "final ddim32 vs euler32": float((ddim32[-1] - euler32[-1]).abs().max()),
    }
    print(f"DDIM vs euler, 10 steps, max |x| = {scale:.3g}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert diffs["ddim64 vs euler64"] < 1e-12 * scale
    assert diffs["ddim32 vs euler32"] < 1e-5 * scale
    assert diffs["euler32 vs float64"] < 1e-5 * scale


def test_sd1_scheduler_sigma_range():
    model = VPDiscreteDenoiser(lambda x, t: x, alphas_cumprod_from_config(SD1_SCHEDULER))
    lo, hi = model.sigma_range
    assert lo == pytest.approx(0.0292, abs=1e-4) and hi == pytest.approx(14.61, abs=1e-2)
    with pytest.raises(FewstepError, match="model.sigma_min / model.sigma_max"):
        model(torch.zeros(1, 1, 2, 2), 80.0)
    with pytest.raises(FewstepError, match=r"\[0\.002, 1\] is outside .* \[0\.0291675, 14\.6146\]"):
        model(torch.zeros(2, 1, 2, 2), torch.tensor([0.002, 1.0]))
    model(torch.zeros(1, 1, 2, 2), 0.0292)  # the rounded printed range is accepted


def test_bad_prediction_type():
    with pytest.raises(FewstepError, match="epsilon.*v_prediction.*sample"):
        VPDiscreteDenoiser(lambda x, t: x, torch.linspace(0.99, 0.01, 10), prediction_type="flow")


# ---------------------------------------------------------------------------------------------------------------
# Loading errors


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_weights_missing_path_and_offline_hub_id(tmp_path):
    flat = save_unet(tmp_path / "flat", tiny_unet())
    weights = flat / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated
    with pytest.raises(FewstepError, match=r"diffusion_pytorch_model\.safetensors.*damaged"):
        load_unet2d(str(flat))

    binary = save_unet(tmp_path / "bin", tiny_unet(), layout="pipeline", safe=False)
    (binary / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80garbage" * 100)
    with pytest.raises(FewstepError, match=r"diffusion_pytorch_model\.bin.*damaged"):
        load_unet2d(str(binary))

    class Code:  # what a malicious .bin carries: a pickle that calls a function when loaded
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"conv_in.weight": Code()}, binary / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(FewstepError, match=r"diffusion_pytorch_model\.bin holds pickled code, which fewstep does not"):
        load_unet2d(str(binary))

    (binary / "unet" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(FewstepError, match="no weight file"):
        load_unet2d(str(binary))

    with pytest.raises(FewstepError, match="no such file"):
        load_unet2d(str(tmp_path / "nowhere"))
    with pytest.raises(FewstepError, match="hf download fewstep-tests/no-such-model"):
        load_unet2d("fewstep-tests/no-such-model")


# ---------------------------------------------------------------------------------------------------------------
# Latent diffusion (UNet2DConditionModel + AutoencoderKL + CLIP)

WORDS = ["a", "cat", "dog", "on", "mat"]


def write_tokenizer(folder) -> CLIPTokenizer:
    """A tiny CLIP BPE tokenizer: letters, a few whole words, the two special tokens."""
    folder.mkdir(parents=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *[c + "</w>" for c in letters]]
    merges = ["c a", "ca t</w>", "d o", "do g</w>", "o n</w>", "m a", "ma t</w>"]
    tokens += ["ca", "cat</w>", "do", "dog</w>", "on</w>", "ma", "mat</w>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)
    tokenizer.save_pretrained(folder)
    return tokenizer


def save_latent_pipeline(folder, classes: int | None = None, text: bool = True):
    torch.manual_seed(0)
    kind = "DownBlock2D" if classes else "CrossAttnDownBlock2D"
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=(kind, "DownBlock2D"),
        up_block_types=("UpBlock2D", kind.replace("Down", "Up")),
        mid_block_type=None if classes else "UNetMidBlock2DCrossAttn",
        cross_attention_dim=8,
        attention_head_dim=2,
        num_class_embeds=classes,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
    ).eval()
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    DDPMScheduler.from_config(SD1_SCHEDULER).save_pretrained(folder / "scheduler")
    parts = {"unet": unet, "vae": vae}
    if text:
        tokenizer = write_tokenizer(folder / "tokenizer")
        config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=8,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
        text_encoder = CLIPTextModel(config).eval()
        text_encoder.save_pretrained(folder / "text_encoder")
        parts.update(tokenizer=tokenizer, text_encoder=text_encoder)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return parts


def embed(parts, prompt: str, batch: int) -> torch.Tensor:
    ids = parts["tokenizer"](prompt, padding="max_length", max_length=8, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return parts["text_encoder"](ids.input_ids).last_hidden_state.expand(batch, -1, -1)


def cfg_reference(unet, x, sigma, w, cond: dict, uncond: dict) -> torch.Tensor:
    """x - sigma (eps_u + w (eps_c - eps_u)), each branch a separate UNet call."""
    t = [model_t_sd(sigma)] * len(x)
    d_c = vp_reference(unet, x, sigma, t, "epsilon", **cond)
    d_u = vp_reference(unet, x, sigma, t, "epsilon", **uncond)
    return d_u + w * (d_c - d_u)  # D is affine in eps: guiding eps = guiding D


def model_t_sd(sigma: float) -> float:
    log_sigmas = discrete_sigmas(alphas_cumprod_from_config(SD1_SCHEDULER)).log()
    high = int(torch.searchsorted(log_sigmas, torch.tensor(math.log(sigma), dtype=torch.float64)))
    return high - 1 + float((math.log(sigma) - log_sigmas[high - 1]) / (log_sigmas[high] - log_sigmas[high - 1]))


def test_latent_diffusion_text_cfg(tmp_path):
    parts = save_latent_pipeline(tmp_path)
    prompts = ["a cat", "a dog on a mat", "dog"]
    model = load_latent_diffusion(str(tmp_path), guidance_scale=3.0, prompts=prompts, negative_prompt="mat")
    assert isinstance(model, LatentDenoiser) and model.sample_shape == (4, 8, 8)
    assert model.sigma_range == pytest.approx((0.0292, 14.61), abs=1e-2)
    unet = parts["unet"]
    unet_calls, text_calls = [], []
    model.net.unet.register_forward_hook(lambda m, args, out: unet_calls.append(args[0].shape[0]))
    model.conditioner.text_encoder.register_forward_hook(lambda m, args, out: text_calls.append(args[0].shape[0]))

    seeds = torch.tensor([4, 2, 0])  # prompts 4 % 3 = 1, 2, 0
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    bound = for_seeds(model, seeds)
    with torch.no_grad():
        got = bound(x, 2.0)
    assert unet_calls == [6]  # one batched call of 2B
    cond = torch.cat([embed(parts, prompts[i], 1) for i in (1, 2, 0)])
    expected = cfg_reference(
        unet, x, 2.0, 3.0, {"encoder_hidden_states": cond}, {"encoder_hidden_states": embed(parts, "mat", 3)}
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    # guidance_scale = 1: the conditional branch alone, one UNet call of B
    plain = load_latent_diffusion(str(tmp_path), guidance_scale=1.0, prompts=prompts)
    with torch.no_grad():
        got1 = for_seeds(plain, seeds)(x, 2.0)
    t = [model_t_sd(2.0)] * 3
    torch.testing.assert_close(got1, vp_reference(unet, x, 2.0, t, "epsilon", encoder_hidden_states=cond))

    # the same seed in another batch: the same condition, the same output (float64: no batch-shape rounding noise)
    exact = load_latent_diffusion(
        str(tmp_path), guidance_scale=3.0, prompts=prompts, negative_prompt="mat", dtype="float64"
    )
    with torch.no_grad():
        first = for_seeds(exact, seeds)(x.double(), 2.0)
        again = for_seeds(exact, torch.tensor([5, 2]))(x[:2].double(), 2.0)
    torch.testing.assert_close(again[1], first[1], atol=1e-12, rtol=0)
    assert not torch.allclose(again[0], first[0], atol=1e-4)  # seed 5 -> prompt 2, not seed 4's prompt 1

    # end to end with euler and dpmpp; each prompt was encoded once (then cached)
    sigmas = torch.tensor([14.0, 4.0, 1.2, 0.3, 0.05, 0.0], dtype=torch.float64)
    for solver in ("euler", "dpmpp"):
        noise = torch.randn(3, *model.sample_shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        with torch.no_grad():
            latents = get_solver(solver).fn(bound, noise.float() * 14.0, sigmas)
            images = decode(bound, latents)
        assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all() and images.abs().max() <= 1
    assert sum(text_calls) == len(set(prompts)) + 1  # 3 prompts + the negative prompt


def test_latent_diffusion_class_labels(tmp_path):
    parts = save_latent_pipeline(tmp_path, classes=4, text=False)  # 3 classes + the null row 3
    with pytest.raises(FewstepError, match="num_classes=3"):
        load_latent_diffusion(str(tmp_path), guidance_scale=2.0, class_labels="cycle")
    with pytest.raises(FewstepError, match="text_encoder"):
        load_latent_diffusion(str(tmp_path), prompts=["a cat"], class_labels="cycle", num_classes=3)
    model = load_latent_diffusion(str(tmp_path), guidance_scale=2.0, class_labels=[2, 0, 1, 1], num_classes=3)

    seeds = torch.tensor([1, 6, 3])  # labels [0, 1, 1]
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        got = for_seeds(model, seeds)(x, 0.5)
    zeros = torch.zeros(3, 1, 8)
    expected = cfg_reference(
        parts["unet"],
        x,
        0.5,
        2.0,
        {"encoder_hidden_states": zeros, "class_labels": torch.tensor([0, 1, 1])},
        {"encoder_hidden_states": zeros, "class_labels": torch.tensor([3, 3, 3])},
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    sigmas = torch.tensor([10.0, 2.0, 0.4, 0.0], dtype=torch.float64)
    with torch.no_grad():
        latents = get_solver("dpmpp").fn(for_seeds(model, seeds), torch.randn(3, 4, 8, 8) * 10.0, sigmas)
        images = decode(model, latents)
    assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()
