"""Metrics: Fréchet distance from streaming statistics, feature maps (pixels, LeNet, Inception)."""

from fewstep.metrics.features import build_features
from fewstep.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_from_stats

__all__ = ["FeatureStats", "build_features", "frechet_distance", "frechet_distance_from_stats"]
