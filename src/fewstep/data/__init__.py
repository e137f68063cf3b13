"""Datasets (embedded, offline) and seed handling."""

from fewstep.data.embedded import ImageDataset, digits, gaussian, gaussian_parameters, mnist5k
from fewstep.data.seeds import rank_batches, seed_range, seeded_noise

__all__ = [
    "ImageDataset",
    "digits",
    "gaussian",
    "gaussian_parameters",
    "mnist5k",
    "rank_batches",
    "seed_range",
    "seeded_noise",
]
