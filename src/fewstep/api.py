"""The public Python API: few-step sampling, schedule search and scoring for any denoiser `D(x, sigma)`.

    import fewstep
    schedule = fewstep.search_schedule(my_denoiser, shape=(1, 28, 28), nfe=5, solver="ipndm")
    x = fewstep.sample(my_denoiser, solver="ipndm", sigmas=schedule, seeds=range(64))
    scores = fewstep.evaluate(x, data=my_images)

The same pieces the command line runs (solvers, `Sampler`, GITS's search, the EDM-style scoring), without Hydra
or Lightning: everything runs in this process. Sample `k` depends on its seed only, never on the batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from fewstep.errors import FewstepError
from fewstep.models.denoiser import device_of, traits, weights_fingerprint
from fewstep.schedules.schedule import Schedule
from fewstep.solvers.sampler import Sampler  # noqa: F401 - fewstep.Sampler
from fewstep.utils.options import MAX_SEED, integer


def _shape(denoiser, shape) -> tuple[int, ...]:
    declared = traits(denoiser)
    own = declared.sample_shape or declared.image_shape
    if shape and own and tuple(int(d) for d in shape) != own:
        raise FewstepError(f"shape={tuple(shape)}, but the denoiser samples {own} (its sample_shape or image_shape); "
                           f"leave shape out or pass {own}")  # fmt: skip
    shape = shape or own
    if not shape:
        raise FewstepError("give shape=(C, H, W): the denoiser declares no sample_shape or image_shape")
    return tuple(int(d) for d in shape)


def _seeds(seeds) -> torch.Tensor:
    """Seeds as int64, each an integer in [0, 2**63): a float seed would be truncated into another sample's."""
    import operator

    def as_int(seed):
        try:
            return None if isinstance(seed, bool) else operator.index(seed)  # ints, numpy and torch integers
        except TypeError:
            return None

    values = list(seeds)
    ints = [as_int(s) for s in values]
    bad = [s for s, i in zip(values, ints, strict=True) if i is None or not 0 <= i <= MAX_SEED]
    if bad or not values:
        raise FewstepError(f"seeds must be integers in [0, 2**63), got {bad[:5] if bad else 'none'}")
    return torch.tensor(ints, dtype=torch.long)


def _afs_prior(afs_prior, data):
    if afs_prior is None or callable(afs_prior):
        return afs_prior
    from fewstep.solvers import make_afs_prior

    if data is not None:
        data = checked_images("afs_data", data, "drop those images", low=1)
    return make_afs_prior(str(afs_prior), data)


def checked_images(name: str, images, fix: str, low: int = 2) -> torch.Tensor:
    """`images` as a float tensor of N >= `low` images (N, C, H, W), every value finite; otherwise one error that
    names the rows (samples: the positions of their seeds) and what to do (`fix`)."""
    if not isinstance(images, torch.Tensor):
        try:
            images = torch.as_tensor(images)
        except (TypeError, ValueError, RuntimeError) as err:
            raise FewstepError(f"{name} must be a tensor of images (N, C, H, W), got {type(images).__name__}") from err
    if images.ndim != 4:
        raise FewstepError(f"{name} must be images (N, C, H, W) in [-1, 1], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        hint = " (uint8 images: x.float() / 127.5 - 1)" if images.dtype == torch.uint8 else ""
        raise FewstepError(f"{name} must be floating-point images in [-1, 1], got {images.dtype}{hint}")
    if len(images) < low:
        raise FewstepError(f"{name} holds {len(images)} images; it needs at least {low}")
    bad = (~torch.isfinite(images.detach()).flatten(1).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f", ... ({len(bad)} rows)" if len(bad) > 10 else "")
        rows = "row" if len(bad) == 1 else "rows"
        raise FewstepError(f"{name} {rows} {shown} (of {len(images)}) hold NaN or inf; {fix}")
    return images


def _device(denoiser, device) -> torch.device:
    return torch.device(device) if device is not None else device_of(denoiser)


def sample(
    denoiser,
    solver: str = "ipndm",
    sigmas=None,
    seeds: Iterable[int] = range(16),
    shape: tuple[int, ...] | None = None,
    *,
    afs_prior=None,
    afs_data: torch.Tensor | None = None,
    batch_size: int = 64,
    device=None,
    decode: bool = True,
    **options,
) -> torch.Tensor:
    """Samples (one per seed, in seed order) from `solver` on `sigmas`, started from per-seed noise at sigmas[0].

    `sigmas`: a 1-D decreasing list or tensor (a final 0 denoises) or a `Schedule` from `search_schedule`.
    `afs_prior`: None, "gaussian" (moments of `afs_data`, else N(0, 0.5^2)), "reference" or a closed-form
    denoiser answering the first call (AFS: one NFE fewer). Solver options (max_order=3, ...) are checked
    against the solver's signature. A latent model's samples are decoded unless decode=False."""
    from fewstep.data.seeds import seeded_noise
    from fewstep.models.denoiser import decode as decoded
    from fewstep.schedules import validate_sigmas

    if sigmas is None:
        raise FewstepError("give sigmas=[...] (e.g. fewstep.schedules.polynomial(10, 0.002, 80.0)) or a Schedule")
    if isinstance(sigmas, Schedule):
        sigmas = sigmas.sigmas
    declared = traits(denoiser)
    low, high = declared.sigma_range or (None, None)
    sigmas = validate_sigmas(torch.as_tensor(sigmas, dtype=torch.float64).tolist(), low, high)
    sampler = Sampler.of(solver, sigmas, _afs_prior(afs_prior, afs_data), **options)
    shape, device = _shape(denoiser, shape), _device(denoiser, device)
    seeds = _seeds(seeds)
    out = []
    with torch.no_grad():
        for chunk in seeds.split(integer("batch_size", batch_size, 1)):
            x = sampler(denoiser, seeded_noise(chunk, shape).to(device), chunk)
            if not bool(torch.isfinite(x).all()):
                raise FewstepError(f"non-finite samples for seeds {int(chunk[0])}..{int(chunk[-1])}: the denoiser "
                                   "returned NaN/inf (check its sigma range)")  # fmt: skip
            out.append(decoded(denoiser, x) if decode and declared.decodes else x)
    return torch.cat(out)


def search_schedule(
    denoiser,
    *,
    shape: tuple[int, ...] | None = None,
    nfe: int = 5,
    solver: str = "ipndm",
    method: str = "gits",
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    afs="auto",
    afs_prior="gaussian",
    afs_data: torch.Tensor | None = None,
    denoise_to_zero: bool = False,
    batch_size: int = 64,
    device=None,
    cache_dir: str | Path | None = None,
    cache_key: str | None = None,
    solver_options: dict | None = None,
    **settings,
) -> Schedule:
    """A schedule searched for `denoiser` and `solver` at `nfe` denoiser evaluations by any registered search
    (`fewstep.schedules.searches`). `method="gits"`: teacher trajectories on a fine grid, a one-step cost matrix,
    dynamic programming (`settings` are GITS's, e.g. num_warmup=256, coeff=1.15, grid_size=61, metric="dev").
    `method="oss"`: the solver-aware search, a DP over `solver`'s own states on the same grid (`settings` as
    `conf/schedule/oss.yaml`, e.g. num_warmup=32). `.sigmas` go straight into `sample(...)`.

    With `cache_dir`, the searches are cached (checksummed, checked on reading); the denoiser is identified by its
    weights, or by `cache_key` for a callable without any."""
    from fewstep.models.denoiser import inside_range
    from fewstep.schedules.registry import get_search
    from fewstep.schedules.search_cache import SearchCache
    from fewstep.schedules.searches import SearchContext, find_schedule, local_warmup
    from fewstep.solvers import check_options, get_solver, plan_steps

    get_search(method)  # an unknown method is one error naming the searches there are
    spec = get_solver(solver)
    options = check_options(spec, dict(solver_options or {}))
    plan = plan_steps(spec, int(nfe), afs, bool(denoise_to_zero))
    shape, device = _shape(denoiser, shape), _device(denoiser, device)
    batch_size = integer("batch_size", batch_size, 1)
    declared = traits(denoiser)
    if declared.sigma_range is not None and not inside_range(sigma_min, sigma_max, declared.sigma_range):
        low, high = declared.sigma_range
        raise FewstepError(f"the denoiser was trained for sigma in [{low:.6g}, {high:.6g}]; pass sigma_min and "
                           "sigma_max inside that range")  # fmt: skip
    prior = _afs_prior(afs_prior, afs_data) if plan.afs else None
    cache = None
    if cache_dir is not None:
        key = cache_key or weights_fingerprint(denoiser)
        if key is None:
            raise FewstepError("cache_dir needs cache_key='...' naming this denoiser (it has no weights to hash)")
        cache = SearchCache.for_search(cache_dir, method, {"model": key}, shape)
    context = SearchContext(
        Sampler(spec, [sigma_max, sigma_min], options, prior), denoiser, shape, float(sigma_min), float(sigma_max),
        plan, {"solver": spec.name, "options": options, "afs_prior": type(prior).__name__}, cache=cache,
        warmup=local_warmup(denoiser, shape, batch_size, device), place=lambda: device,
    )  # fmt: skip
    found = find_schedule(method, settings, context)
    return Schedule(found.sigmas, {**found.record, "plan": plan.describe(), "solver": spec.name, "nfe": plan.nfe})


class _InMemory:
    """A sample store over tensors held in memory (what `metrics.evaluation.evaluate` reads shards through)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def load(self, keys: list[int]) -> torch.Tensor:
        return self.images[keys]


def evaluate(
    samples: torch.Tensor,
    data=None,
    *,
    reference: torch.Tensor | None = None,
    features: str = "auto",
    features_path: str | None = None,
    reference_stats: str | None = None,
    bootstrap: int = 25,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 256,
    cache_dir: str | Path | None = None,
    device="cpu",
) -> dict:
    """Scores as the command line computes them: images clipped and quantised to uint8 as EDM's `fid.py` sees
    them, then FD in pixels, FID/KID in a feature space (with `fid_std` from a bootstrap and `kid_std`), and with
    `reference` (a high-NFE solution from the same seeds) the truncation error and `fid_vs_reference`.

    `samples` and `reference`: (N, C, H, W) in [-1, 1]. `data`: the dataset's images (a tensor) or an
    `ImageDataset`; without it, `reference_stats` (an npz with mu and sigma) gives the FID."""
    import tempfile

    from fewstep.data import ImageDataset
    from fewstep.metrics.evaluation import Ranks, prepare_features
    from fewstep.metrics.evaluation import evaluate as evaluate_stores
    from fewstep.metrics.settings import EvalSettings

    samples = checked_images("samples", samples, "re-sample those seeds, or leave those rows out (a NaN image has "
                             "no score; EDM's fid.py would quantise it as if it were valid)")  # fmt: skip
    if reference is not None:
        reference = checked_images("reference", reference, "re-run the reference solution for those seeds")
        if reference.shape != samples.shape:
            raise FewstepError(f"reference has shape {tuple(reference.shape)}, the samples {tuple(samples.shape)} "
                               "(one reference per sample, from the same seeds)")  # fmt: skip
    if data is None:
        dataset = ImageDataset("data", torch.empty(0, *samples.shape[1:]))
    elif isinstance(data, ImageDataset):
        checked_images("data", data.images, "leave those images out of the dataset")
        dataset = data
    else:
        dataset = ImageDataset("data", checked_images("data", data, "leave those images out").float())
    if dataset.shape and tuple(samples.shape[1:]) != dataset.shape:
        raise FewstepError(f"samples are {tuple(samples.shape[1:])} but the data {dataset.shape}")
    settings = EvalSettings(features=features, features_path=features_path, reference_stats=reference_stats,
                            bootstrap=bootstrap, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size)  # fmt: skip
    prepared = prepare_features(settings, dataset)
    seeds = list(range(len(samples)))
    with tempfile.TemporaryDirectory() as scratch:
        return evaluate_stores(Ranks(device=torch.device(device)), seeds, {"": _InMemory(samples.cpu())},
                               _InMemory(reference.cpu()) if reference is not None else None, dataset, prepared,
                               Path(cache_dir) if cache_dir else Path(scratch), batch_size, settings)  # fmt: skip
