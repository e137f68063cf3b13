"""Per-seed results stored as atomic shard files, so sampling resumes and caches are shared across runs.

A store is a folder of `*.pt` files, each `{"seeds": LongTensor[B], "samples": Tensor[B, ...]}`. A shard that
cannot be read (a killed writer leaves none, thanks to atomic renames; a disk error might) is reported and
treated as missing, so its seeds are simply computed again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fewstep.utils.storage import atomic_torch_save

log = logging.getLogger(__name__)


class ShardStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def write(self, seeds: torch.Tensor, samples: torch.Tensor) -> Path:
        seeds = seeds.detach().cpu().long()
        name = f"seeds_{int(seeds[0]):09d}_{int(seeds[-1]):09d}_{len(seeds)}.pt"
        return atomic_torch_save(self.root / name, {"seeds": seeds, "samples": samples.detach().cpu()})

    def _read_all(self) -> dict[int, torch.Tensor]:
        found: dict[int, torch.Tensor] = {}
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.glob("*.pt")):
            try:
                shard = torch.load(path, map_location="cpu", weights_only=True)
                seeds, samples = shard["seeds"], shard["samples"]
            except Exception as err:  # a damaged shard is recomputed, never trusted
                log.warning("ignoring unreadable shard %s (%s); its seeds will be recomputed", path, err)
                continue
            for seed, sample in zip(seeds.tolist(), samples, strict=True):
                found[seed] = sample
        return found

    def missing(self, seeds: list[int]) -> list[int]:
        have = self._read_all()
        return [s for s in seeds if s not in have]

    def load(self, seeds: list[int]) -> torch.Tensor:
        have = self._read_all()
        absent = [s for s in seeds if s not in have]
        if absent:
            raise RuntimeError(f"{len(absent)} seeds missing from {self.root} (first: {absent[:5]})")
        return torch.stack([have[s] for s in seeds])
