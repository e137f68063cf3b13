"""Images as the field scores them: clipped to [-1, 1] and quantised to 8 bits exactly as EDM's `generate.py`
writes its PNGs, `(x * 127.5 + 128).clip(0, 255).to(uint8)`, before any feature extractor (EDM's `fid.py`, the
GITS reference code and clean-fid all read those PNGs). A sample with pixels at -2.5 or 3.1 is scored as the
image a reader sees, not as the raw array.
"""

from __future__ import annotations

import torch


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (any range is clipped) -> uint8 0..255, EDM's rounding (x * 127.5 + 128, floored)."""
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def dequantize(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1]; `quantize(dequantize(u)) == u` exactly."""
    return images.float() / 127.5 - 1


def as_scored(images: torch.Tensor) -> torch.Tensor:
    """What a feature extractor sees: the 8-bit image mapped back to [-1, 1] (float32)."""
    return dequantize(images if images.dtype == torch.uint8 else quantize(images))
