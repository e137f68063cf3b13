"""What an evaluation asks for, as plain values (kept apart from the evaluation code, which loads torchmetrics)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalSettings:
    """What `eval` asks for, as plain values."""

    features: str = "auto"
    features_path: str | None = None
    features_allow_code: bool = False  # a TorchScript path outside the shipped weights runs code: opt-in
    reference_stats: str | None = None
    bootstrap: int = 25  # rounds for fid_std; 0: none
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # capped at the number of samples and of dataset images
    seed: int = 0  # of the bootstrap and KID subset generators
    save_npz: bool = False  # samples.npz: the scored images as uint8 N x H x W x C
