"""fewstep benchmarks: printed ratios measured in one run (nothing is asserted).

    python benchmarks/bench.py [--batch 64] [--repeats 5]

1. Solver overhead: sampler time / time of the same denoiser calls replayed alone (the exact (x, sigma) inputs the
   sampler made, recorded once), KDE denoiser on mnist5k. 1.00 means the solver adds nothing to its NFE calls.
2. Lightning overhead: Trainer.predict over the seeds / the bare solver loop on the same batches.
3. GITS at the reference settings (mnist5k KDE, 256 warm-up, 61-point grid, iPNDM teacher): warm-up, cost matrix
   and DP timed separately; the DP alone for grid 61 and 10 steps.
4. Truncation error (mean L2 to a Heun-100 reference from the same noise, 128 samples) of polynomial, logsnr and
   GITS schedules for each solver at NFE 4, 5, 6, 8, 10, with the ratio GITS / best baseline.
8. Stochastic samplers: Fréchet distance to the data (LeNet features and pixels, 512 samples) at NFE 10, 20, 50
   for ER-SDE 1/2/3, Euler ancestral, EDM stochastic, and the ODE solvers dpmpp and unipc (KDE on mnist5k).
7. Trajectory analysis: wall time and peak memory of `python run.py task=analyze` for 256 trajectories of 100
   steps on mnist5k (the KDE denoiser), imports included.
6. Per-step solver overhead of dpmpp and unipc against the same diffusers scheduler loop on the same denoiser
   (benchmarks/diffusers_overhead.py; needs the dev extra).
9. Learned model (the shipped unet_mnist5k): samples/s at NFE 5 (iPNDM) and the sampler time over NFE x one
   denoiser evaluation; GITS (reference settings, warm-up on the U-Net) vs polynomial at NFE 5, 6, 8, 10 for
   ipndm, dpmpp and euler: Fréchet distance to mnist5k (LeNet features and pixels, 1,024 samples) and
   truncation error against the model's own Heun-100 solution.
5. Evaluation: feature throughput (images/s) of LeNet and Inception-v3, and the wall time of a whole
   `run.py` job with 1 and 2 CPU processes (trainer=ddp), same seeds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import torch

from fewstep.data import mnist5k, seed_range, seeded_noise
from fewstep.models import KDEDenoiser
from fewstep.schedules import polynomial
from fewstep.solvers import SOLVERS, make_afs_prior, plan_steps

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


def solver_overhead(denoiser, data, batch: int, repeats: int) -> None:
    x = seeded_noise(torch.arange(batch), data.shape) * 80.0
    reference = SOLVERS["heun"].fn(denoiser, x, polynomial(100, 0.002, 80.0))
    print(f"\n## Solvers: truncation error and overhead (KDE on mnist5k, N={len(data.images)}, batch {batch})\n")
    print("Truncation error: mean L2 to a Heun-100 reference from the same noise (polynomial schedule).\n")
    print(
        "| solver | NFE | steps | AFS | truncation error | sampler ms | same denoiser calls alone ms | overhead ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for nfe in (5, 10):
        for name, spec in DETERMINISTIC.items():
            plan = plan_steps(spec, nfe)
            sigmas = polynomial(plan.num_steps, 0.002, 80.0)
            afs = make_afs_prior("gaussian", data.images) if plan.afs else None
            recorder = Recorder(denoiser)
            out = spec.fn(recorder, x, sigmas, afs=afs)
            assert len(recorder.calls) == plan.nfe
            error = (out - reference).flatten(1).norm(dim=1).mean().item()
            t_solver = median_seconds(lambda: spec.fn(denoiser, x, sigmas, afs=afs), repeats)  # noqa: B023
            t_calls = median_seconds(lambda: [denoiser(*c) for c in recorder.calls], repeats)  # noqa: B023
            print(
                f"| {name} | {nfe} | {plan.num_steps} | {plan.afs} | {error:.3f} | {t_solver * 1e3:.1f} | "
                f"{t_calls * 1e3:.1f} | {t_solver / t_calls:.3f} |"
            )


def lightning_overhead(denoiser, data, batch: int, tmp: str) -> None:
    import lightning as L

    from fewstep.module import SamplingModule, ShardWriter
    from fewstep.utils.shards import ShardStore

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    spec = SOLVERS["ipndm"]
    sigmas = polynomial(10, 0.002, 80.0)
    seeds = seed_range(0, 4 * batch)

    def bare():
        for start in range(0, len(seeds), batch):
            chunk = torch.tensor(seeds[start : start + batch])
            spec.fn(denoiser, seeded_noise(chunk, data.shape) * 80.0, sigmas)

    def with_lightning(folder=[0]):  # noqa: B006 - a fresh store each call, so nothing is resumed
        folder[0] += 1
        module = SamplingModule(denoiser, spec.fn, sigmas, data.shape, seeds, ShardStore(f"{tmp}/{folder[0]}"), batch)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            use_distributed_sampler=False,
            callbacks=[ShardWriter()],
        )
        trainer.predict(module, return_predictions=False)

    # the minimum of 5: background noise only ever adds time (medians of 3 were too noisy here)
    t_bare, t_lightning = min_seconds(bare, 5), min_seconds(with_lightning, 5)
    print(f"\n## Lightning overhead (ipndm, NFE 10, {len(seeds)} samples in batches of {batch})\n")
    print("| bare solver loop s | Trainer.predict + shard writes s | ratio |")
    print("|---|---|---|")
    print(f"| {t_bare:.3f} | {t_lightning:.3f} | {t_lightning / t_bare:.3f} |")


def gits_timings(denoiser, data, batch: int, settings: dict) -> torch.Tensor:
    from fewstep.schedules.gits import cost_sums, dynamic_programming, teacher_trajectory
    from fewstep.tasks.search import base_grid, teacher

    grid = base_grid(settings, 0.002, 80.0)
    spec, options = teacher(settings)
    seeds = seed_range(settings["warmup_seed"], settings["num_warmup"])
    t_warmup = t_cost = 0.0
    total = torch.zeros(len(grid), len(grid), dtype=torch.float64)
    for start in range(0, len(seeds), batch):
        x = seeded_noise(torch.tensor(seeds[start : start + batch]), data.shape) * 80.0
        t0 = time.perf_counter()
        states, slopes = teacher_trajectory(spec.fn, denoiser, x, grid, **options)
        t1 = time.perf_counter()
        total += cost_sums(states, slopes, grid, settings["metric"])
        t_warmup, t_cost = t_warmup + t1 - t0, t_cost + time.perf_counter() - t1
    cost = total / len(seeds)
    t_dp = median_seconds(lambda: dynamic_programming(cost, settings["coeff"], 10), 20)
    print(
        f"\n## GITS at reference settings ({len(seeds)} warm-up, grid {len(grid)}, teacher {spec.name}, "
        f"metric {settings['metric']}, batch {batch})\n"
    )
    print("| warm-up trajectories s | cost matrix s | DP (grid 61, 10 steps) ms |")
    print("|---|---|---|")
    print(f"| {t_warmup:.2f} | {t_cost:.2f} | {t_dp * 1e3:.2f} |")
    return cost


def gits_sigmas(cost: torch.Tensor, settings: dict, spec, plan, data, denoiser, afs) -> torch.Tensor:
    """The GITS schedule for `plan` from a cost matrix, with the reference code's AFS insertion."""
    from types import SimpleNamespace

    from fewstep.tasks.search import base_grid, insert_afs_step, search_path, teacher

    grid = base_grid(settings, 0.002, 80.0)
    teacher_spec, teacher_options = teacher(settings)
    setup = SimpleNamespace(dataset=data, shape=data.shape, denoiser=denoiser, spec=spec, solver_options={},
                            afs_prior=afs)  # fmt: skip
    path, _, _ = search_path(
        cost,
        settings,
        plan.num_steps,
        plan.afs and settings["afs_insert"],
        lambda p: insert_afs_step(p, grid, setup, settings, teacher_spec, teacher_options),
    )
    return grid[path]


def truncation_table(denoiser, data, cost: torch.Tensor, settings: dict, num_samples: int = 128) -> None:
    from fewstep.schedules import logsnr

    x = seeded_noise(torch.arange(num_samples), data.shape) * 80.0
    reference = SOLVERS["heun"].fn(denoiser, x, polynomial(100, 0.002, 80.0))
    print(f"\n## Truncation error vs a Heun-100 reference ({num_samples} samples, KDE on mnist5k)\n")
    print("| solver | NFE | steps | AFS | polynomial | logsnr | gits | gits / best baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for name, spec in DETERMINISTIC.items():
        for nfe in (4, 5, 6, 8, 10):
            plan = plan_steps(spec, nfe)
            afs = make_afs_prior("gaussian", data.images) if plan.afs else None

            def error(sigmas):
                out = spec.fn(denoiser, x, sigmas, afs=afs)  # noqa: B023
                return (out - reference).flatten(1).norm(dim=1).mean().item()

            errors = [
                error(polynomial(plan.num_steps, 0.002, 80.0)),
                error(logsnr(plan.num_steps, 0.002, 80.0)),
                error(gits_sigmas(cost, settings, spec, plan, data, denoiser, afs)),
            ]
            print(
                f"| {name} | {nfe} | {plan.num_steps} | {plan.afs} | {errors[0]:.3f} | {errors[1]:.3f} | "
                f"{errors[2]:.3f} | {errors[2] / min(errors[:2]):.2f} |"
            )


def evaluation(data, num_processes_samples: int = 512) -> None:
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from fewstep.metrics import build_features
    from fewstep.metrics.inception import default_weights

    print("\n## Evaluation\n")
    print("| feature extractor | images | seconds | images/s |")
    print("|---|---|---|---|")
    for name, count in (("lenet", 2048), ("inception", 16)):
        if name == "inception" and default_weights() is None:
            print("| inception | - | - | weights not installed |")
            continue
        net = build_features(name, data.name)
        images = data.images[:count]
        net(images[:2])  # warm-up
        start = time.perf_counter()
        with torch.no_grad():
            for chunk in images.split(64):
                net(chunk)
        seconds = time.perf_counter() - start
        print(f"| {name} | {count} | {seconds:.2f} | {count / seconds:.1f} |")

    root = Path(__file__).resolve().parents[1]
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for devices in (1, 2):
            args = [
                sys.executable,
                str(root / "run.py"),
                f"num_samples={num_processes_samples}",
                "trainer.enable_progress_bar=false",
                f"hydra.run.dir={tmp}/run{devices}",
                f"paths.cache_dir={tmp}/cache{devices}",
            ]
            if devices == 2:
                args += ["trainer=ddp", "trainer.devices=2"]
            start = time.perf_counter()
            subprocess.run(args, cwd=root, check=True, capture_output=True)
            walls[devices] = time.perf_counter() - start
            metrics = json.loads((Path(tmp) / f"run{devices}" / "metrics.json").read_text())
            walls[f"fid{devices}"] = metrics["fid"]
    print(
        f"\nWhole `run.py` job (mnist5k KDE, ipndm, NFE 5, {num_processes_samples} samples, reference "
        "solution and dataset statistics computed, imports included):\n"
    )
    print("| processes | wall s | fid |")
    print("|---|---|---|")
    for devices in (1, 2):
        print(f"| {devices} | {walls[devices]:.1f} | {walls[f'fid{devices}']:.4f} |")
    print(f"\nspeed-up of 2 processes over 1: {walls[1] / walls[2]:.2f} (a 2-core machine)")


def analysis(num_samples: int = 256, num_steps: int = 100) -> None:
    import resource
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, str(root / "run.py"), "task=analyze", f"task.num_samples={num_samples}",
                f"task.num_steps={num_steps}", f"hydra.run.dir={tmp}/run"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(args, cwd=root, check=True, capture_output=True)
        wall = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        stored = sum(p.stat().st_size for p in (Path(tmp) / "run" / "trajectories").glob("*.npz")) / 2**20
    print(f"\n## Trajectory analysis ({num_samples} trajectories x {num_steps} heun steps, mnist5k KDE)\n")
    print("| wall s (imports included) | peak RSS MiB (largest child process) | trajectories on disk MiB |")
    print("|---|---|---|")
    print(f"| {wall:.1f} | {peak_mib:.0f} | {stored:.0f} |")


def data_statistics(data) -> dict:
    """name -> (feature map, (mean, cov) of the data): LeNet features ("fid") and pixels ("fd")."""
    from fewstep.metrics import FeatureStats, build_features

    lenet = build_features("lenet", data.name)
    reference = {}
    for name, features in (("fid", lenet), ("fd", lambda x: x.flatten(1))):
        stats = FeatureStats(128 if name == "fid" else data.images[0].numel()).update(features(data.images))
        reference[name] = (features, stats.mean_cov())
    return reference


def distances_to_data(reference: dict, sample_batch, seeds: torch.Tensor, batch: int) -> list[float]:
    """[FID (LeNet), FD (pixels)] of sample_batch(seed chunk) over all seeds, to the data."""
    from fewstep.metrics import FeatureStats, frechet_distance

    stats = {key: FeatureStats(ref[1][0].shape[0]) for key, ref in reference.items()}
    for chunk in seeds.split(batch):
        out = sample_batch(chunk)
        for key, (features, _) in reference.items():
            stats[key].update(features(out))
    return [frechet_distance(*stats[key].mean_cov(), *reference[key][1]) for key in ("fid", "fd")]


def stochastic_table(denoiser, data, num_samples: int = 512, batch: int = 128) -> None:
    from fewstep.solvers import per_sample_noise

    reference = data_statistics(data)
    solvers = [("er_sde", {"order": 1}), ("er_sde", {"order": 2}), ("er_sde", {"order": 3}),
               ("euler_ancestral", {}), ("edm_stochastic", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0,
               "s_noise": 1.003}), ("dpmpp", {}), ("unipc", {})]  # fmt: skip
    print(f"\n## Stochastic vs ODE samplers: distance to the data ({num_samples} samples, KDE on mnist5k)\n")
    print("| solver | options | NFE | steps | FID (LeNet) | FD (pixels) |")
    print("|---|---|---|---|---|---|")
    for nfe in (10, 20, 50):
        for name, options in solvers:
            spec = SOLVERS[name]
            plan = plan_steps(spec, nfe)
            sigmas = polynomial(plan.num_steps, 0.002, 80.0)
            afs = make_afs_prior("gaussian", data.images) if plan.afs else None

            def sample_batch(chunk):
                x = seeded_noise(chunk, data.shape) * 80.0
                extra = {"noise": per_sample_noise(chunk, data.shape)} if spec.stochastic else {}  # noqa: B023
                return spec.fn(denoiser, x, sigmas, afs=afs, **options, **extra)  # noqa: B023

            distances = distances_to_data(reference, sample_batch, torch.arange(num_samples), batch)
            shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "-"
            print(f"| {name} | {shown} | {nfe} | {plan.num_steps} | {distances[0]:.2f} | {distances[1]:.2f} |")


def learned_model(data, batch: int, num_samples: int = 1024) -> None:
    """The shipped U-Net: sampling throughput at NFE 5, and GITS vs polynomial distance to the data."""
    from fewstep.models import load_unet
    from fewstep.tasks.search import GITS_DEFAULTS

    model = load_unet("unet_mnist5k.pt")
    spec = SOLVERS["ipndm"]
    with torch.no_grad():
        plan = plan_steps(spec, 5)
        sigmas = polynomial(plan.num_steps, 0.002, 80.0)
        afs = make_afs_prior("gaussian", data.images) if plan.afs else None
        x = seeded_noise(torch.arange(256), data.shape) * 80.0
        t_sample = min_seconds(lambda: [spec.fn(model, chunk, sigmas, afs=afs) for chunk in x.split(batch)], 3)
        t_model = min_seconds(lambda: [model(chunk, 1.0) for chunk in x.split(batch)], 3)
        print(f"\n## Shipped model (unet_mnist5k, {sum(p.numel() for p in model.parameters()):,} parameters)\n")
        print("| ipndm NFE 5 samples/s | denoiser evaluations/s | sampler time / 5 x one evaluation |")
        print("|---|---|---|")
        print(f"| {256 / t_sample:.1f} | {256 / t_model:.1f} | {t_sample / (plan.nfe * t_model):.3f} |")

        cost = gits_timings(model, data, batch, GITS_DEFAULTS)
        reference = data_statistics(data)
        seeds = torch.arange(num_samples)
        x = seeded_noise(seeds, data.shape) * 80.0

        def run(spec, sigmas, afs=None) -> torch.Tensor:
            return torch.cat([spec.fn(model, chunk, sigmas, afs=afs) for chunk in x.split(batch)])

        def distances(samples: torch.Tensor) -> list[float]:
            return distances_to_data(reference, lambda chunk: samples[chunk], seeds, batch)

        floor = distances(data.images[torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))])
        solution = run(SOLVERS["heun"], polynomial(100, 0.002, 80.0))
        exact = distances(solution)
        print(f"\n## GITS vs polynomial with the learned model ({num_samples} samples, distance to mnist5k)\n")
        print(f"{num_samples} dataset images vs the dataset: FID (LeNet) {floor[0]:.2f}, FD (pixels) {floor[1]:.2f}. "
              f"The model's Heun-100 solution: FID {exact[0]:.2f}, FD {exact[1]:.2f}. Truncation error: mean L2 to "
              "that solution from the same noise.\n")  # fmt: skip
        print("| solver | NFE | steps | AFS | FID polynomial | FID gits | FD polynomial | FD gits | "
              "trunc. polynomial | trunc. gits |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name in ("ipndm", "dpmpp", "euler"):
            spec = SOLVERS[name]
            for nfe in (5, 6, 8, 10):
                plan = plan_steps(spec, nfe)
                afs = make_afs_prior("gaussian", data.images) if plan.afs else None
                schedules = [polynomial(plan.num_steps, 0.002, 80.0),
                             gits_sigmas(cost, GITS_DEFAULTS, spec, plan, data, model, afs)]  # fmt: skip
                samples = [run(spec, s, afs) for s in schedules]
                found = [distances(out) for out in samples]
                errors = [(out - solution).flatten(1).norm(dim=1).mean().item() for out in samples]
                print(f"| {name} | {nfe} | {plan.num_steps} | {plan.afs} | {found[0][0]:.2f} | {found[1][0]:.2f} | "
                      f"{found[0][1]:.2f} | {found[1][1]:.2f} | {errors[0]:.2f} | {errors[1]:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--only",
        nargs="*",
        default=[
            "overhead",
            "lightning",
            "gits",
            "truncation",
            "diffusers",
            "stochastic",
            "evaluation",
            "analysis",
            "learned",
        ],  # fmt: skip
    )
    args = parser.parse_args()
    import tempfile

    data = mnist5k()
    denoiser = KDEDenoiser(data.images)
    print(f"# fewstep benchmark (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    if "overhead" in args.only:
        solver_overhead(denoiser, data, args.batch, args.repeats)
    if "lightning" in args.only:
        with tempfile.TemporaryDirectory() as tmp:
            lightning_overhead(denoiser, data, args.batch, tmp)
    if {"gits", "truncation"} & set(args.only):
        from fewstep.tasks.search import GITS_DEFAULTS

        cost = gits_timings(denoiser, data, args.batch, GITS_DEFAULTS)
        if "truncation" in args.only:
            truncation_table(denoiser, data, cost, GITS_DEFAULTS)
    if "diffusers" in args.only:
        from diffusers_overhead import diffusers_overhead

        diffusers_overhead(denoiser, data.shape, args.batch, args.repeats)
    if "stochastic" in args.only:
        stochastic_table(denoiser, data)
    if "evaluation" in args.only:
        evaluation(data)
    if "analysis" in args.only:
        analysis()
    if "learned" in args.only:
        learned_model(data, args.batch)


if __name__ == "__main__":
    main()
