"""Loaders for diffusers checkpoints as fewstep denoisers D(x, sigma) -> x0 (see `fewstep.models.vp`).

- `load_unet2d`: a DDPM-style `UNet2DModel` (pixel space), unconditional or class-conditional.
- `load_latent_diffusion`: a Stable-Diffusion-like pipeline (UNet2DConditionModel + AutoencoderKL, CLIP text encoder
  for prompts, or class labels), sampling in latent space with classifier-free guidance.

Weights: diffusers prefers *.safetensors and falls back to *.bin. diffusers 0.42.1 reads .bin files with
`torch.load(..., weights_only=True)` (diffusers/models/model_loading_utils.py, `load_state_dict`, for every
torch >= 1.13), so a .bin checkpoint cannot run code while loading; transformers 5 likewise refuses unsafe .bin loads.
"""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from torch import nn

from fewstep.errors import FewstepError
from fewstep.models.hub import resolve_pretrained
from fewstep.models.vp import VPDiscreteDenoiser
from fewstep.utils.storage import refused_pickled_code

_INSTALL = "pip install 'fewstep[models]'"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
_WEIGHT_NAMES = ("diffusion_pytorch_model", "model")  # diffusers components, transformers models


def _diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise FewstepError(f"loading diffusers checkpoints needs diffusers: {_INSTALL}") from err
    return diffusers


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise FewstepError(f"loading a text encoder needs transformers: {_INSTALL}") from err
    return transformers


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise FewstepError(f"model.dtype={name!r} is not supported; choose one of {sorted(_DTYPES)}")
    return _DTYPES[name]


# ---------------------------------------------------------------------------------------------------------------
# Schedule and conditions


def alphas_cumprod_from_config(config: dict) -> torch.Tensor:
    """abar_t of the training schedule described by a diffusers scheduler config (any scheduler class):
    DDPMScheduler.from_config builds the betas for every beta_schedule (and trained_betas) exactly as in training."""
    scheduler = _diffusers().DDPMScheduler.from_config(config)
    return scheduler.alphas_cumprod.to(torch.float64)


def _cycle(table: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """table[seed % len(table)]: each seed's label, independent of the batch it is in."""
    return table[seeds.to(torch.long).cpu() % len(table)]


def label_picker(class_labels, num_classes: int, what: str = "model.class_labels"):
    """seeds -> class labels for `class_labels` = "cycle" (seed % num_classes) or a list of ints cycled over seeds."""
    if isinstance(class_labels, str):
        if class_labels != "cycle":
            raise FewstepError(f'{what}={class_labels!r}: use null, "cycle" or a list of class indices')
        return partial(_cycle, torch.arange(num_classes))
    labels = [int(label) for label in class_labels]
    bad = [label for label in labels if not 0 <= label < num_classes]
    if not labels or bad:
        raise FewstepError(f"{what}: class indices must be a non-empty list in [0, {num_classes}), got {labels}")
    return partial(_cycle, torch.tensor(labels))


def _class_conditions(picker, seeds: torch.Tensor) -> dict:
    return {"class_labels": picker(seeds)}


# ---------------------------------------------------------------------------------------------------------------
# Networks: diffusers UNets as net(x_vp, t, **cond) -> output


class DiffusersUNet(nn.Module):
    """A diffusers UNet as `net(x_vp, t, **cond) -> output`: runs in the UNet's dtype/device, returns `.sample` in
    x's dtype. A learned-variance UNet (2C output channels) keeps its first C channels, the mean prediction."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        p = next(self.unet.parameters())
        cond = {k: _to(v, p) for k, v in cond.items()}
        out = self.unet(x.to(p.dtype), t.to(p.device), **cond).sample
        if out.shape[1] == 2 * x.shape[1]:
            out = out[:, : x.shape[1]]
        return out.to(x.dtype)


def _to(value, like: torch.Tensor):
    if not torch.is_tensor(value):
        return value
    return value.to(like.device, like.dtype) if value.is_floating_point() else value.to(like.device)


class GuidedUNet(DiffusersUNet):
    """Classifier-free guidance in one batched call: out = out_u + w (out_c - out_u), the 2B batch [uncond; cond].

    Guiding the raw output (eps or v) is guiding x0: D is affine in the output with coefficients that do not depend
    on the condition. With w == 1 (or no unconditional branch) only the conditional half runs.
    """

    def __init__(self, unet: nn.Module, guidance_scale: float):
        super().__init__(unet)
        self.guidance_scale = float(guidance_scale)

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, cond: dict, uncond: dict | None = None) -> torch.Tensor:
        if uncond is None or self.guidance_scale == 1:
            return super().forward(x, t, **cond)
        both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
        out_u, out_c = super().forward(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        return out_u + self.guidance_scale * (out_c - out_u)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _weight_file(folder: Path) -> Path | None:
    """The weight file diffusers/transformers would read: safetensors first, then .bin (sharded: the index)."""
    for ext in ("safetensors", "bin"):
        for name in _WEIGHT_NAMES:
            for candidate in (folder / f"{name}.{ext}", folder / f"{name}.{ext}.index.json"):
                if candidate.exists():
                    return candidate
    return None


def _load(cls, folder: Path, dtype: torch.dtype, what: str):
    """cls.from_pretrained(folder), in eval mode without gradients; a missing or unreadable checkpoint: FewstepError."""
    if not (folder / "config.json").exists():
        raise FewstepError(f"{what}: no config.json in {folder}; expected a folder written by save_pretrained")
    weights = _weight_file(folder)
    if weights is None:
        raise FewstepError(
            f"{what}: no weight file in {folder} (expected diffusion_pytorch_model.safetensors/.bin or "
            "model.safetensors/.bin); the download looks incomplete: re-download it or re-save it with save_pretrained"
        )
    try:
        if cls.__module__.startswith("diffusers"):  # keeps the modules diffusers wants in float32 (its warning)
            # low_cpu_mem_usage needs `accelerate` (not a dependency); without it diffusers warns on every load
            fast = importlib.util.find_spec("accelerate") is not None
            model = cls.from_pretrained(folder, torch_dtype=dtype, low_cpu_mem_usage=fast)
        else:
            model = cls.from_pretrained(folder).to(dtype)
    except Exception as err:  # diffusers/transformers/safetensors raise OSError, ValueError, RuntimeError, ...
        if refused_pickled_code(err):
            raise FewstepError(
                f"{what}: {weights} holds pickled code, which fewstep does not run (.bin files are read with "
                "weights_only=True); use the safetensors weights of a source you trust"
            ) from None
        raise FewstepError(
            f"{what}: could not load the weights {weights} ({type(err).__name__}: {err}). The file looks damaged or "
            "truncated (an interrupted download or copy?): re-download it (`hf download REPO --local-dir DIR`) or "
            "re-save the model with save_pretrained"
        ) from err
    return model.eval().requires_grad_(False)


def _config(folder: Path, what: str) -> dict:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FewstepError(f"{what}: cannot read {path} ({err}); re-download or re-save the model") from err


def _scheduler_config(candidates: Sequence[Path], what: str) -> dict:
    for path in candidates:
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError as err:
                raise FewstepError(f"{what}: {path} is not valid JSON ({err}); re-download or re-save it") from err
    raise FewstepError(
        f"{what}: no scheduler config (looked for {', '.join(map(str, candidates))}); it defines the training noise "
        "schedule (betas), so copy the scheduler/ folder or scheduler_config.json of the checkpoint next to it"
    )


def load_unet2d(
    path: str,
    subfolder: str | None = None,
    prediction_type: str | None = None,
    timestep: str = "interpolate",
    dtype: str = "float32",
    class_labels: str | Sequence[int] | None = None,
) -> VPDiscreteDenoiser:
    """A diffusers `UNet2DModel` DDPM checkpoint as D(x, sigma) on images (on the CPU; move it with `.to`).

    `path`: a local folder or hub id, either a pipeline (model_index.json, unet/, scheduler/) or the flat layout of
    google/ddpm-cifar10-32 (config.json, weights and scheduler_config.json together); `subfolder` names the UNet's
    folder explicitly. `prediction_type` defaults to the scheduler config's. `class_labels` for a class-conditional
    UNet (num_class_embeds): "cycle" (label = seed % num_classes) or a list of labels cycled over seeds; null for an
    unconditional one.
    """
    root = resolve_pretrained(path, "model.path")
    what = f"model.path={path}"
    if subfolder is not None:
        unet_dir = root / subfolder
    else:
        unet_dir = root / "unet" if (root / "unet" / "config.json").exists() else root
    config = _config(unet_dir, what)
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise FewstepError(
            f"{what}: {unet_dir} holds a {config['_class_name']}, not a UNet2DModel; for a latent text/class-"
            "conditional pipeline (UNet2DConditionModel) use the latent diffusion loader"
        )
    if config.get("time_embedding_type", "positional") == "fourier":
        raise FewstepError(f"{what}: a Fourier-time UNet2DModel is a continuous VE (score SDE) model, not a DDPM one")
    schedule = _scheduler_config(
        [
            root / "scheduler" / "scheduler_config.json",
            unet_dir / "scheduler_config.json",
            root / "scheduler_config.json",
        ],
        what,
    )
    unet = _load(_diffusers().UNet2DModel, unet_dir, torch_dtype(dtype), what)

    num_classes = unet.config.num_class_embeds if unet.config.class_embed_type is None else None
    conditioner = None
    if unet.config.class_embed_type is not None:
        raise FewstepError(
            f"{what}: class_embed_type={unet.config.class_embed_type!r} (continuous class inputs) is "
            "not supported; only label embeddings (num_class_embeds) are"
        )
    if num_classes is not None:
        if class_labels is None:
            raise FewstepError(
                f'{what} is class-conditional ({num_classes} classes): set model.class_labels to "cycle" '
                "(label = seed % num_classes) or a list of class indices"
            )
        conditioner = partial(_class_conditions, label_picker(class_labels, num_classes))
    elif class_labels is not None:
        raise FewstepError(f"model.class_labels={class_labels!r}, but {what} is unconditional: set it to null")
    denoiser = VPDiscreteDenoiser(
        DiffusersUNet(unet),
        alphas_cumprod_from_config(schedule),
        prediction_type or _scheduler_prediction_type(schedule),
        timestep,
        conditioner=conditioner,
    )
    denoiser.image_shape = (unet.config.in_channels, *_size(unet.config.sample_size))  # samples images directly
    return denoiser


def _size(sample_size) -> tuple[int, int]:
    return (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)


def _scheduler_prediction_type(config: dict) -> str:
    return _diffusers().DDPMScheduler.from_config(config).config.prediction_type


# ---------------------------------------------------------------------------------------------------------------
# Latent diffusion


class LatentConditioner(nn.Module):
    """seeds -> {"cond": kwargs, "uncond": kwargs or None} for a UNet2DConditionModel, one condition per seed.

    Text: prompt = prompts[seed % len(prompts)], unconditional = negative_prompt; embeddings (the text encoder's last
    hidden state, as in SD) are computed once per prompt and cached. No text encoder: encoder_hidden_states are
    zeros of length 1 (the UNet needs the argument; a class-only UNet should have no cross-attention).
    Class labels: `picker(seeds)`; unconditional = `null_class`, the learned null row of the embedding.
    """

    def __init__(
        self,
        text_encoder: nn.Module | None,
        tokenizer,
        prompts: Sequence[str],
        negative_prompt: str,
        picker,
        null_class: int | None,
        cross_attention_dim: int,
        with_uncond: bool,
    ):
        super().__init__()
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.negative_prompt = negative_prompt
        self.picker = picker
        self.null_class = null_class
        self.cross_attention_dim = cross_attention_dim
        self.with_uncond = with_uncond
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # least recently used first

    def forward(self, seeds: torch.Tensor) -> dict:
        seeds = seeds.to(torch.long).cpu()
        batch = len(seeds)
        cond, uncond = {}, {}
        if self.text_encoder is not None:
            cond["encoder_hidden_states"] = self.embed([self.prompts[i] for i in (seeds % len(self.prompts)).tolist()])
            uncond["encoder_hidden_states"] = self.embed([self.negative_prompt] * batch)
        else:
            zeros = torch.zeros(batch, 1, self.cross_attention_dim)
            cond["encoder_hidden_states"] = uncond["encoder_hidden_states"] = zeros
        if self.picker is not None:
            cond["class_labels"] = self.picker(seeds)
        if self.null_class is not None:
            uncond["class_labels"] = torch.full((batch,), self.null_class, dtype=torch.long)
            cond.setdefault("class_labels", uncond["class_labels"])  # class_labels=null: unconditional samples
        return {"cond": cond, "uncond": uncond if self.with_uncond else None}

    MAX_CACHED = 512  # embeddings kept (30k COCO captions x 77 x 768 in float16 would be 3.5 GB)

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> torch.Tensor:
        """(len(prompts), L, D) text embeddings; the MAX_CACHED most recently used prompts are not encoded again."""
        p = next(self.text_encoder.parameters())
        key = (p.device, p.dtype)
        missing = sorted({text for text in prompts if (text, *key) not in self._cache})
        if missing:
            tokens = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            hidden = self.text_encoder(tokens.input_ids.to(p.device)).last_hidden_state
            self._cache.update({(text, *key): h for text, h in zip(missing, hidden, strict=True)})
        out = torch.stack([self._cache[(text, *key)] for text in prompts])
        for text in prompts:
            self._cache.move_to_end((text, *key))
        while len(self._cache) > max(self.MAX_CACHED, len(set(prompts))):
            self._cache.popitem(last=False)
        return out


class LatentDenoiser(VPDiscreteDenoiser):
    """D(z, sigma) in a VAE's latent space with classifier-free guidance; `decode` maps latents to images in [-1, 1].

    Bind per-sample conditions with `for_seeds(seeds)` (prompts / class labels picked from the seeds).
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        alphas_cumprod: torch.Tensor,
        conditioner: LatentConditioner,
        guidance_scale: float,
        prediction_type: str = "epsilon",
        timestep: str = "interpolate",
    ):
        super().__init__(
            GuidedUNet(unet, guidance_scale), alphas_cumprod, prediction_type, timestep, conditioner=conditioner
        )
        self.vae = vae
        self.sample_shape = (unet.config.in_channels, *_size(unet.config.sample_size))
        upsampling = 2 ** (len(vae.config.block_out_channels) - 1)  # AutoencoderKL: one 2x step between levels
        self.image_shape = (vae.config.out_channels, *(upsampling * d for d in self.sample_shape[1:]))

    @property
    def guidance_scale(self) -> float:
        return self.net.guidance_scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.vae, latents)


@torch.no_grad()
def vae_decode(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Images vae.decode(z / scaling_factor (+ shift_factor)), clamped to [-1, 1], in the latents' dtype."""
    p = next(vae.parameters())
    z = latents.to(p.device, p.dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        z = z + shift
    return vae.decode(z).sample.clamp(-1, 1).to(latents.dtype)


def load_latent_diffusion(
    path: str,
    guidance_scale: float = 7.5,
    prompts: str | Sequence[str] | None = None,
    negative_prompt: str = "",
    class_labels: str | Sequence[int] | None = None,
    num_classes: int | None = None,
    prediction_type: str | None = None,
    timestep: str = "interpolate",
    dtype: str = "float32",
) -> LatentDenoiser:
    """A Stable-Diffusion-like pipeline folder (unet/, vae/, scheduler/, optionally text_encoder/ + tokenizer/) as a
    latent denoiser with classifier-free guidance (on the CPU; move it with `.to`).

    Text: prompt = prompts[seed % len(prompts)] (null: the empty prompt), unconditional branch = negative_prompt.
    Class labels (UNet with num_class_embeds): "cycle" or a list cycled over seeds. The unconditional branch uses the
    null class at index `num_classes`, so the embedding must have num_classes + 1 rows: the convention of DiT, whose
    label dropout trains that extra row as "no class", the only row that estimates the unconditional score (a zero
    embedding was never seen in training). num_classes defaults to all rows (no null class): then guidance needs
    num_classes = rows - 1, and class_labels=null is allowed only with a null class (unconditional samples).
    """
    root = resolve_pretrained(path, "model.path")
    what = f"model.path={path}"
    dt = torch_dtype(dtype)
    diffusers = _diffusers()
    for part in ("unet", "vae"):
        if not (root / part).is_dir():
            raise FewstepError(
                f"{what}: {root} has no {part}/ folder; expected a diffusers pipeline (unet/, vae/, "
                "scheduler/, text_encoder/ + tokenizer/ for prompts) written by save_pretrained"
            )
    schedule = _scheduler_config([root / "scheduler" / "scheduler_config.json"], what)
    unet = _load(diffusers.UNet2DConditionModel, root / "unet", dt, f"{what} (unet/)")
    vae = _load(diffusers.AutoencoderKL, root / "vae", dt, f"{what} (vae/)")
    if unet.config.in_channels != vae.config.latent_channels:
        raise FewstepError(
            f"{what}: the UNet samples {unet.config.in_channels} channels but the VAE's latents have "
            f"{vae.config.latent_channels}; the unet/ and vae/ folders do not belong together"
        )

    text_encoder = tokenizer = None
    if (root / "text_encoder").is_dir():
        transformers = _transformers()
        text_encoder = _load(transformers.CLIPTextModel, root / "text_encoder", dt, f"{what} (text_encoder/)")
        try:
            tokenizer = transformers.CLIPTokenizer.from_pretrained(root / "tokenizer")
        except Exception as err:
            raise FewstepError(
                f"{what}: cannot load the tokenizer from {root / 'tokenizer'} ({err}); re-download "
                "the pipeline's tokenizer/ folder"
            ) from err
        if text_encoder.config.hidden_size != unet.config.cross_attention_dim:
            raise FewstepError(
                f"{what}: text embeddings of size {text_encoder.config.hidden_size} do not fit the "
                f"UNet's cross_attention_dim={unet.config.cross_attention_dim}"
            )
    elif prompts is not None:
        raise FewstepError(f"model.prompts is set but {root} has no text_encoder/ (+ tokenizer/): set it to null")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts or [""])

    picker, null_class = _latent_classes(unet, class_labels, num_classes, guidance_scale, what)
    with_uncond = guidance_scale != 1
    conditioner = LatentConditioner(
        text_encoder,
        tokenizer,
        prompts,
        negative_prompt,
        picker,
        null_class,
        unet.config.cross_attention_dim,
        with_uncond,
    )
    return LatentDenoiser(
        unet,
        vae,
        alphas_cumprod_from_config(schedule),
        conditioner,
        guidance_scale,
        prediction_type or _scheduler_prediction_type(schedule),
        timestep,
    )


def _latent_classes(unet, class_labels, num_classes, guidance_scale, what):
    """(label picker or None, null class index or None) for a UNet2DConditionModel."""
    rows = unet.config.num_class_embeds
    if unet.config.class_embed_type is not None:
        raise FewstepError(
            f"{what}: class_embed_type={unet.config.class_embed_type!r} (continuous class inputs) is "
            "not supported; only label embeddings (num_class_embeds) are"
        )
    if rows is None:
        if class_labels is not None or num_classes is not None:
            raise FewstepError(
                f"{what}: the UNet has no class embedding: set model.class_labels and num_classes to null"
            )
        return None, None
    num_classes = rows if num_classes is None else int(num_classes)
    if not 0 < num_classes <= rows:
        raise FewstepError(f"model.num_classes={num_classes}: the UNet's class embedding has {rows} rows")
    null_class = num_classes if num_classes == rows - 1 else None
    if null_class is None and (guidance_scale != 1 or class_labels is None):
        raise FewstepError(
            f"{what}: classifier-free guidance (guidance_scale={guidance_scale}) or class_labels=null needs a null "
            f"class, but num_classes={num_classes} leaves none of the {rows} embedding rows; if the last row is the "
            f"null class (DiT convention, trained by label dropout) set model.num_classes={rows - 1}, otherwise set "
            "guidance_scale=1 and model.class_labels"
        )
    picker = None if class_labels is None else label_picker(class_labels, num_classes)
    return picker, null_class
