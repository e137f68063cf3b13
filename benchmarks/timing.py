"""Timing helpers shared by the benchmark sections."""

from __future__ import annotations

import statistics
import time

from fewstep.solvers import SOLVERS

DETERMINISTIC = {name: spec for name, spec in SOLVERS.items() if not spec.stochastic}


def min_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Recorder:
    """Records the inputs of every denoiser call, so the same calls can be timed without the solver."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, []

    def __call__(self, x, sigma):
        self.calls.append((x.clone(), sigma))
        return self.denoiser(x, sigma)
