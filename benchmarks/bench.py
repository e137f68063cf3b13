"""fewstep benchmarks: printed ratios measured in one run (nothing is asserted). One module per section
(`--only NAME` runs that section); this file parses the arguments and runs them in order.

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
14. Held-out denoisers (--only heldout; not in the default run, about an hour here): every range-free hand-crafted
   schedule, GITS, oss and ld3 for each solver (--solvers) and NFE (--nfes) on two Gaussian mixtures drawn from a
   seed (--heldout-seed; new each run by default), the digits KDE, the mnist5k KDE, with --heldout-unet the
   shipped U-Net and with --heldout-flow the shipped flow (flow_mnist5k, with schedule=flow among the hand-crafted
   schedules; --heldout-only NAME ...: those alone; --heldout-searches oss ... oss:polish=32: those searches or
   variants alone): ratios to the best hand-crafted schedule with paired standard errors, each search's cost (and
   oss's wall time over its model time), and the Searches-2 goals, each met or not.
15. Flow models (--only flow; not in the default run): the error of starting a flow at sigma_max instead of t = 1,
   and every deterministic solver with schedule=flow (shift 1, 3) and polynomial on KDE flows and flow_mnist5k.
16. Shift transfer (--only flow_shift; not in the default run): a schedule searched on the mnist5k KDE flow at
   28x28, scaled by 2 and 3, against one searched at 56x56 (mnist5k upsampled), euler and ipndm at NFE 5 and 8.
5. Evaluation: feature throughput (images/s) of LeNet and Inception-v3, and the wall time of a whole
   `run.py` job with 1 and 2 CPU processes (trainer=ddp), same seeds.
"""

from __future__ import annotations

import argparse
import time

import torch
from analysis import analysis
from ddp import ddp_overheads
from determinism import determinism
from evaluation import evaluation
from flow import flow_models, shift_transfer
from gits_tables import gits_timings, truncation_table
from heldout import heldout, search_variant
from learned import learned_model
from overhead import lightning_overhead, solver_overhead
from reference import reference_choice
from scoring import scoring
from searches import searches_table, warmup_study
from stochastic import stochastic_table
from threads import joblib_threads
from timing import DETERMINISTIC

from fewstep.data import mnist5k
from fewstep.models import KDEDenoiser


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
    parser.add_argument("--heldout-samples", type=int, default=256, help="samples per cell of the held-out table")
    parser.add_argument("--heldout-seed", type=int, default=None, help="the mixtures' seed (default: new each run)")
    parser.add_argument("--heldout-unet", action="store_true", help="the held-out table also on unet_mnist5k")
    parser.add_argument("--heldout-flow", action="store_true", help="the held-out table also on flow_mnist5k")
    parser.add_argument("--heldout-searches", nargs="+", default=["gits", "oss", "ld3"], type=search_variant,
                        help="the searches the held-out table runs, each a search (gits, oss, ld3) or a search with "
                        "settings, e.g. oss:polish=32 or oss:polish=32,polish_batch=4")  # fmt: skip
    parser.add_argument("--heldout-only", nargs="*", default=[], help="the held-out table on these denoisers only "
                        "(e.g. flow_mnist5k, unet_mnist5k, 'digits KDE')")
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
    if "flow" in args.only:
        flow_models(solvers=args.solvers)
    if "flow_shift" in args.only:
        shift_transfer()
    if "heldout" in args.only:
        heldout(args.solvers, args.nfes, args.heldout_samples, args.heldout_seed, args.heldout_unet,
                args.heldout_flow, args.heldout_only, args.heldout_searches)


if __name__ == "__main__":
    main()
