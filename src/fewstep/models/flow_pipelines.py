"""Loaders for diffusers' rectified-flow pipelines (Stable Diffusion 3 / 3.5, Flux) as fewstep denoisers.

The transformer predicts the velocity v(x_t, t) in the VAE's latent space; `fewstep.models.flow.flow_denoiser` turns
it into D(x, sigma). Prompts are encoded by the pipeline's own `encode_prompt` (CLIP and T5, exactly as diffusers
does), once per distinct prompt; the prompt of seed s is prompts[s % len(prompts)].

- SD3: classifier-free guidance, the conditional and unconditional halves in one transformer batch (1 NFE per call,
  as fewstep counts), timestep = 1000 t; the T5 encoder is optional (diffusers then uses zeros, as without it).
- Flux: guidance-distilled (FLUX.1-dev embeds `guidance_scale`; schnell has no guidance embedding), latents packed
  into 2x2 patches for each call and unpacked after it, timestep = t; `height`/`width` give the image size.

Weights are read as the other diffusers loaders read them (`diffusers_models._load`: safetensors, or .bin with
weights_only=True).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fewstep.errors import FewstepError
from fewstep.models.diffusers_models import _diffusers, _load, _transformers, torch_dtype, vae_decode
from fewstep.models.flow import FlowDenoiser, flow_denoiser
from fewstep.models.hub import resolve_pretrained

MAX_CACHED = 512  # prompt embeddings kept (least recently used dropped)


class PromptBank:
    """prompt -> embeddings (a tuple of tensors), computed by `encode([prompt])` once per prompt and cached."""

    def __init__(self, encode, prompts: Sequence[str]):
        self.encode = encode
        self.prompts = list(prompts) or [""]
        self._cache: OrderedDict[str, tuple] = OrderedDict()

    def for_seeds(self, seeds: torch.Tensor) -> list[tuple]:
        texts = [self.prompts[i] for i in (seeds.to(torch.long).cpu() % len(self.prompts)).tolist()]
        for text in sorted(set(texts) - set(self._cache)):
            with torch.no_grad():
                self._cache[text] = tuple(part[0] if part.dim() > 1 else part for part in self.encode(text))
        for text in texts:
            self._cache.move_to_end(text)
        out = [self._cache[text] for text in texts]
        while len(self._cache) > max(MAX_CACHED, len(set(texts))):
            self._cache.popitem(last=False)
        return out


class TransformerFlow(nn.Module):
    """The guided velocity v(x_t, t) of an SD3 or Flux transformer; `for_seeds(seeds)` binds each sample's prompt
    (called unbound, sample i gets prompts[i % len(prompts)])."""

    def __init__(self, pipeline, kind: str, bank: PromptBank, guidance_scale: float, sample_shape: tuple[int, ...]):
        super().__init__()
        self.transformer, self.vae = pipeline.transformer, pipeline.vae
        self.pipeline_class = type(pipeline)
        self.kind, self.bank, self.guidance_scale = kind, bank, float(guidance_scale)
        self.sample_shape = tuple(sample_shape)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.vae_scale_factor = factor
        self.image_shape = (self.vae.config.out_channels, *(factor * d for d in self.sample_shape[1:]))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.vae, latents)

    def for_seeds(self, seeds: torch.Tensor):
        conditions = self.bank.for_seeds(seeds)
        return lambda x_t, t: self.velocity(x_t, t, conditions)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.for_seeds(torch.arange(len(x_t)))(x_t, t)

    def fingerprint_extra(self) -> str:
        return f"{self.kind}:{self.guidance_scale}:{self.bank.prompts!r}"

    @torch.no_grad()
    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, conditions: list[tuple]) -> torch.Tensor:
        p = next(self.transformer.parameters())
        x_in, t_in = x_t.to(p.device, p.dtype), t.to(p.device, p.dtype)
        parts = [torch.stack([c[k] for c in conditions]).to(p.device) for k in range(len(conditions[0]))]
        out = self._sd3(x_in, t_in, parts) if self.kind == "sd3" else self._flux(x_in, t_in, parts)
        return out.to(x_t.dtype)

    def _sd3(self, x, t, parts):
        embeds, pooled, negative, negative_pooled = parts
        guided = self.guidance_scale != 1
        if guided:  # diffusers' order: unconditional half first
            x, t = torch.cat([x, x]), torch.cat([t, t])
            embeds, pooled = torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])
        out = self.transformer(hidden_states=x, timestep=t, encoder_hidden_states=embeds, pooled_projections=pooled,
                               return_dict=False)[0]  # fmt: skip
        if not guided:
            return out
        uncond, cond = out.chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)

    def _flux(self, x, t, parts):
        embeds, pooled, text_ids = parts
        batch, channels, height, width = x.shape
        packed = self.pipeline_class._pack_latents(x, batch, channels, height, width)
        image_ids = self.pipeline_class._prepare_latent_image_ids(batch, height // 2, width // 2, x.device, x.dtype)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch,), self.guidance_scale, device=x.device, dtype=torch.float32)
        out = self.transformer(hidden_states=packed, timestep=t, guidance=guidance, pooled_projections=pooled,
                               encoder_hidden_states=embeds, txt_ids=text_ids[0], img_ids=image_ids,
                               return_dict=False)[0]  # fmt: skip
        f = self.vae_scale_factor
        return self.pipeline_class._unpack_latents(out, height * f, width * f, f)


def _folder(root: Path, part: str, what: str, required: bool = True) -> Path | None:
    folder = root / part
    if folder.is_dir():
        return folder
    if required:
        raise FewstepError(f"{what}: {root} has no {part}/ folder; expected a diffusers pipeline folder written by "
                           "save_pretrained (or downloaded with `hf download REPO --local-dir DIR`)")  # fmt: skip
    return None


def _tokenizer(cls, folder: Path, what: str):
    try:
        return cls.from_pretrained(folder)
    except Exception as err:
        raise FewstepError(f"{what}: cannot load the tokenizer from {folder} ({err}); re-download the pipeline's "
                           f"{folder.name}/ folder") from err


def _scheduler(root: Path):
    diffusers = _diffusers()
    folder = root / "scheduler"
    if (folder / "scheduler_config.json").exists():
        return diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(folder)
    return diffusers.FlowMatchEulerDiscreteScheduler()


def _open(path: str, dtype: str, transformer: str) -> tuple[Path, str, dict, object]:
    """A pipeline folder's root, the option to name in errors, and its transformer, VAE and scheduler."""
    diffusers = _diffusers()
    root = resolve_pretrained(path, "model.path")
    what, dt = f"model.path={path}", torch_dtype(dtype)
    parts = {"transformer": _load(getattr(diffusers, transformer), _folder(root, "transformer", what), dt, what),
             "vae": _load(diffusers.AutoencoderKL, _folder(root, "vae", what), dt, what), "scheduler": _scheduler(root)}
    return root, what, parts, dt


def _text_parts(root: Path, suffix: str, encoder: str, tokenizer: str, what: str, dt) -> dict:
    """text_encoder{suffix} (a transformers `encoder` class) and tokenizer{suffix} (a `tokenizer` class)."""
    transformers = _transformers()
    encoder_folder, tokenizer_folder = (_folder(root, part + suffix, what) for part in ("text_encoder", "tokenizer"))
    return {f"text_encoder{suffix}": _load(getattr(transformers, encoder), encoder_folder, dt, what),
            f"tokenizer{suffix}": _tokenizer(getattr(transformers, tokenizer), tokenizer_folder, what)}  # fmt: skip


def _prompts(prompts) -> list[str]:
    return [prompts] if isinstance(prompts, str) else list(prompts or [""])


def load_sd3(path: str, guidance_scale: float = 7.0, prompts: str | Sequence[str] | None = None,
             negative_prompt: str = "", max_sequence_length: int = 256, dtype: str = "float32"
             ) -> FlowDenoiser:  # fmt: skip
    """A Stable Diffusion 3 / 3.5 pipeline folder (transformer/, vae/, text_encoder/ and _2/ with their tokenizers,
    optionally text_encoder_3/ + tokenizer_3/ for T5) as a flow denoiser in latent space with classifier-free
    guidance `guidance_scale` against `negative_prompt`."""
    root, what, parts, dt = _open(path, dtype, "SD3Transformer2DModel")
    for suffix in ("", "_2"):
        parts.update(_text_parts(root, suffix, "CLIPTextModelWithProjection", "CLIPTokenizer", what, dt))
    if _folder(root, "text_encoder_3", what, required=False) is None:  # T5 is optional, as in diffusers
        parts.update(text_encoder_3=None, tokenizer_3=None)
    else:
        parts.update(_text_parts(root, "_3", "T5EncoderModel", "T5TokenizerFast", what, dt))
    pipeline = _diffusers().StableDiffusion3Pipeline(**parts)
    guided = guidance_scale != 1

    def encode(text: str):
        embeds, negative, pooled, negative_pooled = pipeline.encode_prompt(
            prompt=text, prompt_2=None, prompt_3=None, device=torch.device("cpu"), do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt, max_sequence_length=max_sequence_length)  # fmt: skip
        if not guided:
            negative, negative_pooled = embeds, pooled  # unused
        return embeds, pooled, negative, negative_pooled

    config = parts["transformer"].config
    size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
    velocity = TransformerFlow(pipeline, "sd3", PromptBank(encode, _prompts(prompts)), guidance_scale,
                               (config.in_channels, size, size))  # fmt: skip
    return flow_denoiser(velocity, "velocity", time_scale=1000.0)


def load_flux(path: str, guidance_scale: float = 3.5, prompts: str | Sequence[str] | None = None,
              height: int = 1024, width: int = 1024, max_sequence_length: int = 512, dtype: str = "float32"
              ) -> FlowDenoiser:  # fmt: skip
    """A Flux pipeline folder (transformer/, vae/, text_encoder/ (CLIP) + tokenizer/, text_encoder_2/ (T5) +
    tokenizer_2/) as a flow denoiser in latent space at `height` x `width` pixels; FLUX.1-dev embeds
    `guidance_scale` (schnell has no guidance embedding: guidance_scale is then unused)."""
    root, what, parts, dt = _open(path, dtype, "FluxTransformer2DModel")
    parts.update(_text_parts(root, "", "CLIPTextModel", "CLIPTokenizer", what, dt))
    parts.update(_text_parts(root, "_2", "T5EncoderModel", "T5TokenizerFast", what, dt))
    pipeline = _diffusers().FluxPipeline(**parts)
    patch = 2 * pipeline.vae_scale_factor
    if height % patch or width % patch or height <= 0 or width <= 0:
        raise FewstepError(f"model.denoiser.height={height} and width={width} must be positive multiples of {patch} "
                           "(the VAE's downsampling times Flux's 2x2 patches)")  # fmt: skip

    def encode(text: str):
        embeds, pooled, text_ids = pipeline.encode_prompt(prompt=text, prompt_2=None, device=torch.device("cpu"),
                                                          max_sequence_length=max_sequence_length)  # fmt: skip
        return embeds, pooled, text_ids[None]

    channels = parts["transformer"].config.in_channels // 4
    shape = (channels, 2 * (height // patch), 2 * (width // patch))
    velocity = TransformerFlow(pipeline, "flux", PromptBank(encode, _prompts(prompts)), guidance_scale, shape)
    return flow_denoiser(velocity, "velocity", time_scale=1.0)
