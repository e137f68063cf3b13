"""Solver overhead per step: fewstep's dpmpp / unipc vs the equivalent diffusers scheduler loop (printed, not asserted).

    python benchmarks/diffusers_overhead.py [--batch 64] [--repeats 20] [--threads N]

Both samplers drive the same denoiser (KDE on mnist5k by default) from the same noise on the same sigmas (those of
the diffusers scheduler, which tests/test_diffusers_crosscheck.py shows both sides integrate identically). Every
denoiser call a sampler makes is recorded once (inputs cloned, like bench.py's Recorder); a sampler's overhead is
its wall time minus the time of replaying exactly those calls alone, per step. Each repeat times the sampler and
the replay back to back (alternating which goes first) and the median of the per-repeat differences is reported,
so slow drifts of the machine cancel out.

On a small machine the denoiser's own jitter (a few percent of several ms per call) is as large as the overhead,
so a second table measures the same loops with the denoiser replaced by a lookup of its recorded outputs
(`Replayer`): the samplers then run exactly the same arithmetic on the same tensors, and their time is the overhead
itself (plus ~1 us per lookup), with no subtraction.

The diffusers column counts what a pipeline's loop does besides the model: set_timesteps (a scheduler keeps state
and must be reset before each run), scale_model_input and step, plus the adapter that turns the fewstep denoiser
into a diffusers model with prediction_type='sample' (x_ve = x_vp * sqrt(1 + sigma^2): one elementwise multiply
per call). The fewstep column counts the solver loop; the sigmas are given to it.

On a 2-core machine shared with other jobs, torch's second intra-op thread can make each KDE call wait for a
descheduled thread (one call went from ~15 ms to ~300 ms): pass --threads 1 there for stable numbers.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import diffusers
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from fewstep.data import mnist5k, seeded_noise
from fewstep.models import KDEDenoiser
from fewstep.solvers import dpmpp, unipc

# (label, fewstep solver, its options, the equivalent diffusers scheduler)
CASES = [
    (
        "dpmpp 2M",
        dpmpp,
        {"max_order": 2},
        lambda: DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_type="midpoint", solver_order=2, prediction_type="sample"
        ),
    ),
    (
        "unipc bh2 order 2",
        unipc,
        {"max_order": 2, "variant": "bh2"},
        lambda: UniPCMultistepScheduler(solver_order=2, solver_type="bh2", prediction_type="sample"),
    ),
    (
        "unipc bh2 order 3",
        unipc,
        {"max_order": 3, "variant": "bh2"},
        lambda: UniPCMultistepScheduler(solver_order=3, solver_type="bh2", prediction_type="sample"),
    ),
]


class Recorder:
    """Records the inputs (and outputs) of every denoiser call, so the same calls can be timed without the solver."""

    def __init__(self, denoiser):
        self.denoiser, self.calls, self.outputs = denoiser, [], []

    def __call__(self, x, sigma):
        self.calls.append((x.clone(), sigma))
        self.outputs.append(self.denoiser(x, sigma))
        return self.outputs[-1].clone()


class Replayer:
    """Answers a sampler's calls with the recorded outputs, in order: a denoiser that costs next to nothing."""

    def __init__(self, outputs: list):
        self.outputs, self.index = outputs, 0

    def __call__(self, x, sigma):
        out = self.outputs[self.index % len(self.outputs)]
        self.index += 1
        return out


def diffusers_loop(scheduler, denoiser, x_vp: torch.Tensor, num_steps: int) -> torch.Tensor:
    """A pipeline's sampling loop around a fewstep denoiser (data prediction, VP sample); returns the VE result."""
    scheduler.set_timesteps(num_steps)
    sigmas = scheduler.sigmas.tolist()
    x = x_vp
    for k, t in enumerate(scheduler.timesteps):
        s = sigmas[k]
        x_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(denoiser(x_in * math.sqrt(1.0 + s * s), s), t, x).prev_sample
    return x * math.sqrt(1.0 + sigmas[-1] ** 2)


def paired_overhead(run, calls: list, denoiser, repeats: int) -> float:
    """Median over repeats of (time of run) - (time of the same denoiser calls replayed alone), in seconds."""

    def replay():
        for x, sigma in calls:
            denoiser(x, sigma)

    run(), replay()  # warm-up
    differences = []
    for r in range(repeats):
        first, second = (run, replay) if r % 2 == 0 else (replay, run)
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        t_run, t_replay = (t1 - t0, t2 - t1) if first is run else (t2 - t1, t1 - t0)
        differences.append(t_run - t_replay)
    return statistics.median(differences)


def diffusers_overhead(denoiser, shape, batch: int, repeats: int) -> None:
    """Prints markdown tables of the per-step solver overhead of fewstep and of the diffusers scheduler loop."""
    x_vp = seeded_noise(torch.arange(batch), tuple(shape))  # diffusers' init_noise_sigma is 1 for these schedulers
    t_call = statistics.median(_timed(functools.partial(denoiser, x_vp, 1.0)) for _ in range(max(repeats, 5)))
    rows = []
    for num_steps in (5, 10):
        for label, solver, options, make_scheduler in CASES:
            scheduler = make_scheduler()
            scheduler.set_timesteps(num_steps)
            sigmas = scheduler.sigmas.to(torch.float64)
            x_ve = x_vp * math.sqrt(1.0 + sigmas[0].item() ** 2)
            runs = (
                functools.partial(_fewstep_loop, solver, x_ve, sigmas, options),
                functools.partial(_diffusers_loop_for, scheduler, x_vp, num_steps),
            )
            subtracted, replayed = [], []
            for run in runs:
                recorder = Recorder(denoiser)
                run(recorder)
                assert len(recorder.calls) == num_steps
                overhead = paired_overhead(functools.partial(run, denoiser), recorder.calls, denoiser, repeats)
                subtracted.append(overhead / num_steps)
                replay = functools.partial(run, Replayer(recorder.outputs))
                replayed.append(statistics.median(_timed(replay) for _ in range(max(repeats, 50))) / num_steps)
            rows.append((label, num_steps, subtracted, replayed))
    header = (
        "| solver | steps | fewstep overhead ms/step | diffusers overhead ms/step | ratio diffusers/fewstep |\n"
        "|---|---|---|---|---|"
    )
    print(
        f"\n## Solver overhead per step: fewstep vs diffusers {diffusers.__version__} (batch {batch}, median of "
        f"{repeats}; sampler time - replayed denoiser calls; one denoiser call takes {t_call * 1e3:.2f} ms)\n"
    )
    print(header)
    for label, num_steps, subtracted, _ in rows:
        print(_row(label, num_steps, subtracted))
    print(
        f"\n## The same loops with the denoiser replaced by a lookup of its recorded outputs "
        f"(median of {max(repeats, 50)}; no subtraction)\n"
    )
    print(header)
    for label, num_steps, _, replayed in rows:
        print(_row(label, num_steps, replayed))


def _fewstep_loop(solver, x_ve, sigmas, options, denoiser):
    return solver(denoiser, x_ve, sigmas, **options)


def _diffusers_loop_for(scheduler, x_vp, num_steps, denoiser):
    return diffusers_loop(scheduler, denoiser, x_vp, num_steps)


def _row(label: str, num_steps: int, overheads: list[float]) -> str:
    ours, theirs = overheads
    ratio = f"{theirs / ours:.1f}" if ours > 0 else "n/a"
    return f"| {label} | {num_steps} | {ours * 1e3:.3f} | {theirs * 1e3:.3f} | {ratio} |"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = mnist5k()
    print(f"# fewstep vs diffusers overhead (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    diffusers_overhead(KDEDenoiser(data.images), data.shape, args.batch, args.repeats)


if __name__ == "__main__":
    main()
