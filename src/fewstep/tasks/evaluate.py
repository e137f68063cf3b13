"""Distributed evaluation from the sample shards: every rank reduces its share of the seeds to float64 sums
(features and their outer products, truncation errors); only the sums are all-reduced, never the features.

Metrics: `truncation_error` (mean L2 to the reference solution from the same noise), `truncation_rmse`, `fd`
(Fréchet distance to the dataset in pixel space), `fid` (in the `eval.features` space: LeNet or Inception), and
`fd_reference` / `fid_reference` for the reference solution (the floor that more NFE approaches).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fewstep.data.seeds import rank_batches
from fewstep.errors import FewstepError
from fewstep.metrics.features import PixelFeatures, build_features
from fewstep.metrics.frechet import FeatureStats, frechet_distance
from fewstep.utils.storage import atomic_write_bytes, content_key

log = logging.getLogger(__name__)


def dataset_statistics(features, images: torch.Tensor, key_parts: dict, cache_dir: Path, batch: int = 256):
    """(mean, cov, count) of the dataset's features, cached as npz per (dataset, extractor, resolution)."""
    path = Path(cache_dir) / "refstats" / f"{content_key(key_parts)}.npz"
    try:
        with np.load(path) as cached:
            return cached["mu"], cached["sigma"], int(cached["count"])
    except FileNotFoundError:
        pass
    except Exception as err:
        log.warning("damaged reference statistics %s (%s): computing them again", path, err)
    stats = FeatureStats(features.dim if hasattr(features, "dim") else features(images[:1]).shape[1])
    with torch.no_grad():
        for chunk in images.split(batch):
            stats.update(features(chunk))
    mu, sigma = stats.mean_cov()
    save_statistics(path, mu, sigma, stats.count)
    return mu, sigma, stats.count


def save_statistics(path: Path, mu: np.ndarray, sigma: np.ndarray, count: int) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, mu=mu, sigma=sigma, count=count)
    atomic_write_bytes(path, buffer.getvalue())


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Published statistics (EDM / GITS / pytorch-fid npz with `mu` and `sigma`)."""
    try:
        with np.load(path) as data:
            return data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except FileNotFoundError as err:
        raise FewstepError(f"eval.reference_stats: no file {path}") from err
    except KeyError as err:
        raise FewstepError(f"eval.reference_stats {path} has no {err} array (needs mu and sigma)") from err
    except (OSError, ValueError) as err:
        raise FewstepError(f"eval.reference_stats {path} is not a readable npz file ({err})") from err


def prepare_features(eval_cfg, dataset):
    """The feature extractor and the published statistics, if any, checked before any sampling is spent."""
    features = build_features(eval_cfg.features.name, dataset.name, eval_cfg.features.get("path"))
    published = None
    if eval_cfg.get("reference_stats"):
        published = load_statistics(eval_cfg.reference_stats)
        dim = features.dim if features.name != "pixels" else pixels_dim(dataset)
        if published[0].shape != (dim,):
            raise FewstepError(
                f"eval.reference_stats has {published[0].shape[0]}-d statistics but eval/features={features.name} "
                f"gives {dim}-d features; published EDM/GITS statistics need eval/features=inception"
            )
    return features, published


class EvalSums:
    """One rank's sums; `vector()` and `from_vector()` pack them for a single all-reduce."""

    def __init__(self, pixel_dim: int, feature_dim: int):
        self.stats = {
            name: FeatureStats(dim)
            for name, dim in [
                ("fd", pixel_dim),
                ("fid", feature_dim),
                ("fd_reference", pixel_dim),
                ("fid_reference", feature_dim),
            ]
        }
        self.errors = torch.zeros(3, dtype=torch.float64)  # sum of L2 norms, sum of squares, element count

    def update(self, samples, reference, pixels, features) -> None:
        diff = (samples.double() - reference.double()).flatten(1)
        self.errors += torch.tensor(
            [diff.norm(dim=1).sum().item(), diff.pow(2).sum().item(), diff.numel()], dtype=torch.float64
        )
        for suffix, images in (("", samples), ("_reference", reference)):
            self.stats[f"fd{suffix}"].update(pixels(images))
            self.stats[f"fid{suffix}"].update(features(images))

    def vector(self) -> torch.Tensor:
        parts = [self.errors]
        for s in self.stats.values():
            parts += [torch.tensor([float(s.count)], dtype=torch.float64), s.total, s.outer.flatten()]
        return torch.cat(parts)

    def load_vector(self, vector: torch.Tensor) -> None:
        self.errors, offset = vector[:3].clone(), 3
        for s in self.stats.values():
            dim = s.total.numel()
            s.count = int(round(vector[offset].item()))
            s.total = vector[offset + 1 : offset + 1 + dim].clone()
            s.outer = vector[offset + 1 + dim : offset + 1 + dim + dim * dim].reshape(dim, dim).clone()
            offset += 1 + dim + dim * dim


def pixels_dim(dataset) -> int:
    return int(np.prod(dataset.shape))


def evaluate(trainer, seeds, run_store, reference_store, dataset, prepared, cache_dir, batch_size: int) -> dict | None:
    """All ranks: reduce their seeds; rank 0 returns the metrics (others None). `prepared` is
    `prepare_features(...)`."""
    device = trainer.strategy.root_device
    features, published = prepared
    features = features.to(device)
    pixels = PixelFeatures()
    sums = EvalSums(pixels_dim(dataset), features.dim if features.name != "pixels" else pixels_dim(dataset))
    mine = rank_batches(seeds, batch_size, trainer.global_rank, trainer.world_size)
    with torch.no_grad():
        for chunk in mine:
            chunk = chunk.tolist()
            samples, reference = run_store.load(chunk).to(device), reference_store.load(chunk).to(device)
            sums.update(samples, reference, pixels, features)
    sums.load_vector(trainer.strategy.reduce(sums.vector().to(device), reduce_op="sum").cpu())
    if not trainer.is_global_zero:
        return None
    identity = {"dataset": dataset.fingerprint(), "shape": list(dataset.shape)}
    data_pixels = dataset_statistics(pixels, dataset.images, {**identity, "features": "pixels"}, cache_dir)
    if published is not None:
        data_features = published
    else:
        data_features = dataset_statistics(
            features.cpu(), dataset.images, {**identity, "features": features.identity}, cache_dir
        )
    errors_l2, errors_sq, elements = sums.errors.tolist()
    metrics = {"truncation_error": errors_l2 / len(seeds), "truncation_rmse": (errors_sq / elements) ** 0.5}
    for name, stats in sums.stats.items():
        data = data_pixels if name.startswith("fd") else data_features
        metrics[name] = frechet_distance(*stats.mean_cov(), data[0], data[1])
    metrics["features"] = features.name
    return metrics
