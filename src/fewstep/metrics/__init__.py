"""Metrics: Fréchet distance from streaming statistics, feature maps, truncation error."""

from fewstep.metrics.features import get_features
from fewstep.metrics.frechet import FeatureStats, frechet_distance, frechet_distance_from_stats

__all__ = ["FeatureStats", "frechet_distance", "frechet_distance_from_stats", "get_features"]
