"""Trajectory geometry of diffusion sampling (Chen et al. 2023; GITS, Chen et al. ICML 2024): recording and measures."""

from fewstep.geometry.measures import (
    chord_deviation_curves,
    distance_to_final,
    effective_modes,
    mean_shift_step,
    pca_explained_variance,
    score_deviation,
    shape_similarity,
    turning_angles,
)
from fewstep.geometry.recording import Trajectories, load_trajectories, record_trajectories, stream_to_npz

__all__ = [
    "Trajectories",
    "chord_deviation_curves",
    "distance_to_final",
    "effective_modes",
    "load_trajectories",
    "mean_shift_step",
    "pca_explained_variance",
    "record_trajectories",
    "score_deviation",
    "shape_similarity",
    "stream_to_npz",
    "turning_angles",
]
