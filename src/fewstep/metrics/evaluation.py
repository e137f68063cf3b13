"""Distributed evaluation of sample shards, scored as the field scores them.

Every image set (the samples, a baseline's samples, the reference solution; and the dataset) is clipped and
quantised to 8 bits as EDM's `generate.py` writes PNGs (`metrics/quantize.py`) before any feature extractor; the
truncation error alone uses the raw samples. Each rank reduces its share of the seeds into torchmetrics states:
`FrechetInceptionDistance`'s float64 sums (pixels for `fd`, the `eval/features` space for `fid`) and
`KernelInceptionDistance`'s per-sample features, kept with their seeds (for KID and the bootstrap). The states are
synced across ranks (torchmetrics' all-gather) and rank 0 computes every distance with `metrics/frechet.py`, which is
exact to 1e-12 where torchmetrics' own formula errs by 2e-5 on rank-deficient covariances.

Metrics (flat keys; `baseline_` in front for a baseline schedule's samples):
- `truncation_error` (mean L2 to the reference solution from the same noise; raw samples), its standard error
  `truncation_error_std`, and `truncation_rmse`;
- `fid`, `fd`: Fréchet distance to the dataset's (or published) statistics in the feature / pixel space;
- `fid_std`: the standard deviation of `fid` over bootstrap resamples of the samples (same size, with replacement,
  a fixed generator; the dataset's statistics held fixed): the standard error of `fid` at this sample count;
- `kid`, `kid_std`: KID as torchmetrics computes it (unbiased MMD with a cubic polynomial kernel, mean and standard
  deviation over random subsets), with the subsets drawn from a fixed generator over features in seed order;
- `fid_vs_reference`, `fd_vs_reference`: the distance between the samples and the reference solution from the
  same seeds: the solver's own error, free of the model's;
- `fid_reference`, `fid_reference_std`, `kid_reference`, `kid_reference_std`, `fd_reference`: the reference
  solution against the dataset: the floor that more NFE approaches.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from fewstep.errors import FewstepError
from fewstep.metrics.features import PixelFeatures, build_features
from fewstep.metrics.frechet import FeatureStats, bootstrap_frechet, frechet_distance, mean_cov
from fewstep.metrics.quantize import as_scored
from fewstep.metrics.settings import EvalSettings
from fewstep.utils.cache import CHECKSUM, read_entry, require, seal
from fewstep.utils.storage import atomic_write_bytes, content_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """The feature extractor (None: no feature distance at all) and the published statistics, if any."""

    features: nn.Module | None
    published: tuple[np.ndarray, np.ndarray] | None


# ----------------------------------------------------------------------------------------------------------------
# Dataset statistics: cached, checked before use


@dataclass(frozen=True)
class DataStats:
    mu: np.ndarray
    cov: np.ndarray
    count: int
    features: torch.Tensor | None = None  # per image (for KID), where kept


def save_statistics(path: Path, mu: np.ndarray, sigma: np.ndarray, count: int, features=None) -> None:
    """An npz of mu, sigma and count (what EDM/GITS publish), plus per-image features where kept, sealed with the
    checksum of `utils.cache` (checked by `read_statistics`)."""
    payload = {"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64), "count": int(count)}
    if features is not None:
        payload["features"] = np.asarray(features, np.float32)
    sealed = seal(payload)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in sealed.items()})
    atomic_write_bytes(path, buffer.getvalue())


def _load_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as stored:
        entry = {name: stored[name] for name in stored.files}
    for name in ("count", CHECKSUM):  # scalars, as they were sealed
        if name in entry:
            entry[name] = entry[name].item()
    return entry


def _check_statistics(dim: int):
    def check(entry: dict) -> None:
        mu, sigma, count = entry.get("mu"), entry.get("sigma"), entry.get("count")
        require(isinstance(mu, np.ndarray) and isinstance(sigma, np.ndarray), "no mu and sigma")
        require(mu.shape == (dim,) and sigma.shape == (dim, dim),
                f"shapes {mu.shape}/{sigma.shape}, expected ({dim},)/({dim}, {dim})")  # fmt: skip
        require(isinstance(count, int) and count >= 2, f"count {count!r}")
        require(bool(np.isfinite(mu).all() and np.isfinite(sigma).all()), "non-finite values")
        if "features" in entry:
            require(entry["features"].shape == (count, dim), "per-image features of the wrong shape")

    return check


def read_statistics(path: Path, dim: int, need_features: bool) -> DataStats | None:
    """The cached statistics if the entry is whole and sound (checksum, shapes, finite); None means recompute."""
    entry = read_entry(path, _load_npz, _check_statistics(dim), "dataset statistics", "computing them again")
    if entry is None or (need_features and "features" not in entry):  # kept without per-image features: compute
        return None
    features = torch.from_numpy(entry["features"]) if "features" in entry else None
    return DataStats(entry["mu"], entry["sigma"], entry["count"], features)


def dataset_statistics(
    extractor: nn.Module, dim: int, images: torch.Tensor, key_parts: dict, cache_dir: Path, keep_features: bool,
    batch: int = 256, label: str = "dataset statistics",
) -> DataStats:  # fmt: skip
    """Mean, covariance (and per-image features) of the dataset's quantised images in a feature space, cached as
    npz per (dataset, extractor, resolution) and checked before use."""
    path = Path(cache_dir) / "refstats" / f"{content_key(key_parts)}.npz"
    cached = read_statistics(path, dim, keep_features)
    if cached is not None:
        log.info("%s reused from %s (%d images)", label, path, cached.count)
        return cached
    stats, kept = FeatureStats(dim), []
    with torch.no_grad():
        for chunk in progress(images.split(batch), f"{label}: {len(images)} images"):
            features = extractor(as_scored(chunk)).reshape(len(chunk), -1).float()
            stats.update(features)
            if keep_features:
                kept.append(features.cpu())
    mu, sigma = stats.mean_cov()
    features = torch.cat(kept) if keep_features else None
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise FewstepError(f"the {label} are not finite: the feature extractor returned NaN/inf on the dataset")
    save_statistics(path, mu, sigma, stats.count, None if features is None else features.numpy())
    log.info("%s computed over %d images, cached in %s", label, stats.count, path)
    return DataStats(mu, sigma, stats.count, features)


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Published statistics (EDM / GITS / pytorch-fid npz with `mu` and `sigma`), checked: shapes and finite."""
    from fewstep.metrics.settings import check_statistics_file

    try:
        check_statistics_file(path)
        with np.load(path, allow_pickle=False) as data:
            absent = [name for name in ("mu", "sigma") if name not in data.files]
            if absent:
                raise FewstepError(f"eval.reference_stats {path} has arrays {sorted(data.files)}, but not "
                                   f"{' and '.join(absent)} (a statistics npz holds mu and sigma)")  # fmt: skip
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except FileNotFoundError as err:
        raise FewstepError(f"eval.reference_stats: no file {path}") from err
    except FewstepError:
        raise
    except (OSError, ValueError) as err:
        raise FewstepError(f"eval.reference_stats {path} is not a readable npz file ({err})") from err
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise FewstepError(f"eval.reference_stats {path}: mu {mu.shape} and sigma {sigma.shape} do not match")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise FewstepError(f"eval.reference_stats {path} holds NaN or inf values")
    return mu, sigma


def has_images(dataset) -> bool:
    return len(dataset.images) > 0


def pixels_dim(dataset) -> int:
    return int(np.prod(dataset.shape))


def feature_dim(features: nn.Module, dataset) -> int:
    return pixels_dim(dataset) if features.name == "pixels" else int(features.dim)


def prepare_features(settings: EvalSettings, dataset) -> Prepared:
    """The feature extractor and the published statistics, checked before any sampling is spent.

    Without dataset images (a model whose data is not here, e.g. EDM CIFAR-10 or Stable Diffusion) the FID needs
    published statistics (`eval.reference_stats`); with neither, only the truncation error is measured."""
    if not has_images(dataset) and not settings.reference_stats:
        log.warning("dataset %s has no images here and eval.reference_stats is not set: no FD/FID, only the "
                    "truncation error is measured", dataset.name)  # fmt: skip
        return Prepared(None, None)
    features = build_features(settings.features, dataset.name, settings.features_path, settings.features_allow_code)
    published = None
    if settings.reference_stats:
        published = load_statistics(settings.reference_stats)
        dim = feature_dim(features, dataset)
        if published[0].shape != (dim,):
            raise FewstepError(
                f"eval.reference_stats has {published[0].shape[0]}-d statistics but eval/features={features.name} "
                f"gives {dim}-d features; published EDM/GITS statistics need eval/features=inception"
            )
    return Prepared(features, published)


# ----------------------------------------------------------------------------------------------------------------
# torchmetrics states


class ScoredFeatures(nn.Module):
    """A feature extractor as torchmetrics' `feature=`: images are scored as EDM's PNGs first. The last batch's
    features are kept, so the FID and KID states of one image set extract them once."""

    def __init__(self, extractor: nn.Module, dim: int):
        super().__init__()
        self.extractor = extractor
        self.num_features = int(dim)
        self._last: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._last[0] is images:
            return self._last[1]
        features = self.extractor(as_scored(images)).reshape(len(images), -1).float()
        self._last = (images, features)
        return features


def _fid_states(feature: nn.Module) -> FrechetInceptionDistance:
    return FrechetInceptionDistance(feature=feature, reset_real_features=False, sync_on_compute=False)


class SeededKID(KernelInceptionDistance):
    """torchmetrics' KID that keeps each sample's seed: after the all-gather the features are put in seed
    order and subsets come from a fixed generator, so 1 or N processes and a resumed run give the same KID."""

    def __init__(self, feature: nn.Module, subsets: int, subset_size: int, seed: int):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*will save all extracted features.*")
            super().__init__(feature=feature, subsets=subsets, subset_size=subset_size, sync_on_compute=False)
        self.add_state("seeds", [], dist_reduce_fx=None)
        self.generator_seed = seed

    def update(self, imgs: torch.Tensor, real: bool = False, seeds: torch.Tensor | None = None) -> None:
        super().update(imgs, real)
        if not real:
            self.seeds.append(seeds.to(self.device, torch.long))

    def pack(self) -> None:
        """One tensor per rank in each list state (an all-gather per list element needs equal lengths)."""
        dim = self.inception.num_features
        self.fake_features = [dim_zero_cat(self.fake_features)] if self.fake_features else [
            torch.zeros(0, dim, device=self.device)]  # fmt: skip
        self.seeds = [dim_zero_cat(self.seeds)] if self.seeds else [
            torch.zeros(0, dtype=torch.long, device=self.device)]  # fmt: skip

    def features_in_seed_order(self) -> torch.Tensor:
        features, seeds = dim_zero_cat(self.fake_features), dim_zero_cat(self.seeds)
        return features[seeds.argsort()].double().cpu()

    def against(self, real_features: torch.Tensor) -> tuple[float, float]:
        """(KID, its std over subsets) of the synced samples against `real_features`."""
        kept = self.real_features, self.fake_features, self.seeds
        self.real_features, self.fake_features = [real_features.double().cpu()], [self.features_in_seed_order()]
        self.seeds = [torch.arange(len(self.fake_features[0]))]
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.generator_seed)
                mean, std = KernelInceptionDistance.compute(self)  # torchmetrics' subsets and unbiased MMD
        finally:
            self.real_features, self.fake_features, self.seeds = kept
        return float(mean), float(std)


class TruncationError(Metric):
    """Sums of per-sample L2 errors (and their squares) to the reference solution, on the raw samples."""

    full_state_update = False

    def __init__(self):
        super().__init__(sync_on_compute=False)
        for name in ("count", "l2", "l2_squared", "squared", "elements"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, samples: torch.Tensor, reference: torch.Tensor) -> None:
        diff = (samples.double() - reference.double()).flatten(1)
        norms = diff.norm(dim=1)
        self.count += len(norms)
        self.l2 += norms.sum()
        self.l2_squared += norms.square().sum()
        self.squared += diff.square().sum()
        self.elements += diff.numel()

    def compute(self) -> dict:
        n = float(self.count)
        mean = float(self.l2) / n
        variance = max(float(self.l2_squared) / n - mean * mean, 0.0) * n / max(n - 1, 1)
        return {
            "truncation_error": mean,
            "truncation_error_std": (variance / n) ** 0.5,  # the standard error of the mean
            "truncation_rmse": (float(self.squared) / float(self.elements)) ** 0.5,
        }


class SetScores:
    """One image set's states: pixel sums (`fd`), feature sums and per-sample features (`fid`, KID, bootstrap),
    and, for a set judged against the reference solution, the truncation sums."""

    def __init__(self, pixels: nn.Module | None, features: nn.Module | None, kid: dict | None, device,
                 truncation: bool):  # fmt: skip
        self.pixels = _fid_states(pixels).to(device) if pixels is not None else None
        self.features = _fid_states(features).to(device) if features is not None else None
        self.kid = SeededKID(features, **kid).to(device) if features is not None and kid else None
        self.truncation = TruncationError().to(device) if truncation else None

    def metrics(self):
        return [m for m in (self.pixels, self.features, self.kid, self.truncation) if m is not None]

    def update(self, images: torch.Tensor, seeds: torch.Tensor, reference: torch.Tensor | None = None) -> None:
        if self.truncation is not None and reference is not None:
            self.truncation.update(images, reference)
        for states in (self.pixels, self.features):
            if states is not None:
                states.update(images, real=False)
        if self.kid is not None:
            self.kid.update(images, real=False, seeds=seeds.to(images.device))

    def sync(self) -> None:
        """Collective: every rank calls it, in the same order."""
        if self.kid is not None:
            self.kid.pack()
        for metric in self.metrics():
            metric.sync()


def _mean_cov(states) -> tuple[np.ndarray, np.ndarray]:
    return mean_cov(int(states.fake_features_num_samples), states.fake_features_sum, states.fake_features_cov_sum)


def eval_batches(seeds: list[int], batch_size: int, rank: int, world_size: int) -> list[torch.Tensor]:
    """Fixed batches of `batch_size` seeds, dealt round-robin to the ranks: every image passes the feature
    extractor in the same batch whatever the number of processes, so its features are bit-identical."""
    batches = torch.as_tensor(seeds, dtype=torch.long).split(int(batch_size))
    return list(batches[rank::world_size])


def progress(iterable, description: str, rank: int = 0):
    """A labelled progress bar with a time estimate (rank 0, on a terminal or in a log)."""
    from tqdm.auto import tqdm

    items = list(iterable)
    return tqdm(items, desc=description, unit="batch", disable=rank != 0 or len(items) < 2, leave=False)


@dataclass(frozen=True)
class Ranks:
    """Which process this is among how many, and where it computes (under DDP the process group is already made:
    the metrics' states are summed over it)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def evaluate(
    ranks: Ranks, seeds: list[int], stores: dict, reference_store, dataset, prepared: Prepared, cache_dir,
    batch_size: int, settings: EvalSettings,
) -> dict | None:  # fmt: skip
    """All ranks: reduce their seeds; rank 0 returns the metrics (others None).

    `stores` maps a key prefix ("" for the run's samples, "baseline_" for a baseline's) to a ShardStore;
    `reference_store` holds the reference solution from the same seeds (None: no truncation error)."""
    device = ranks.device
    extractor = prepared.features.to(device).eval() if prepared.features is not None else None
    with_data = has_images(dataset)
    feature_space = ScoredFeatures(extractor, feature_dim(extractor, dataset)) if extractor is not None else None
    pixel_space = ScoredFeatures(PixelFeatures(), pixels_dim(dataset)) if with_data else None
    if extractor is not None and extractor.name == "pixels":
        pixel_space = None  # `fd` is `fid` then
    kid = None  # the per-sample feature store: KID against the dataset's images, and the bootstrap
    if feature_space is not None:
        size = min(settings.kid_subset_size, len(seeds), len(dataset.images) if with_data else len(seeds))
        kid = {"subsets": settings.kid_subsets, "subset_size": size, "seed": settings.seed}
    with_reference = reference_store is not None
    sets = {prefix: SetScores(pixel_space, feature_space, kid, device, with_reference) for prefix in stores}
    if with_reference:
        sets["reference"] = SetScores(pixel_space, feature_space, kid, device, truncation=False)
    rank, world = ranks.rank, ranks.world_size
    mine = eval_batches(seeds, batch_size, rank, world)
    space = extractor.name if extractor is not None else "no features"
    with torch.no_grad():
        for chunk in progress(mine, f"scoring {len(sets)} x {len(seeds)} images ({space})", rank):
            keys = chunk.tolist()
            reference = reference_store.load(keys).to(device) if with_reference else None
            for prefix, store in stores.items():
                sets[prefix].update(store.load(keys).to(device), chunk, reference)
            if with_reference:
                sets["reference"].update(reference, chunk)
    for name in sorted(sets):  # the same order on every rank
        sets[name].sync()
    if not ranks.is_main:
        return None
    identity = {"dataset": dataset.fingerprint(), "shape": list(dataset.shape), "quantized": "edm-uint8"}
    data_pixels = data_features = None
    if pixel_space is not None:
        data_pixels = dataset_statistics(pixel_space.extractor, pixel_space.num_features, dataset.images,
                                         {**identity, "features": "pixels"}, cache_dir, keep_features=False,
                                         label="dataset statistics (pixels)")  # fmt: skip
    if prepared.published is not None:
        data_features = DataStats(*prepared.published, count=0)
    elif feature_space is not None and with_data:
        data_features = dataset_statistics(extractor, feature_space.num_features, dataset.images,
                                           {**identity, "features": extractor.identity}, cache_dir,
                                           keep_features=kid is not None,
                                           label=f"dataset statistics ({space})")  # fmt: skip
    metrics = {}
    reference = sets.get("reference")
    for name, scores in sets.items():
        prefix, suffix = ("", "_reference") if name == "reference" else (name, "")
        if scores.truncation is not None:
            metrics.update({f"{prefix}{k}": v for k, v in scores.truncation.compute().items()})
        metrics.update(_distances(scores, reference if name != "reference" else None, data_pixels, data_features,
                                  settings, prefix, suffix))  # fmt: skip
    if pixel_space is None and extractor is not None and extractor.name == "pixels":  # the feature space is pixels
        metrics.update({k.replace("fid", "fd"): v for k, v in metrics.items()
                        if "fid" in k and not k.endswith("_std")})  # fmt: skip
    if extractor is not None:
        metrics["features"] = extractor.name
    if "kid" in metrics:
        metrics["kid_subset_size"] = kid["subset_size"]
    return metrics


def _distances(scores: SetScores, reference: SetScores | None, data_pixels, data_features, settings, prefix, suffix):
    """Every distance of one image set: to the data (pixels, features; bootstrap; KID) and to the reference."""
    out = {}
    pixels = _mean_cov(scores.pixels) if scores.pixels is not None else None
    features = _mean_cov(scores.features) if scores.features is not None else None
    if data_pixels is not None and pixels is not None:
        out[f"{prefix}fd{suffix}"] = frechet_distance(*pixels, data_pixels.mu, data_pixels.cov)
    if data_features is not None and features is not None:
        out[f"{prefix}fid{suffix}"] = frechet_distance(*features, data_features.mu, data_features.cov)
        if settings.bootstrap > 1 and scores.kid is not None:
            spread = bootstrap_frechet(scores.kid.features_in_seed_order(), data_features.mu, data_features.cov,
                                       settings.bootstrap, seed=settings.seed)  # fmt: skip
            out[f"{prefix}fid{suffix}_std"] = float(spread.std(ddof=1))
        if scores.kid is not None and data_features.features is not None:
            out[f"{prefix}kid{suffix}"], out[f"{prefix}kid{suffix}_std"] = scores.kid.against(data_features.features)
    if reference is not None:
        if pixels is not None:
            out[f"{prefix}fd_vs_reference"] = frechet_distance(*pixels, *_mean_cov(reference.pixels))
        if features is not None:
            out[f"{prefix}fid_vs_reference"] = frechet_distance(*features, *_mean_cov(reference.features))
    return out
