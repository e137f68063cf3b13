"""Datasets (embedded, offline) and seed handling."""

from fewstep.data.embedded import ImageDataset, digits, gaussian, gaussian_parameters, mnist5k, no_data
from fewstep.data.seeds import rank_batches, seed_range, seeded_noise

__all__ = [
    "ImageDataset",
    "digits",
    "gaussian",
    "gaussian_parameters",
    "mnist5k",
    "no_data",
    "rank_batches",
    "seed_range",
    "seeded_noise",
]
