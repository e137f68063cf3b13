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
   denoiser evaluation; then polynomial, logsnr, gits and oss for each solver (--solvers) and NFE (--nfes):
   FID (LeNet features, images as EDM's fid.py reads them, ± bootstrap standard error; --learned-samples, 512)
   and truncation error against the model's own reference solution (ipndm_v, 100 steps), through the Python API.
10. Searched schedules: truncation error (256 samples) of polynomial, logsnr, gits and oss for each solver
   (--solvers) at NFE 4, 5, 6, 8, 10 (--nfes), with searched / best-hand-crafted ratios and each search's cost in
   model evaluations (per GITS reference warm-up of 256 x 60) and seconds.
11. Warm-up size: grid indices and truncation error of GITS and OSS searches with 8 ... 256 warm-up samples.
12. Threads per job (--only threads): a two-job joblib sweep with torch's default threads per job and threads=auto.
13. DDP fixed overheads (--only ddp): one run in 1 and 2 processes, and the primitives (process group start-up,
   broadcast, all-reduce of feature sums, shard writes) timed in a two-process gloo group.
5. Evaluation: feature throughput (images/s) of LeNet and Inception-v3, and the wall time of a whole
   `run.py` job with 1 and 2 CPU processes (trainer=ddp), same seeds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import torch

from fewstep.data import mnist5k, seed_range, seeded_noise
from fewstep.models import KDEDenoiser
from fewstep.schedules import polynomial
from fewstep.solvers import SOLVERS, Sampler, make_afs_prior, plan_steps

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

    from fewstep.app.lightning_modules import SamplingModule, ShardWriter
    from fewstep.app.shards import ShardStore

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
        module = SamplingModule(
            denoiser, Sampler(spec, sigmas), data.shape, seeds, ShardStore(f"{tmp}/{folder[0]}"), batch
        )
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


def gits_timings(denoiser, data, batch: int, settings) -> torch.Tensor:
    from fewstep.schedules.gits import cost_sums, dynamic_programming
    from fewstep.schedules.teacher import base_grid, teacher, teacher_trajectory

    grid = base_grid(settings, 0.002, 80.0)
    teacher_sampler = teacher(settings, grid)
    seeds = seed_range(settings.warmup_seed, settings.num_warmup)
    t_warmup = t_cost = 0.0
    total = torch.zeros(len(grid), len(grid), dtype=torch.float64)
    for start in range(0, len(seeds), batch):
        chunk = torch.tensor(seeds[start : start + batch])
        x = seeded_noise(chunk, data.shape) * 80.0
        t0 = time.perf_counter()
        states, slopes = teacher_trajectory(teacher_sampler.as_solver(chunk), denoiser, x, grid)
        t1 = time.perf_counter()
        total += cost_sums(states, slopes, grid, settings.metric)
        t_warmup, t_cost = t_warmup + t1 - t0, t_cost + time.perf_counter() - t1
    cost = total / len(seeds)
    t_dp = median_seconds(lambda: dynamic_programming(cost, settings.coeff, 10), 20)
    print(
        f"\n## GITS at reference settings ({len(seeds)} warm-up, grid {len(grid)}, teacher {teacher_sampler.name}, "
        f"metric {settings.metric}, batch {batch})\n"
    )
    print("| warm-up trajectories s | cost matrix s | DP (grid 61, 10 steps) ms |")
    print("|---|---|---|")
    print(f"| {t_warmup:.2f} | {t_cost:.2f} | {t_dp * 1e3:.2f} |")
    return cost


def gits_sigmas(cost: torch.Tensor, settings, spec, plan, data, denoiser, afs) -> torch.Tensor:
    """The GITS schedule for `plan` from a cost matrix, with the reference code's AFS insertion."""
    from fewstep.schedules.gits import afs_insertion, search_path
    from fewstep.schedules.teacher import base_grid, teacher

    grid = base_grid(settings, 0.002, 80.0)
    seeds = settings.afs_seeds
    pick = afs_insertion(denoiser, data.shape, Sampler(spec, grid, {}, afs), seeds)
    afs_step = (lambda path: pick(path, grid, teacher(settings, grid))) if plan.afs and settings.afs_insert else None
    path, _, _ = search_path(cost, settings.coeff, plan.num_steps, afs_step)
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


def searches_table(denoiser, data, gits_cost: torch.Tensor, gits_seconds: float, settings, solvers, nfes,
                   num_samples: int = 256) -> None:  # fmt: skip
    """Truncation error (mean L2 to a Heun-100 reference from the same noise, seeds 0..num_samples-1) of
    polynomial, logsnr, gits and oss for each solver and NFE; the searched / best hand-crafted ratios, and each
    search's cost in model evaluations per GITS reference warm-up (256 x 60) and seconds."""
    from fewstep.schedules import logsnr
    from fewstep.schedules.oss import oss_search

    x = seeded_noise(torch.arange(num_samples), data.shape)
    reference = SOLVERS["heun"].fn(denoiser, x * 80.0, polynomial(100, 0.002, 80.0))
    print(f"\n## Searched schedules vs hand-crafted ({num_samples} samples, KDE on mnist5k, truncation error)\n")
    print(f"GITS cost: its warm-up ({settings.num_warmup} trajectories = 1.00 reference warm-up) took "
          f"{gits_seconds:.1f} s once for every cell, plus a DP (and AFS insertion) per cell. OSS: defaults of "
          "`conf/schedule/oss.yaml`, a search per cell.\n")  # fmt: skip
    print("| solver | NFE | polynomial | logsnr | gits | oss | gits / best | oss / best | oss warm-up samples | "
          "oss evaluations (GITS warm-ups) | oss s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for name in solvers:
        spec = SOLVERS[name]
        for nfe in nfes:
            plan = plan_steps(spec, nfe)
            afs = make_afs_prior("gaussian", data.images) if plan.afs else None
            sampler = Sampler(spec, polynomial(plan.num_steps, 0.002, 80.0), {}, afs)

            def error(sigmas):
                out = sampler.with_sigmas(sigmas)(denoiser, x, torch.arange(num_samples))  # noqa: B023
                return (out - reference).flatten(1).norm(dim=1).mean().item()

            start = time.perf_counter()
            record = oss_search({}, sampler=sampler, denoiser=denoiser, shape=data.shape, sigma_min=0.002,
                                sigma_max=80.0, num_steps=plan.num_steps)  # fmt: skip
            seconds = time.perf_counter() - start
            errors = [error(polynomial(plan.num_steps, 0.002, 80.0)), error(logsnr(plan.num_steps, 0.002, 80.0)),
                      error(gits_sigmas(gits_cost, settings, spec, plan, data, denoiser, afs)),
                      error(torch.tensor(record["sigmas"], dtype=torch.float64))]  # fmt: skip
            best = min(errors[:2])
            ratios.append(errors[3] / best)
            print(f"| {name} | {nfe} | {errors[0]:.3f} | {errors[1]:.3f} | {errors[2]:.3f} | {errors[3]:.3f} | "
                  f"{errors[2] / best:.2f} | {errors[3] / best:.2f} | {record['warmup_count']} | "
                  f"{record['evaluations'] / record['gits_reference_evaluations']:.2f} | {seconds:.0f} |",
                  flush=True)  # fmt: skip
    print(
        f"\noss / best hand-crafted: median {statistics.median(ratios):.2f}, worst {max(ratios):.2f}, "
        f"no worse in {sum(r <= 1 for r in ratios)} of {len(ratios)} cells."
    )


def warmup_study(denoiser, data, num_samples: int = 256) -> None:
    """Index stability and truncation error against the warm-up size, for GITS (ipndm and euler at NFE 6) and the
    solver-aware search (euler and ipndm_v at NFE 6)."""
    from fewstep.schedules.gits import GitsSettings, gits_search
    from fewstep.schedules.oss import oss_search
    from fewstep.schedules.searches import local_warmup

    x = seeded_noise(torch.arange(num_samples), data.shape)
    reference = SOLVERS["heun"].fn(denoiser, x * 80.0, polynomial(100, 0.002, 80.0))

    def error(sampler, sigmas):
        out = sampler.with_sigmas(sigmas)(denoiser, x, torch.arange(num_samples))
        return (out - reference).flatten(1).norm(dim=1).mean().item()

    print(f"\n## Warm-up size: grid indices and truncation error ({num_samples} samples, KDE on mnist5k, NFE 6)\n")
    print("| search | solver | warm-up | grid indices | same as the largest | truncation error | s |")
    print("|---|---|---|---|---|---|---|")
    sizes = (8, 16, 32, 64, 128, 256)
    for method, solver in [("gits", "ipndm"), ("gits", "euler"), ("oss", "euler"), ("oss", "ipndm_v")]:  # fmt: skip
        sampler = Sampler.of(solver, polynomial(6, 0.002, 80.0))
        rows = []
        for size in sizes:
            start = time.perf_counter()
            if method == "gits":
                record = gits_search(GitsSettings(num_warmup=size), sigma_min=0.002, sigma_max=80.0, num_steps=6,
                                     warmup=local_warmup(denoiser, data.shape))  # fmt: skip
            else:
                record = oss_search({"num_warmup": size, "min_warmup": size}, sampler=sampler, denoiser=denoiser,
                                    shape=data.shape, sigma_min=0.002, sigma_max=80.0, num_steps=6)  # fmt: skip
            rows.append((size, record["indices"], error(sampler, torch.tensor(record["sigmas"])),
                         time.perf_counter() - start))  # fmt: skip
        for size, indices, err, seconds in rows:
            print(f"| {method} | {solver} | {size} | {indices} | {'yes' if indices == rows[-1][1] else 'no'} | "
                  f"{err:.3f} | {seconds:.1f} |", flush=True)  # fmt: skip


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


def determinism(data, num_samples: int = 256) -> None:
    """How far samples and metrics move with the batch size and the number of processes (README, Determinism)."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from fewstep.data import seeded_noise
    from fewstep.models import load_unet
    from fewstep.models.denoiser import bind_seeds, for_seeds
    from fewstep.schedules import polynomial
    from fewstep.solvers import ipndm

    print("\n## Determinism\n")
    print("Samples of seeds 0..63 (ipndm, NFE 5, polynomial), batch 7 against batch 64: max |difference|.\n")
    print("| model | evaluation | max abs difference |")
    print("|---|---|---|")
    sigmas = polynomial(5, 0.002, 80.0)
    seeds = torch.arange(64)
    models = {"kde (mnist5k)": KDEDenoiser(data.images), "unet_mnist5k": load_unet("unet_mnist5k.pt")}
    for name, model in models.items():
        for label, bind in (("fixed 16-row blocks (fewstep)", bind_seeds), ("plain batches", None)):
            if bind is None and name.startswith("kde"):
                continue  # the KDE pads its own products: it has no plain variant
            outs = []
            for batch in (7, 64):
                parts = []
                for chunk in seeds.split(batch):
                    x = seeded_noise(chunk, data.shape) * 80.0
                    den = bind(model, chunk, "cpu") if bind else for_seeds(model, chunk)
                    with torch.no_grad():
                        parts.append(ipndm(den, x, sigmas))
                outs.append(torch.cat(parts))
            print(f"| {name} | {label} | {(outs[0] - outs[1]).abs().max().item():.3g} |")

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        metrics = {}
        for devices in (1, 2):
            args = [sys.executable, str(root / "run.py"), f"num_samples={num_samples}",
                    "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp}/run{devices}",
                    f"paths.cache_dir={tmp}/cache{devices}"]  # fmt: skip
            if devices == 2:
                args += ["trainer=ddp", "trainer.devices=2"]
            subprocess.run(args, cwd=root, check=True, capture_output=True)
            metrics[devices] = json.loads((Path(tmp) / f"run{devices}" / "metrics.json").read_text())
    one, two = metrics[1], metrics[2]
    rows = [(k, abs(two[k] - v) / max(abs(v), 1e-300)) for k, v in one.items()
            if isinstance(v, float) and k != "sampling_seconds"]  # fmt: skip
    rows.sort(key=lambda kv: -kv[1])
    print(
        f"\nThe default job ({num_samples} samples, GITS warm-up included), 2 processes (`trainer=ddp`) against 1: "
        "relative difference of each metric, largest first.\n"
    )
    print("| metric | relative difference |")
    print("|---|---|")
    for key, rel in rows[:8]:
        print(f"| {key} | {rel:.2g} |")
    print(f"\nlargest: {rows[0][1]:.2g} ({rows[0][0]}); searched sigmas identical: {one['sigmas'] == two['sigmas']}")


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
    """name -> (feature map, (mean, cov) of the data): LeNet features ("fid") and pixels ("fd"), both on images
    quantised as EDM writes them (what fewstep scores)."""
    from fewstep.metrics import FeatureStats, build_features
    from fewstep.metrics.quantize import as_scored

    lenet = build_features("lenet", data.name)
    reference = {}
    for name, features in (("fid", lambda x: lenet(as_scored(x))), ("fd", lambda x: as_scored(x).flatten(1))):
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


def learned_model(data, batch: int, solvers, nfes, num_samples: int = 512, other_weights=()) -> None:
    """The shipped U-Net: sampling throughput at NFE 5; then every schedule (polynomial, logsnr, gits, oss) for every
    deterministic solver and NFE, sampled and scored through the public API as the command line scores them."""
    from fewstep.models import load_unet

    model = load_unet("unet_mnist5k.pt")
    spec = SOLVERS["ipndm"]
    with torch.no_grad():
        plan = plan_steps(spec, 5)
        sigmas = polynomial(plan.num_steps, 0.002, 80.0)
        x = seeded_noise(torch.arange(256), data.shape) * 80.0
        t_sample = min_seconds(lambda: [spec.fn(model, chunk, sigmas) for chunk in x.split(batch)], 3)
        t_model = min_seconds(lambda: [model(chunk, 1.0) for chunk in x.split(batch)], 3)
    print(f"\n## Shipped model (unet_mnist5k, {sum(p.numel() for p in model.parameters()):,} parameters)\n")
    print("| ipndm NFE 5 samples/s | denoiser evaluations/s | sampler time / 5 x one evaluation |")
    print("|---|---|---|")
    print(f"| {256 / t_sample:.1f} | {256 / t_model:.1f} | {t_sample / (plan.nfe * t_model):.3f} |")
    learned_table(model, data, solvers, nfes, num_samples, other_weights)


def reference_floor(model, data, num_samples: int, cache) -> tuple[torch.Tensor, dict]:
    """The model's reference solution (ipndm_v, 100 steps, seeds 0..num_samples-1) and its scores: the floor."""
    import fewstep
    from fewstep.app.config.plan import reference_sigmas

    sigmas = reference_sigmas(polynomial(5, 0.002, 80.0), 100, 7.0)
    reference = fewstep.sample(model, "ipndm_v", sigmas, range(num_samples))
    return reference, fewstep.evaluate(reference, data, cache_dir=cache)


def learned_table(model, data, solvers, nfes, num_samples: int, other_weights=()) -> None:
    """FID (LeNet features, images clipped and quantised as EDM's fid.py reads them, ± bootstrap standard error)
    and truncation error (mean L2 to the model's own reference solution, ipndm_v 100 steps, same seeds) of
    polynomial, logsnr, gits and oss; searches at the defaults of conf/schedule/{gits,oss}.yaml, cached under
    outputs/cache/bench (a rerun reuses them; new weights are new cache entries)."""
    import fewstep
    from fewstep.models import load_unet
    from fewstep.schedules import logsnr

    cache = Path("outputs/cache/bench")
    seeds = range(num_samples)
    started = time.perf_counter()
    reference, floor = reference_floor(model, data, num_samples, cache)
    for path in other_weights:
        _, other = reference_floor(load_unet(path), data, num_samples, cache)
        print(f"\nThe reference solution's FID with {path} ({num_samples} samples): {other['fid']:.1f} ± "
              f"{other['fid_std']:.1f}")  # fmt: skip
    real = data.images[torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))[:num_samples]]
    data_floor = fewstep.evaluate(real, data, cache_dir=cache)
    gits_started = time.perf_counter()  # uncached: the warm-up (256 x 60 evaluations), its cost matrix and the DP
    fewstep.search_schedule(model, nfe=5, solver="euler", method="gits")
    gits_seconds = time.perf_counter() - gits_started
    print(f"\n## Schedules on the learned model ({num_samples} samples, unet_mnist5k)\n")
    print(f"FID: {floor['features'] if 'features' in floor else 'LeNet'} features to mnist5k, images clipped and "
          f"quantised to uint8 as EDM's fid.py reads them, ± the bootstrap standard error. Floors: the reference "
          f"solution (ipndm_v, 100 steps, seeds 0..{num_samples - 1}) {floor['fid']:.1f} ± {floor['fid_std']:.1f}; "
          f"{num_samples} of mnist5k's own images {data_floor['fid']:.1f} ± {data_floor['fid_std']:.1f} "
          f"({time.perf_counter() - started:.0f} s). Truncation: mean L2 to the reference solution. One GITS search, "
          f"uncached (its warm-up of 256 x 60 evaluations, cost matrix, DP): {gits_seconds:.0f} s; the oss cost "
          f"counts every model evaluation, per sample, in those warm-ups.\n")  # fmt: skip
    names = ("polynomial", "logsnr", "gits", "oss")
    print("| solver | NFE | " + " | ".join(f"FID {n}" for n in names) + " | " + " | ".join(f"trunc. {n}" for n in names)
          + " | gits / best | oss / best | oss cost (GITS warm-ups) | oss search s (when it ran) |")  # fmt: skip
    print("|---|---|" + "---|" * 12)
    trunc_ratios, fid_rows = {"gits": [], "oss": []}, []
    for name in solvers:
        spec = SOLVERS[name]
        for nfe in nfes:
            plan = plan_steps(spec, nfe)
            prior = {"afs_prior": "gaussian", "afs_data": data.images} if plan.afs else {}
            schedules = {"polynomial": polynomial(plan.num_steps, 0.002, 80.0),
                         "logsnr": logsnr(plan.num_steps, 0.002, 80.0)}  # fmt: skip
            for method in ("gits", "oss"):
                schedules[method] = fewstep.search_schedule(model, nfe=nfe, solver=name, method=method,
                                                            afs_data=data.images, cache_dir=cache)  # fmt: skip
            scores = {}
            for key, sigmas in schedules.items():
                samples = fewstep.sample(model, name, sigmas, seeds, **prior)
                scores[key] = fewstep.evaluate(samples, data, reference=reference, cache_dir=cache)
            trunc = {k: v["truncation_error"] for k, v in scores.items()}
            best = min(trunc["polynomial"], trunc["logsnr"])
            for method in ("gits", "oss"):
                trunc_ratios[method].append(trunc[method] / best)
            fid_rows.append({k: (v["fid"], v["fid_std"]) for k, v in scores.items()})
            record = schedules["oss"].record
            cost = record["evaluations"] / record["gits_reference_evaluations"]
            print(f"| {name} | {nfe} | " + " | ".join(f"{scores[k]['fid']:.1f} ± {scores[k]['fid_std']:.1f}"
                                                      for k in names)
                  + " | " + " | ".join(f"{trunc[k]:.2f}" for k in names)
                  + f" | {trunc['gits'] / best:.2f} | {trunc['oss'] / best:.2f} | {cost:.2f} | "
                  f"{record['seconds']:.0f} |", flush=True)  # fmt: skip
    for method in ("gits", "oss"):
        ratios = trunc_ratios[method]
        fid_better = sum(row[method][0] <= min(row["polynomial"][0], row["logsnr"][0]) for row in fid_rows)
        differences = []  # (searched FID - best hand-crafted FID) / their combined standard error
        for row in fid_rows:
            fid, std = row[method]
            best_fid, best_std = min(row["polynomial"], row["logsnr"])
            differences.append((fid - best_fid) / (std**2 + best_std**2) ** 0.5)
        fid_worse, fid_lower = sum(d > 2 for d in differences), sum(d < -2 for d in differences)
        print(f"\n{method} / best hand-crafted truncation error: median {statistics.median(ratios):.2f}, worst "
              f"{max(ratios):.2f}, no worse in {sum(r <= 1 for r in ratios)} of {len(ratios)} cells. FID no higher "
              f"than the best hand-crafted one in {fid_better} of {len(fid_rows)} cells; lower by more than two "
              f"combined standard errors in {fid_lower}, higher by more than two in {fid_worse}.")  # fmt: skip


def scoring(denoiser, data, cost: torch.Tensor, settings: dict, num_samples: int = 256) -> None:
    """FID with LeNet features before (raw float samples) and after (clipped and quantised as EDM writes PNGs)."""
    from fewstep.metrics import FeatureStats, build_features, frechet_distance
    from fewstep.metrics.quantize import as_scored

    lenet = build_features("lenet", data.name)

    def fid(samples: torch.Tensor, scored: bool) -> float:
        view = as_scored if scored else (lambda x: x)
        ours = FeatureStats(128).update(lenet(view(samples)))
        theirs = FeatureStats(128).update(lenet(view(data.images)))
        return frechet_distance(*ours.mean_cov(), *theirs.mean_cov())

    x = seeded_noise(torch.arange(num_samples), data.shape) * 80.0
    explicit = torch.tensor([80.0, 17.5, 3.0, 0.4, 0.05, 0.002], dtype=torch.float64)
    readme = torch.tensor([80.0, 10.0, 2.0, 0.5, 0.1, 0.002], dtype=torch.float64)
    runs = [("ipndm", "polynomial", polynomial(5, 0.002, 80.0)),
            ("ipndm", "explicit [80,17.5,3,0.4,0.05,0.002]", explicit),
            ("ipndm", "explicit [80,10,2,0.5,0.1,0.002]", readme),
            ("ipndm", "gits", None), ("dpmpp", "polynomial", polynomial(5, 0.002, 80.0)), ("dpmpp", "gits", None),
            ("euler", "polynomial", polynomial(5, 0.002, 80.0)), ("euler", "gits", None)]  # fmt: skip
    print(f"\n## Scoring: raw float samples vs images as EDM writes them ({num_samples} samples, KDE on mnist5k, "
          "NFE 5, FID with LeNet features)\n")  # fmt: skip
    print("| solver | schedule | pixels beyond [-1, 1] by > 1/255 | min / max pixel | FID raw (before) | "
          "FID scored (after) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    reference = SOLVERS["heun"].fn(denoiser, x, polynomial(100, 0.002, 80.0))
    rows = [("heun", "polynomial, 100 steps (reference)", reference)]
    for name, schedule, sigmas in runs:
        spec = SOLVERS[name]
        plan = plan_steps(spec, 5)
        if sigmas is None:
            sigmas = gits_sigmas(cost, settings, spec, plan, data, denoiser, None)
        rows.append((name, schedule, torch.cat([spec.fn(denoiser, chunk, sigmas) for chunk in x.split(64)])))
    for name, schedule, samples in rows:
        outside = (samples.abs() > 1 + 1 / 255).double().mean().item()
        print(f"| {name} | {schedule} | {outside:.2%} | {samples.min().item():.2f} / {samples.max().item():.2f} | "
              f"{fid(samples, False):.1f} | {fid(samples, True):.1f} |")  # fmt: skip


def reference_choice(data, batch: int, settings: dict) -> None:
    """The default reference solution, chosen by measurement: for each candidate solver and step count, its own
    error (mean L2 to the same solver with 4x the steps) against a tenth of the smallest truncation error it is
    used to judge (every deterministic solver, polynomial / logsnr / GITS, NFE 4-10), on the mnist5k KDE and the
    shipped U-Net."""
    from fewstep.models import load_unet
    from fewstep.schedules import logsnr

    candidates = [("heun", {}, (50, 100)), ("dpmpp", {"max_order": 3}, (50, 100)),
                  ("unipc", {"max_order": 3}, (50, 100)), ("deis", {"max_order": 4}, (50, 100)),
                  ("ipndm_v", {"max_order": 4}, (50, 100))]  # fmt: skip
    print("\n## Choosing the reference solution (error of each candidate against itself with 4x the steps)\n")
    verdicts, worst = {}, {}
    models = (("kde", KDEDenoiser(data.images), 64), ("unet_mnist5k", load_unet("unet_mnist5k.pt"), 32))
    for model_name, model, count in models:
        x = seeded_noise(torch.arange(count), data.shape) * 80.0

        def solve(spec, sigmas, options=None, afs=None):
            with torch.no_grad():
                return torch.cat([spec.fn(model, c, sigmas, afs=afs, **(options or {})) for c in x.split(batch)])  # noqa: B023

        def distance(a, b):
            return (a - b).flatten(1).norm(dim=1).mean().item()

        start = time.perf_counter()
        errors, finest = {}, None
        for name, options, steps_list in candidates:
            for steps in steps_list:
                coarse = solve(SOLVERS[name], polynomial(steps, 0.002, 80.0), options)
                fine = solve(SOLVERS[name], polynomial(4 * steps, 0.002, 80.0), options)
                nfe = steps * SOLVERS[name].nfe_per_step - (1 if SOLVERS[name].nfe_per_step == 2 else 0)
                errors[(name, steps)] = (nfe, distance(coarse, fine))
                if name == "heun" and steps == max(steps_list):
                    finest = fine  # Heun with 4 x 100 steps: the solution the truncation errors are measured against
        cost = gits_timings(model, data, batch, settings)
        smallest = (float("inf"), None)
        for name, spec in DETERMINISTIC.items():
            for nfe in (4, 5, 6, 8, 10):
                plan = plan_steps(spec, nfe)
                afs = make_afs_prior("gaussian", data.images) if plan.afs else None
                schedules = (("polynomial", polynomial(plan.num_steps, 0.002, 80.0)),
                             ("logsnr", logsnr(plan.num_steps, 0.002, 80.0)),
                             ("gits", gits_sigmas(cost, settings, spec, plan, data, model, afs)))  # fmt: skip
                for schedule, sigmas in schedules:
                    error = distance(solve(spec, sigmas, afs=afs), finest)
                    smallest = min(smallest, (error, f"{name} {schedule} NFE {nfe}"), key=lambda e: e[0])
        threshold = smallest[0] / 10
        print(
            f"{model_name} ({count} samples, {time.perf_counter() - start:.0f} s): smallest truncation error at "
            f"NFE 4-10 {smallest[0]:.3f} ({smallest[1]}), so a reference must err by less than {threshold:.4f}\n"
        )
        print("| model | reference solver | steps | NFE | error vs 4x the steps | below a tenth? |")
        print("|---|---|---|---|---|---|")
        for (name, steps), (nfe, error) in errors.items():
            verdicts.setdefault((name, steps), []).append(error < threshold)
            worst[(name, steps)] = max(worst.get((name, steps), 0.0), error / threshold)
            print(f"| {model_name} | {name} | {steps} | {nfe} | {error:.3g} | {'yes' if error < threshold else 'no'} |")
        print()
    good = [(errors[key][0], worst[key], key) for key, ok in verdicts.items() if all(ok)]
    if good:  # the fewest NFE; among those, the smallest error (relative to its threshold) on the harder model
        nfe, ratio, (name, steps) = min(good)
        print(
            f"cheapest reference that qualifies on both models: {name}, {steps} steps ({nfe} NFE per sample; "
            f"its error is {ratio:.2f} of the threshold on the harder model)"
        )
    else:
        print("no candidate qualifies on both models")


def joblib_threads(num_samples: int = 64) -> None:
    """A two-job joblib sweep with a GITS search in each job, with each job on torch's default threads (every
    core: what fewstep did before `threads`) and with `threads=auto` (cores / jobs)."""
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[1]
    print(f"\n## Threads per job: a joblib sweep of two GITS jobs at once ({torch.get_num_threads()} cores here)\n")
    print("| threads | per job | sweep wall s |")
    print("|---|---|---|")
    for value, label in ((torch.get_num_threads(), "torch's default (before)"), ("auto", "auto (after)")):
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, str(root / "run.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "schedule=gits", "solver=euler,ipndm", "nfe=5", f"num_samples={num_samples}",
                       f"threads={value}", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp}/sweep",
                       f"paths.cache_dir={tmp}/cache"]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, cwd=root, check=True, capture_output=True)
            wall = time.perf_counter() - start
        per_job = value if value != "auto" else max(1, torch.get_num_threads() // 2)
        print(f"| {label} | {per_job} | {wall:.1f} |", flush=True)


def _ddp_primitives(rank: int, world_size: int, port: int, folder: str, out: str) -> None:
    """One rank of the DDP overhead measurement: what fewstep's sampling run does across processes."""
    import json

    import torch.distributed as dist

    from fewstep.app.shards import ShardStore

    torch.set_num_threads(1)
    start = time.perf_counter()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    times = {"process group start-up": time.perf_counter() - start}
    grid = 61
    record = {"grid": [0.0] * grid, "cost": [[0.5] * grid for _ in range(grid)], "indices": list(range(6))}

    def median_of(fn, repeats=7):
        seconds = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - t0)
        return statistics.median(seconds)

    times["broadcast of a GITS search record (61 x 61 cost)"] = median_of(
        lambda: dist.broadcast_object_list([record if rank == 0 else None], src=0)
    )
    for name, dim in (("LeNet", 128), ("Inception", 2048)):
        sums = torch.zeros(dim + dim * dim + 1, dtype=torch.float64)
        label = f"all-reduce of the {name} feature sums ({dim} + {dim}^2 float64)"
        times[label] = median_of(lambda sums=sums: dist.all_reduce(sums))
    store = ShardStore(Path(folder) / f"rank{rank}", (1, 28, 28))
    samples = (torch.rand(64, 1, 28, 28) * 255).to(torch.uint8)
    counter = iter(range(10**6))

    def write():
        first = next(counter) * 64
        store.write(torch.arange(first, first + 64), samples, 0.1)

    times["shard write (64 samples, atomic, checksummed)"] = median_of(write)
    t0 = time.perf_counter()
    dist.destroy_process_group()
    times["process group shut-down"] = time.perf_counter() - t0
    if rank == 0:
        Path(out).write_text(json.dumps(times))


def ddp_overheads(num_samples: int = 64) -> None:
    """DDP's fixed costs on CPU (gloo): the same sampling run in one and in two processes, and the primitives a run
    uses across processes, timed in a two-process group. No speed-up can be measured here (two processes compute
    like one), so these are costs per run, not a scaling figure."""
    import json
    import socket
    import subprocess
    import sys
    import tempfile

    import torch.multiprocessing as mp

    root = Path(__file__).resolve().parents[1]
    print(f"\n## DDP fixed overheads (CPU, gloo; `python run.py num_samples={num_samples}` with and without "
          "`trainer=ddp trainer.devices=2`)\n")  # fmt: skip
    print("| run | wall s |")
    print("|---|---|")
    for label, extra in (("1 process", []), ("2 processes (trainer=ddp trainer.devices=2)",
                                              ["trainer=ddp", "trainer.devices=2"])):  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            command = [
                sys.executable,
                str(root / "run.py"),
                f"num_samples={num_samples}",
                *extra,
                "trainer.enable_progress_bar=false",
                f"hydra.run.dir={tmp}/run",
                f"paths.cache_dir={tmp}/cache",
            ]
            start = time.perf_counter()
            subprocess.run(command, cwd=root, check=True, capture_output=True)
            print(f"| {label} | {time.perf_counter() - start:.1f} |", flush=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        mp.spawn(_ddp_primitives, args=(2, port, tmp, str(out)), nprocs=2)
        times = json.loads(out.read_text())
    print("\n| step, in a two-process gloo group (rank 0) | ms |")
    print("|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds * 1e3:.1f} |")


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
            "scoring",
            "reference",
            "learned",
            "determinism",
            "searches",
            "warmup",
            "threads",
            "ddp",
        ],  # fmt: skip
    )
    parser.add_argument("--solvers", nargs="*", default=list(DETERMINISTIC), help="solvers of the searches table")
    parser.add_argument("--nfes", nargs="*", type=int, default=[4, 5, 6, 8, 10], help="NFEs of the searches table")
    parser.add_argument("--learned-samples", type=int, default=512, help="samples per cell of the learned table")
    parser.add_argument(
        "--compare-weights",
        nargs="*",
        default=[],
        help="other U-Net .pt files whose reference "
        "solution's FID the learned table reports too (e.g. earlier weights)",
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
    from fewstep.schedules.gits import GitsSettings

    GITS_DEFAULTS = GitsSettings()
    if {"gits", "truncation", "scoring", "searches"} & set(args.only):
        started = time.perf_counter()
        cost = gits_timings(denoiser, data, args.batch, GITS_DEFAULTS)
        gits_seconds = time.perf_counter() - started
        if "searches" in args.only:
            searches_table(denoiser, data, cost, gits_seconds, GITS_DEFAULTS, args.solvers, args.nfes)
        if "truncation" in args.only:
            truncation_table(denoiser, data, cost, GITS_DEFAULTS)
        if "scoring" in args.only:
            scoring(denoiser, data, cost, GITS_DEFAULTS)
    if "diffusers" in args.only:
        from diffusers_overhead import diffusers_overhead

        diffusers_overhead(denoiser, data.shape, args.batch, args.repeats)
    if "stochastic" in args.only:
        stochastic_table(denoiser, data)
    if "evaluation" in args.only:
        evaluation(data)
    if "analysis" in args.only:
        analysis()
    if "reference" in args.only:
        reference_choice(data, args.batch, GITS_DEFAULTS)
    if "learned" in args.only:
        learned_model(data, args.batch, args.solvers, args.nfes, args.learned_samples, args.compare_weights)
    if "determinism" in args.only:
        determinism(data)
    if "warmup" in args.only:
        warmup_study(denoiser, data)
    if "threads" in args.only:
        joblib_threads()
    if "ddp" in args.only:
        ddp_overheads()


if __name__ == "__main__":
    main()
