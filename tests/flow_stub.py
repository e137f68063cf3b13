"""Tiny random SD3 and Flux pipelines, written as diffusers pipeline folders (the loaders' stand-ins)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), norm_num_groups=4,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
           layers_per_block=1, sample_size=16, scaling_factor=1.5, shift_factor=0.1)  # fmt: skip


def clip_parts(folder: Path, suffix: str, projection: bool, hidden: int = 16):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .test_diffusers_models import write_tokenizer

    tokenizer = write_tokenizer(folder / f"tokenizer{suffix}")
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1, projection_dim=hidden)  # fmt: skip
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()
    model.save_pretrained(folder / f"text_encoder{suffix}")
    return tokenizer, model


def t5_parts(folder: Path, suffix: str, d_model: int = 16):
    """A T5 encoder and a whole-word unigram T5TokenizerFast (no sentencepiece model needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    words = ["<pad>", "</s>", "<unk>", *("\u2581" + w for w in ("a", "cat", "dog", "on", "mat"))]  # T5's word marks
    backend = Tokenizer(models.Unigram([(w, 0.0) for w in words], unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    T5TokenizerFast(tokenizer_object=backend, extra_ids=0, pad_token="<pad>", eos_token="</s>",
                    unk_token="<unk>").save_pretrained(folder / f"tokenizer{suffix}")  # fmt: skip
    tokenizer = T5TokenizerFast.from_pretrained(folder / f"tokenizer{suffix}")  # as a loader reads it
    model = T5EncoderModel(T5Config(vocab_size=len(words), d_model=d_model, d_kv=8, d_ff=32, num_layers=1,
                                    num_heads=2)).eval()  # fmt: skip
    model.save_pretrained(folder / f"text_encoder{suffix}")
    return tokenizer, model


def save_sd3_pipeline(folder: Path, t5: bool = False) -> dict:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(0)
    parts = {"transformer": SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4,
                                                   num_layers=1, attention_head_dim=8, num_attention_heads=2,
                                                   joint_attention_dim=32, caption_projection_dim=16,
                                                   pooled_projection_dim=32, pos_embed_max_size=8).eval(),
             "vae": AutoencoderKL(**VAE).eval(), "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0)}  # fmt: skip
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    for suffix in ("", "_2"):
        parts[f"tokenizer{suffix}"], parts[f"text_encoder{suffix}"] = clip_parts(folder, suffix, projection=True)
    parts["tokenizer_3"], parts["text_encoder_3"] = t5_parts(folder, "_3", d_model=32) if t5 else (None, None)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    return parts


def save_flux_pipeline(folder: Path, guidance: bool = True) -> dict:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(0)
    parts = {"transformer": FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                                    attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                                    pooled_projection_dim=16, guidance_embeds=guidance,
                                                    axes_dims_rope=[2, 2, 4]).eval(),
             "vae": AutoencoderKL(**VAE).eval(),
             "scheduler": FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0)}  # fmt: skip
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    parts["tokenizer"], parts["text_encoder"] = clip_parts(folder, "", projection=False)
    parts["tokenizer_2"], parts["text_encoder_2"] = t5_parts(folder, "_2")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    return parts
