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
    """The feature extractor and the published statistics, if any, checked before any sampling is spent.

    Without dataset images (a model whose data is not here, e.g. EDM CIFAR-10 or Stable Diffusion) the FID needs
    published statistics (`eval.reference_stats`); with neither, only the truncation error is measured."""
    if not has_images(dataset) and not eval_cfg.get("reference_stats"):
        log.warning("dataset %s has no images here and eval.reference_stats is not set: no FD/FID, only the "
                    "truncation error is measured", dataset.name)  # fmt: skip
        return None, None
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


def has_images(dataset) -> bool:
    return len(dataset.images) > 0


class EvalSums:
    """One rank's sums; `vector()` and `from_vector()` pack them for a single all-reduce. A dimension of None
    leaves that distance out (no pixel FD without dataset images, no FID without any reference statistics)."""

    def __init__(self, pixel_dim: int | None, feature_dim: int | None, with_reference: bool = True):
        dims = {"fd": pixel_dim, "fid": feature_dim}
        self.stats = {
            f"{name}{suffix}": FeatureStats(dim)
            for suffix in (("", "_reference") if with_reference else ("",))
            for name, dim in dims.items()
            if dim is not None
        }
        self.errors = torch.zeros(3, dtype=torch.float64)  # sum of L2 norms, sum of squares, element count

    def update(self, samples, reference, pixels, features) -> None:
        if reference is not None:
            diff = (samples.double() - reference.double()).flatten(1)
            self.errors += torch.tensor(
                [diff.norm(dim=1).sum().item(), diff.pow(2).sum().item(), diff.numel()], dtype=torch.float64
            )
        for suffix, images in (("", samples), ("_reference", reference)):
            if images is None:
                continue
            for name, features_of in (("fd", pixels), ("fid", features)):
                if f"{name}{suffix}" in self.stats:
                    self.stats[f"{name}{suffix}"].update(features_of(images))

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
    features = features.to(device) if features is not None else None
    pixels = PixelFeatures()
    with_data = has_images(dataset)
    feature_dim = None if features is None else features.dim if features.name != "pixels" else pixels_dim(dataset)
    sums = EvalSums(pixels_dim(dataset) if with_data else None, feature_dim, reference_store is not None)
    mine = rank_batches(seeds, batch_size, trainer.global_rank, trainer.world_size)
    with torch.no_grad():
        for chunk in mine:
            chunk = chunk.tolist()
            samples = run_store.load(chunk).to(device)
            reference = reference_store.load(chunk).to(device) if reference_store is not None else None
            sums.update(samples, reference, pixels, features)
    sums.load_vector(trainer.strategy.reduce(sums.vector().to(device), reduce_op="sum").cpu())
    if not trainer.is_global_zero:
        return None
    identity = {"dataset": dataset.fingerprint(), "shape": list(dataset.shape)}
    data_pixels = None
    if with_data:
        data_pixels = dataset_statistics(pixels, dataset.images, {**identity, "features": "pixels"}, cache_dir)
    if published is not None or features is None:
        data_features = published
    else:
        data_features = dataset_statistics(
            features.cpu(), dataset.images, {**identity, "features": features.identity}, cache_dir
        )
    errors_l2, errors_sq, elements = sums.errors.tolist()
    metrics = {}
    if reference_store is not None:
        metrics = {"truncation_error": errors_l2 / len(seeds), "truncation_rmse": (errors_sq / elements) ** 0.5}
    for name, stats in sums.stats.items():
        data = data_pixels if name.startswith("fd") else data_features
        metrics[name] = frechet_distance(*stats.mean_cov(), data[0], data[1])
    if features is not None:
        metrics["features"] = features.name
    return metrics
