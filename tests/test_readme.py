"""Every command the README and the docs show, run exactly as written, in order, from a fresh copy of the
repository (the tracked files, as a clone has them): a later command may use what an earlier one wrote (the U-Net
trained, then sampled). The README's run in `make test`, the docs' (docs/*.md, in name order) in `make test-full`.
Only size overrides (`SIZES`) are appended. Commands that need a file that is not here (a real checkpoint,
published statistics) run too and must stop with one clear error line that names what is missing.

`make run` is `python run.py` (also in the list) after the install, and `make test` is what CI runs; neither is
re-run here (the install would point the shared virtual environment at the temporary copy).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fewstep.app.shards import ShardStore

from .conftest import ROOT, gemm_bits_depend_on_threads

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
# what may be appended: sizes only, never a path or a directory (tests must not hide a needed override)
SIZES = {"num_samples": "24", "schedule.num_warmup": "32", "task.steps": "20", "hydra.sweeper.n_trials": "2"}
# commands that need what is not here, and the words their error must contain
# (the GPU experiments meet the missing GPU first on a machine without one)
NEEDS_FILES = {"/data/": ("/data/", "needs a CUDA GPU"), "hydra/launcher=slurm": ("sbatch",)}  # no cluster here


def readme_commands(page: Path = README) -> list[list[str]]:
    """argv of every `python ...` line in a page's bash blocks (continuation lines joined, comments cut)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["python"]:
                commands.append(argv)
    return commands


def with_sizes(argv: list[str]) -> list[str]:
    """`python` is this interpreter; a run.py command gets the size overrides that apply to it (Hydra takes the
    last value given, so a size the README sets is overridden, never removed)."""
    if argv[1] != "run.py":
        return [sys.executable, *argv[1:]]
    task = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("task=")), "sample")
    schedule = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("schedule=")), "gits")  # the default
    applies = {"num_samples": task != "train", "task.steps": task == "train",
               "schedule.num_warmup": task in ("sample", "search") and schedule == "gits",  # every job searches
               "hydra.sweeper.n_trials": any("optuna" in arg for arg in argv)}  # fmt: skip
    return [sys.executable, *argv[1:], *(f"{key}={value}" for key, value in SIZES.items() if applies[key])]


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    """The tracked files (and new ones not ignored), as a clone would hold them; no outputs, no caches."""
    copy = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


COMMANDS = readme_commands()
DOC_COMMANDS = [(page.name, argv) for page in DOCS for argv in readme_commands(page)]
RUN_DIRS: dict[str, Path] = {}  # command -> its run directory, for comparisons with later commands


def test_the_readme_shows_the_commands_it_documents():
    text = " ".join(" ".join(argv) for argv in COMMANDS)
    for needed in ("run.py -m", "hydra/launcher=joblib", "experiment=optuna_coeff", "trainer=ddp", "task=search",
                   "eval.save_npz=true", "hydra/launcher=slurm", "experiment=quick"):  # fmt: skip
        assert needed in text, needed
    docs = " ".join(" ".join(argv) for _, argv in DOC_COMMANDS)
    for needed in ("task=analyze", "task=train", "model=unet_mnist5k", "schedule=oss", "dashboard"):
        assert needed in docs, needed
    assert len(README.read_text().splitlines()) <= 300  # a newcomer's page; the rest is in docs/


def test_the_readme_links_every_docs_page():
    text = README.read_text()
    assert DOCS and all(f"(docs/{page.name})" in text for page in DOCS)


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(argv[1:])[:80] for argv in COMMANDS])
def test_readme_command_runs_as_written(argv, fresh_copy):
    run_as_written(argv, fresh_copy)


@pytest.mark.slow
@pytest.mark.parametrize("page, argv", DOC_COMMANDS, ids=[f"{p}: {' '.join(a[1:])[:70]}" for p, a in DOC_COMMANDS])
def test_docs_command_runs_as_written(page, argv, fresh_copy):
    run_as_written(argv, fresh_copy)


def run_as_written(argv: list[str], fresh_copy: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FEWSTEP_ROOT"}
    env["PYTHONWARNINGS"] = "ignore"
    if "trainer=ddp" in argv:  # samples are cached by key: set the 1-process job's aside, so both ranks sample
        cache = fresh_copy / "outputs" / "cache"
        (cache / "samples").rename(cache / "samples_one_process")
    result = subprocess.run(with_sizes(argv), cwd=fresh_copy, env=env, capture_output=True, text=True, timeout=900)
    missing = next((words for marker, words in NEEDS_FILES.items() if any(marker in arg for arg in argv)), None)
    if missing is not None:  # a real checkpoint or published statistics: not here, so a clear error
        assert result.returncode == 2, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert "Traceback" not in result.stderr and any(words in last for words in missing), last
        return
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    check_outputs(argv, result.stdout, fresh_copy)


def check_outputs(argv: list[str], stdout: str, root: Path) -> None:
    """What the README promises each kind of command leaves behind."""
    if "dashboard" in argv:  # no W&B server here: the report's specification, written offline
        assert "the report's specification is in wandb_dashboard.json" in stdout
        assert json.loads((root / "wandb_dashboard.json").read_text())["type"] == "Report"
        return
    if argv[1] != "run.py":  # python -m fewstep solvers
        assert "| solver | NFE per step | order |" in stdout
        return
    if "-m" in argv:
        sweep = max((root / "outputs" / "multiruns").glob("*/*"), key=lambda p: p.stat().st_mtime)
        summary = (sweep / "summary.md").read_text()
        assert "±" in summary and "| floor | reference solution |" in summary and "samples per job" in summary
        assert (sweep / "samples_compare.png").stat().st_size > 1000
        assert (sweep / "fid_vs_nfe.png").is_file() and (sweep / "truncation_error_vs_nfe.png").is_file()
        rows = list(csv.DictReader(open(sweep / "summary.csv")))
        if "experiment=optuna_coeff" in argv:  # one row per trial, one warm-up for all of them
            assert "best_value" in (sweep / "optimization_results.yaml").read_text()
            assert len(rows) == 2 and all(row["variant"].startswith("schedule.coeff=") for row in rows)
            assert len(list((root / "outputs" / "cache" / "gits" / "costs").glob("*.pt"))) >= 1
        return
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("run_dir: "), last
    run_dir = Path(last.removeprefix("run_dir: "))
    assert (run_dir / "run.log").is_file()
    task = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("task=")), "sample")
    if task == "analyze":
        assert run_dir.name.endswith("_analyze_heun100_kde_mnist5k")  # the folder says what ran
        for view in ("boomerang", "pca", "deviation"):
            assert (run_dir / f"{view}.png").is_file()
        return
    if task != "sample":
        return
    metrics = json.loads((run_dir / "metrics.json").read_text())
    kinds = {"fid": float, "fid_std": float, "kid": float, "kid_std": float, "fid_vs_reference": float,
             "truncation_error": float, "fd": float, "nfe": int, "sigmas": list, "solver": str}  # fmt: skip
    for key, kind in kinds.items():
        assert isinstance(metrics[key], kind), key
    for name in ("config.yaml", "schedule.json", "samples.png", "csv/metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert "| schedule " in stdout and "floor: reference solution" in stdout
    RUN_DIRS[" ".join(argv[1:])] = run_dir
    if argv[1:] == ["run.py"]:  # the default job: GITS against its baseline on the same seeds
        assert metrics["schedule"] == "gits" and metrics["baseline_schedule"] == "polynomial"
        assert "baseline_fid" in metrics and (run_dir / "gits.png").is_file()
        assert "polynomial (baseline)" in stdout
        # and oss beside it (eval.also_search=auto on the KDE): a row, a panel's samples, its record and plot
        assert metrics["also_searched"] == ["oss"] and "oss_fid" in metrics and (run_dir / "oss.png").is_file()
        assert "\n| oss " in stdout and json.loads((run_dir / "schedule.json").read_text())["also_searched"]["oss"]
    if "trainer=ddp" in argv:  # the same job in two processes: the same samples and the same metrics as one
        one_dir = RUN_DIRS["run.py"]
        one = json.loads((one_dir / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and one["world_size"] == 1
        seeds = list(range(metrics["num_samples"]))
        (store,) = (run_dir / "samples").iterdir()
        one_process = root / "outputs" / "cache" / "samples_one_process" / store.name
        ours, theirs = ShardStore(store).load(seeds), ShardStore(one_process).load(seeds)
        # the README's two commands run with 2 threads (one process) and 1 per rank: the same bits, except on CPUs
        # whose float32 matrix products depend on the thread count, where they are float32 rounding apart
        loose = gemm_bits_depend_on_threads()
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-4) if loose else torch.equal(ours, theirs)
        assert len(list(store.glob("*.pt"))) >= 2  # each rank wrote the shards of its own seeds
        # every image passes the extractor in the same batch either way; only the ranks' float64 sums add up in
        # another order, and KID and the bootstrap see the features in seed order
        for key, value in one.items():
            if isinstance(value, float) and key not in ("sampling_seconds",):
                assert metrics[key] == pytest.approx(value, rel=1e-3 if loose else 1e-9, abs=1e-9), key
    if argv[1:] == ["run.py", "solver=dpm", "nfe=5"]:  # 3 DPM-Solver-2 steps, the first answered by AFS
        assert metrics["nfe"] == 5 and metrics["afs"] is True and len(metrics["sigmas"]) == 4
        assert "3 steps x 2 NFE - 1 saved by AFS" in (run_dir / "run.log").read_text()
        gits = json.loads((run_dir / "schedule.json").read_text())["gits"]
        # the reference code's AFS handling: DP over 2 steps, then the AFS step inserted where the solver does best
        distances = {int(k): v for k, v in gits["afs_insert_distances"].items()}
        assert sorted(distances) == list(range(1, gits["indices"][2]))
        assert gits["indices"][1] == min(distances, key=distances.get)
    if "eval.save_npz=true" in argv:
        import numpy as np

        images = np.load(run_dir / "samples.npz")["arr_0"]
        assert images.dtype == np.uint8 and images.shape == (metrics["num_samples"], 28, 28, 1)
        assert metrics["fd"] == pytest.approx(pixel_fd_with_numpy(images), rel=1e-5)  # the images it scored


def pixel_fd_with_numpy(images) -> float:
    """The pixel FD of uint8 N x H x W x C images to mnist5k written as EDM writes PNGs: numpy and scipy only."""
    import numpy as np
    from scipy import linalg

    from fewstep.data import mnist5k

    data = (mnist5k().images.numpy() * 127.5 + 128).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    def stats(x):
        x = x.reshape(len(x), -1).astype(np.float64) / 127.5 - 1
        return x.mean(0), np.cov(x, rowvar=False)

    (m1, c1), (m2, c2) = stats(images), stats(data)
    with warnings.catch_warnings():  # "singular matrix": the rank-deficient product; its square root is still fine
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(c1 @ c2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))
