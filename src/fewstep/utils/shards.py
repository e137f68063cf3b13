"""Per-seed results stored as atomic shard files, so sampling resumes and caches are shared across runs.

A store is a folder of `seeds_FIRST_LAST_COUNT.pt` files, each `{"seeds": LongTensor[B], "samples": Tensor[B, ...]}`.
A shard whose name says it holds a contiguous seed range is only opened when one of its seeds is wanted, so a
rank reads just its share. A shard that cannot be read is reported and treated as missing (its seeds are
computed again); atomic renames mean a killed writer leaves none behind.

Decoded images (a latent model's samples, ~3 MB each at 512x512 in float32) are stored as uint8, as the PNGs
that FID tools read (`metrics.quantize`, EDM's rounding); `load` returns float32 in [-1, 1] either way.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from fewstep.metrics.quantize import dequantize
from fewstep.utils.storage import atomic_torch_save

log = logging.getLogger(__name__)
_NAME = re.compile(r"seeds_(\d+)_(\d+)_(\d+)\.pt$")


class ShardStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def write(self, seeds: torch.Tensor, samples: torch.Tensor) -> Path:
        seeds = seeds.detach().cpu().long()
        name = f"seeds_{int(seeds[0]):09d}_{int(seeds[-1]):09d}_{len(seeds)}.pt"
        return atomic_torch_save(self.root / name, {"seeds": seeds, "samples": samples.detach().cpu()})

    def _files(self, wanted: set[int]) -> list[Path]:
        """Shard files that may hold one of `wanted` (all files whose seeds the name does not tell)."""
        if not self.root.is_dir():
            return []
        files = []
        for path in sorted(self.root.glob("*.pt")):
            match = _NAME.search(path.name)
            if match:
                first, last, count = map(int, match.groups())
                if count == last - first + 1 and not any(first <= s <= last for s in wanted):
                    continue
            files.append(path)
        return files

    def _read(self, seeds: list[int]) -> dict[int, torch.Tensor]:
        wanted, found = set(seeds), {}
        for path in self._files(wanted):
            try:
                shard = torch.load(path, map_location="cpu", weights_only=True)
                pairs = zip(shard["seeds"].tolist(), shard["samples"], strict=True)
            except Exception as err:  # a damaged shard is recomputed, never trusted
                log.warning("ignoring unreadable shard %s (%s); its seeds will be recomputed", path, err)
                continue
            found.update((seed, sample) for seed, sample in pairs if seed in wanted)
        return found

    def missing(self, seeds: list[int]) -> list[int]:
        have = self._read(seeds)
        return [s for s in seeds if s not in have]

    def load(self, seeds: list[int]) -> torch.Tensor:
        have = self._read(seeds)
        absent = [s for s in seeds if s not in have]
        if absent:
            raise RuntimeError(f"{len(absent)} seeds missing from {self.root} (first: {absent[:5]})")
        stacked = torch.stack([have[s] for s in seeds])
        return dequantize(stacked) if stacked.dtype == torch.uint8 else stacked
