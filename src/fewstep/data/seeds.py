"""Seeds and noise: every sample has its own generator, so images do not depend on batch size or device count."""

from __future__ import annotations

import torch


def seed_range(first: int, count: int) -> list[int]:
    return list(range(int(first), int(first) + int(count)))


def rank_batches(seeds: list[int], batch_size: int, rank: int, world_size: int) -> list[torch.Tensor]:
    """EDM-style sharding: split into a multiple of world_size batches, rank r takes every world_size-th.

    No seed is duplicated and no padding sample is added; batches may differ in size by one.
    """
    if not seeds:
        return []
    num_batches = -(-len(seeds) // (batch_size * world_size)) * world_size
    batches = torch.as_tensor(seeds, dtype=torch.long).tensor_split(num_batches)
    return [b for b in batches[rank::world_size] if len(b)]


def seeded_noise(seeds: torch.Tensor, shape: tuple[int, ...], dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise, one torch.Generator per seed (generated on the CPU: identical on every device)."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(int(s) % (1 << 63)), dtype=dtype) for s in seeds]
    )
