"""What the CPU cannot show, on one GPU, as one table (run it through scripts/gpu_check.sh).

Each row runs fewstep's own commands (`python run.py ...`, each in a fresh FEWSTEP_ROOT so no cache is shared) or
its scoring code, on the GPU and on what it must agree with:
  1. the default job (GITS search, sampling, FID) with trainer=gpu against trainer=cpu;
  2. the oss search on the GPU against the CPU;
  3. U-Net sampling (model=unet_mnist5k) under bf16-mixed and 16-mixed against 32-true, all on the GPU;
  4. Inception-v3 FID features on the GPU against the CPU on the same images;
  5. a 1-GPU DDP run (nccl) against the plain GPU run.
Prints one Markdown table (and writes it, with the raw numbers, to $OUT or --out when given).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS: list[dict] = []
REHEARSAL = False  # --rehearse-on-cpu: every GPU setting replaced by its CPU twin, to try the script itself here


def on_device(args: list[str]) -> list[str]:
    """The GPU settings of a command, or their CPU twins in a rehearsal."""
    if not REHEARSAL:
        return args
    twins = {"trainer=gpu": "trainer=cpu", "trainer.accelerator=gpu": "trainer.accelerator=cpu",
             "trainer.strategy.process_group_backend=nccl": "trainer.strategy.process_group_backend=gloo",
             "trainer.precision=16-mixed": "trainer.precision=bf16-mixed"}  # fmt: skip
    return [twins.get(arg, arg) for arg in args]


def gpu() -> str:
    return "cpu" if REHEARSAL else "cuda"


def run_py(root: Path, args: list[str]) -> dict:
    """`python run.py ARGS` with its outputs under `root`; the run's metrics.json and folder."""
    env = {**os.environ, "FEWSTEP_ROOT": str(root), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    started = time.time()
    args = on_device(args)
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), *args, "trainer.enable_progress_bar=false"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"run.py {' '.join(args)} failed ({done.returncode}): {tail}")
    run_dir = Path(done.stdout.strip().splitlines()[-1].removeprefix("run_dir: "))
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    schedule = json.loads((run_dir / "schedule.json").read_text()) if (run_dir / "schedule.json").is_file() else {}
    return {"metrics": metrics, "schedule": schedule, "dir": run_dir, "seconds": time.time() - started}


def sigmas_of(run: dict) -> list[float]:
    return run["metrics"].get("sigmas") or run["schedule"].get("sigmas") or []


def max_rel(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return float("inf")
    return max((abs(x - y) / max(abs(y), 1e-30) for x, y in zip(a, b, strict=True)), default=0.0)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def row(check: str, measured: str, expected: str, ok: bool, raw: dict | None = None) -> None:
    ROWS.append({"check": check, "measured": measured, "expected": expected, "verdict": "pass" if ok else "FAIL",
                 "raw": raw or {}})  # fmt: skip
    print(f"[{ROWS[-1]['verdict']}] {check}: {measured}", flush=True)


def guarded(check: str, expected: str, fn) -> None:
    try:
        fn()
    except Exception as err:  # a check that cannot run is a row too
        row(check, f"error: {type(err).__name__}: {err}", expected, False)


def default_job(work: Path) -> None:
    args = ["num_samples=256"]
    cpu, dev = run_py(work / "cpu", [*args, "trainer=cpu"]), run_py(work / "gpu", [*args, "trainer=gpu"])
    a, b = cpu["metrics"], dev["metrics"]
    same_path = max_rel(sigmas_of(dev), sigmas_of(cpu))
    fid = rel(b["fid"], a["fid"])
    trunc = rel(b["truncation_error"], a["truncation_error"])
    row("default job (GITS ipndm NFE 5, KDE mnist5k): trainer=gpu vs cpu",
        f"sigmas max rel diff {same_path:.1e}; FID {b['fid']:.4g} vs {a['fid']:.4g} (rel {fid:.1e}); truncation "
        f"error rel {trunc:.1e}; {dev['seconds']:.0f} s vs {cpu['seconds']:.0f} s",
        "same searched sigmas (rel < 1e-6), FID and truncation error within 1e-3 relative",
        same_path < 1e-6 and fid < 1e-3 and trunc < 1e-3, {"cpu": a, "gpu": b})  # fmt: skip


def oss_search(work: Path) -> None:
    args = ["task=search", "schedule=oss", "solver=heun", "nfe=6"]
    cpu, dev = run_py(work / "oss_cpu", [*args, "trainer=cpu"]), run_py(work / "oss_gpu", [*args, "trainer=gpu"])
    diff = max_rel(sigmas_of(dev), sigmas_of(cpu))
    row("oss search (heun NFE 6, KDE mnist5k): gpu vs cpu",
        f"sigmas max rel diff {diff:.1e}; {dev['seconds']:.0f} s vs {cpu['seconds']:.0f} s",
        "the same searched sigmas (rel < 1e-6)", diff < 1e-6,
        {"cpu": sigmas_of(cpu), "gpu": sigmas_of(dev)})  # fmt: skip


def unet_precision(work: Path) -> None:
    import numpy as np

    args = ["model=unet_mnist5k", "schedule=polynomial", "solver=heun", "nfe=9", "num_samples=256",
            "eval.save_npz=true", "trainer=gpu"]  # fmt: skip
    full = run_py(work / "fp32", [*args, "trainer.precision=32-true"])
    reference = np.load(full["dir"] / "samples.npz")["arr_0"].astype(np.int16)
    for precision in ("bf16-mixed", "16-mixed"):
        low = run_py(work / precision, [*args, f"trainer.precision={precision}"])
        images = np.load(low["dir"] / "samples.npz")["arr_0"].astype(np.int16)
        levels = np.abs(images - reference)
        a, b = full["metrics"], low["metrics"]
        fid = rel(b["fid"], a["fid"])
        row(f"U-Net sampling (unet_mnist5k, heun NFE 9): {precision} vs 32-true on the GPU",
            f"8-bit pixels differing {float((levels > 0).mean()):.2%}, max {int(levels.max())} levels; FID "
            f"{b['fid']:.4g} vs {a['fid']:.4g} (rel {fid:.1e})",
            "FID within 2% relative (reported, not a bound fewstep promises)", fid < 0.02,
            {"fid": [a["fid"], b["fid"]], "max_levels": int(levels.max())})  # fmt: skip


def inception_features(work: Path, weights: str | None) -> None:
    import torch

    from fewstep.data import mnist5k
    from fewstep.metrics.frechet import frechet_distance
    from fewstep.metrics.inception import InceptionFeatures

    net = InceptionFeatures(weights, allow_code=weights is not None)
    net.net.float()  # a carried fp16 copy of the weights: the same weights on both devices
    images = mnist5k().images[:512]
    cpu = torch.cat([net(chunk) for chunk in images.split(64)]).double()
    net.to(gpu())
    on_gpu = torch.cat([net(chunk.to(gpu())).cpu() for chunk in images.split(64)]).double()
    diff = float((on_gpu - cpu).abs().max() / cpu.abs().max())

    def stats(f):
        return f.mean(0).numpy(), torch.cov(f.T).numpy()

    fid_cpu = frechet_distance(*stats(cpu[:256]), *stats(cpu[256:]))
    fid_gpu = frechet_distance(*stats(on_gpu[:256]), *stats(on_gpu[256:]))
    source = "the shipped default_1.pt" if weights is None else f"{Path(weights).name} (fp16 copy of default_1.pt)"
    row(f"Inception-v3 features, 512 mnist5k images, {source}: gpu vs cpu",
        f"max abs diff / max abs feature {diff:.1e}; FID(half vs half) {fid_gpu:.5g} vs {fid_cpu:.5g} "
        f"(rel {rel(fid_gpu, fid_cpu):.1e})",
        "features within 1e-3 of their scale, FID within 1e-3 relative",
        diff < 1e-3 and rel(fid_gpu, fid_cpu) < 1e-3, {"fid": [fid_cpu, fid_gpu]})  # fmt: skip


def ddp_nccl(work: Path) -> None:
    args = ["num_samples=256", "schedule=polynomial"]
    plain = run_py(work / "plain", [*args, "trainer=gpu"])
    ddp = run_py(work / "ddp", [*args, "trainer=ddp", "trainer.accelerator=gpu", "trainer.devices=1",
                                "trainer.strategy.process_group_backend=nccl"])  # fmt: skip
    a, b = plain["metrics"], ddp["metrics"]
    row("1-GPU DDP (nccl) vs the plain GPU run (polynomial, ipndm NFE 5)",
        f"FID {b['fid']!r} vs {a['fid']!r}; world_size {b.get('world_size')}",
        "identical FID (same device, same batches)", b["fid"] == a["fid"], {"plain": a, "ddp": b})  # fmt: skip


def table() -> str:
    lines = ["| check | measured | expected | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['measured']} | {r['expected']} | {r['verdict']} |" for r in ROWS]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--inception", default=None, help="a TorchScript Inception to use instead of default_1.pt")
    parser.add_argument("--rehearse-on-cpu", action="store_true",
                        help="run every check with the CPU in the GPU's place: tries the script, proves nothing")
    args = parser.parse_args()
    import torch

    global REHEARSAL
    REHEARSAL = args.rehearse_on_cpu
    if not REHEARSAL and not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch here; run this on a GPU machine", file=sys.stderr)
        return 2
    device = "CPU REHEARSAL (no GPU; proves nothing)" if REHEARSAL else torch.cuda.get_device_name(0)
    header = (f"GPU check {time.strftime('%Y-%m-%d')}: {device}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}")  # fmt: skip
    print(header, flush=True)
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        guarded("default job: trainer=gpu vs cpu", "", lambda: default_job(work / "default"))
        guarded("oss search: gpu vs cpu", "", lambda: oss_search(work / "oss"))
        guarded("U-Net bf16/fp16 vs fp32", "", lambda: unet_precision(work / "unet"))
        guarded("Inception features: gpu vs cpu", "", lambda: inception_features(work, args.inception))
        guarded("1-GPU DDP (nccl) vs plain", "", lambda: ddp_nccl(work / "ddp"))
    text = f"{header}; {time.time() - started:.0f} s in all\n\n{table()}\n"
    print("\n" + text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.md").write_text(text)
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(ROWS, indent=1, default=str))
    return 0 if all(r["verdict"] == "pass" for r in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
