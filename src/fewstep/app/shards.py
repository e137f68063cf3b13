"""Per-seed results stored as atomic shard files, so sampling resumes and caches are shared across runs.

A store is a folder of `seeds_FIRST_LAST_COUNT.pt` files, each `{"seeds": LongTensor[B], "samples": Tensor[B, ...]}`
with a content checksum (`utils.cache`). A shard whose name says it holds a contiguous seed range is only opened
when one of its seeds is wanted, so a rank reads just its share. A shard that is unreadable, altered, of the wrong
shape or not finite is reported once, renamed `*.damaged` and treated as missing (its seeds are computed again);
atomic renames mean a killed writer leaves none behind.

Decoded images (a latent model's samples, ~3 MB each at 512x512 in float32) are stored as uint8, as the PNGs
that FID tools read (`metrics.quantize`, EDM's rounding); `load` returns float32 in [-1, 1] either way.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from fewstep.metrics.quantize import dequantize
from fewstep.utils.cache import finite, load_torch, read_entry, require, write_torch

log = logging.getLogger(__name__)
_NAME = re.compile(r"seeds_(\d+)_(\d+)_(\d+)\.pt$")


class ShardStore:
    def __init__(self, root: str | Path, shape: tuple[int, ...] | None = None):
        """`shape`: each sample's shape, where known (a shard of another shape is damaged)."""
        self.root = Path(root)
        self.shape = tuple(int(d) for d in shape) if shape is not None else None

    def write(self, seeds: torch.Tensor, samples: torch.Tensor, seconds: float = 0.0) -> Path:
        """`seconds`: the compute time of this shard, so that a resumed run still reports the whole run's."""
        seeds = seeds.detach().cpu().long()
        samples = samples.detach().cpu()
        self._check({"seeds": seeds, "samples": samples})  # never write what would be rejected on reading
        name = f"seeds_{int(seeds[0]):09d}_{int(seeds[-1]):09d}_{len(seeds)}.pt"
        return write_torch(self.root / name, {"seeds": seeds, "samples": samples, "seconds": float(seconds)})

    def _check(self, shard: dict) -> None:
        seeds, samples = shard.get("seeds"), shard.get("samples")
        require(isinstance(seeds, torch.Tensor) and seeds.dtype == torch.int64 and seeds.ndim == 1, "no seed list")
        require(isinstance(samples, torch.Tensor) and samples.shape[:1] == seeds.shape,
                f"{len(seeds)} seeds but samples of shape {tuple(getattr(samples, 'shape', ()))}")  # fmt: skip
        require(self.shape is None or tuple(samples.shape[1:]) == self.shape,
                f"samples of shape {tuple(samples.shape[1:])}, expected {self.shape}")  # fmt: skip
        require(samples.dtype == torch.uint8 or finite(samples), "non-finite samples")

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
        """The wanted seeds' samples; also sets `found_seconds`, the compute time of those samples."""
        wanted, found = set(seeds), {}
        self.found_seconds = 0.0
        for path in self._files(wanted):
            shard = read_entry(path, load_torch, self._check, "sample shard", "its seeds will be computed again")
            if shard is None:
                _set_aside(path)
                continue
            pairs = [(seed, sample) for seed, sample in zip(shard["seeds"].tolist(), shard["samples"], strict=True)
                     if seed in wanted and seed not in found]  # fmt: skip
            found.update(pairs)
            self.found_seconds += float(shard.get("seconds", 0.0)) * len(pairs) / max(len(shard["seeds"]), 1)
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


def _set_aside(path: Path) -> None:
    """Rename a damaged shard to `*.damaged`: reported once, kept for inspection, its name free for the recompute."""
    try:
        path.replace(path.with_name(path.name + ".damaged"))
    except OSError:  # already set aside by another rank, or a read-only store: it is ignored either way
        pass
