"""What an evaluation asks for, as plain values (kept apart from the evaluation code, which loads torchmetrics)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fewstep.errors import FewstepError


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


def check_statistics_file(path: str | Path) -> None:
    """The file of `eval.reference_stats` exists and is an npz archive (checked with the config, before loading)."""
    from fewstep.utils.storage import npz_problem

    if not Path(path).is_file():
        raise FewstepError(f"eval.reference_stats: no file {path}")
    problem = npz_problem(path)
    if problem:
        raise FewstepError(f"eval.reference_stats {path} cannot be read: {problem}; give the npz with mu and "
                           "sigma (EDM's fid-refs, pytorch-fid --save-stats)")  # fmt: skip
