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


STREAM_MULTIPLIER = 1_000_003  # seeds of noise streams k >= 1: seed * 1_000_003 + k (plain integers, no hash)


def seed_generator(seed: int, stream: int = 0) -> torch.Generator:
    """Sample `seed`'s own CPU generator for one noise stream: stream 0 (the initial noise) is seeded with the seed
    itself, as EDM's per-image seeding; stream k >= 1 (a stochastic solver's step noise) with
    `seed * 1_000_003 + k`, all mod 2**63."""
    value = int(seed) if stream == 0 else int(seed) * STREAM_MULTIPLIER + int(stream)
    return torch.Generator().manual_seed(value % (1 << 63))


def seeded_noise(seeds: torch.Tensor, shape: tuple[int, ...], dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise, one torch.Generator per seed (generated on the CPU: identical on every device)."""
    return torch.stack([torch.randn(shape, generator=seed_generator(s), dtype=dtype) for s in seeds])
