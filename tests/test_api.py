"""The public Python API: the README's example from a temporary directory, and agreement with the command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fewstep
from fewstep.data import digits, seeded_noise
from fewstep.errors import FewstepError
from fewstep.models import KDEDenoiser
from fewstep.schedules import polynomial
from fewstep.solvers import dpm, ipndm

from .conftest import QUICK
from .test_readme import pixel_fd_with_numpy

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_example_runs_from_a_temporary_directory(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Schedule(sigmas=[80, ") and "indices=[0, " in lines[0]
    scores = {line.split(":")[0]: line for line in lines[1:]}
    assert set(scores) == {"gits", "polynomial"} and all("FD " in line and " ± " in line for line in scores.values())
    assert (tmp_path / "gits.png").stat().st_size > 10_000
    readme_output = README.read_text().split("## Python API", 1)[1].split("```\n\n```\n", 1)[1].split("```")[0]
    assert readme_output.splitlines()[0] == lines[0]  # the README shows what the example prints


@pytest.fixture(scope="module")
def kde():
    return KDEDenoiser(digits().images)


def test_sample_is_the_solver_from_per_seed_noise_whatever_the_batch(kde):
    sigmas = polynomial(6, 0.002, 80.0)
    seeds = list(range(10, 22))
    samples = fewstep.sample(kde, solver="ipndm", sigmas=sigmas, seeds=seeds, shape=(1, 8, 8))
    direct = ipndm(kde, seeded_noise(torch.tensor(seeds), (1, 8, 8)) * 80.0, sigmas)
    assert torch.equal(samples, direct)
    assert torch.equal(samples, fewstep.sample(kde, "ipndm", sigmas, seeds, (1, 8, 8), batch_size=5))
    with_option = fewstep.sample(kde, "dpm", sigmas, seeds[:3], (1, 8, 8), r=0.4)
    assert torch.equal(with_option, dpm(kde, seeded_noise(torch.tensor(seeds[:3]), (1, 8, 8)) * 80.0, sigmas, r=0.4))


def test_bad_api_input_is_one_clear_error(kde):
    sigmas = polynomial(6, 0.002, 80.0)
    with pytest.raises(FewstepError, match=r"solver 'ipndm' takes options .*'max_order'.*, not \['order'\]"):
        fewstep.sample(kde, "ipndm", sigmas, range(2), (1, 8, 8), order=3)
    with pytest.raises(FewstepError, match="strictly decreasing"):
        fewstep.sample(kde, "euler", [1.0, 2.0], range(2), (1, 8, 8))
    with pytest.raises(FewstepError, match="give shape="):
        fewstep.sample(lambda x, s: x, "euler", sigmas, range(2))
    with pytest.raises(FewstepError, match="'ays' is not a schedule search; choose one of \\['gits', 'oss', 'ld3'"):
        fewstep.search_schedule(kde, shape=(1, 8, 8), method="ays")
    with pytest.raises(FewstepError, match="takes options"):
        fewstep.search_schedule(kde, shape=(1, 8, 8), coef=1.2)
    with pytest.raises(FewstepError, match="cache_key="):
        fewstep.search_schedule(lambda x, s: x, shape=(1, 8, 8), num_warmup=2, cache_dir="unused")


@pytest.mark.parametrize("wrong", [lambda x, s: x.flatten(1), lambda x, s: x[:1], lambda x, s: x[0], lambda x, s: 0.0])
def test_a_denoiser_of_the_wrong_shape_is_named_not_broadcast(wrong):
    """x[:1] would broadcast into every sample silently; flattened output would fail deep inside a solver."""
    sigmas = polynomial(4, 0.002, 80.0)
    with pytest.raises(FewstepError, match=r"the denoiser returned .* for x of shape \(4, 1, 8, 8\): D\(x, sigma\) "
                                           "must return the denoised x, a tensor of x's shape"):  # fmt: skip
        fewstep.sample(wrong, "ipndm", sigmas, range(4), (1, 8, 8))
    with pytest.raises(FewstepError, match="the denoiser returned"):
        fewstep.search_schedule(wrong, shape=(1, 8, 8), nfe=4, num_warmup=4, batch_size=4)


def test_sample_refuses_seeds_shapes_and_batch_sizes_it_cannot_honour(kde):
    sigmas = polynomial(4, 0.002, 80.0)
    with pytest.raises(FewstepError, match=r"^seeds must be integers in \[0, 2\*\*63\), got \[0.5\]"):
        fewstep.sample(kde, "euler", sigmas, [0.5, 2])  # 0.5 would be truncated into seed 0's sample
    with pytest.raises(FewstepError, match=r"got \[-1\]"):
        fewstep.sample(kde, "euler", sigmas, [-1, 2])
    with pytest.raises(FewstepError, match=r"^shape=\(1, 7, 7\), but the denoiser samples \(1, 8, 8\)"):
        fewstep.sample(kde, "euler", sigmas, range(2), (1, 7, 7))
    with pytest.raises(FewstepError, match="batch_size must be at least 1, got 0"):
        fewstep.sample(kde, "euler", sigmas, range(2), batch_size=0)
    import numpy as np

    numpy_seeds = fewstep.sample(kde, "euler", sigmas, np.arange(3))
    assert torch.equal(numpy_seeds, fewstep.sample(kde, "euler", sigmas, range(3)))


def test_evaluate_refuses_non_finite_images_naming_their_rows():
    data = digits().images[:300]
    samples = data[:64].clone()
    samples[3, 0, 1, 1], samples[17] = float("nan"), float("inf")
    clean = data[64:128]
    with pytest.raises(FewstepError, match=r"^samples rows 3, 17 \(of 64\) hold NaN or inf; re-sample those seeds"):
        fewstep.evaluate(samples, data, features="pixels")
    with pytest.raises(FewstepError, match=r"^reference rows 3, 17 \(of 64\) hold NaN or inf; re-run the reference"):
        fewstep.evaluate(clean, data, reference=samples, features="pixels")
    with pytest.raises(FewstepError, match=r"^data rows 303, 317 \(of 364\) hold NaN or inf; leave those images out"):
        fewstep.evaluate(clean, torch.cat([data, samples]), features="pixels")
    from fewstep.data import ImageDataset

    with pytest.raises(FewstepError, match=r"^data row 300 \(of 301\) hold NaN"):
        fewstep.evaluate(clean, ImageDataset("d", torch.cat([data, samples[3:4]])), features="pixels")
    with pytest.raises(FewstepError, match=r"^samples must be images \(N, C, H, W\) in \[-1, 1\], got shape \(1, 8"):
        fewstep.evaluate(clean[0], data, features="pixels")
    with pytest.raises(FewstepError, match=r"uint8 images: x.float\(\) / 127.5 - 1"):
        fewstep.evaluate(((clean + 1) * 127.5).to(torch.uint8), data, features="pixels")
    with pytest.raises(FewstepError, match=r"^afs_data row 0 \(of 1\) hold NaN"):
        fewstep.sample(lambda x, s: x, "dpm", polynomial(3, 0.002, 80.0), range(2), (1, 8, 8), afs_prior="gaussian",
                       afs_data=samples[3:4])  # fmt: skip


GITS = ["dataset=digits", "schedule=gits", "schedule.num_warmup=12", "schedule.grid_size=21", "batch_size=4",
        "trainer.enable_progress_bar=false"]  # fmt: skip


@pytest.mark.parametrize("solver, nfe", [("ipndm", 5), ("dpm", 5)])  # dpm at odd NFE: the AFS step is inserted
def test_search_schedule_finds_the_command_lines_schedule(make_cfg, kde, solver, nfe):
    searched = fewstep.run(make_cfg(*GITS, "task=search", f"solver={solver}", f"nfe={nfe}"))
    schedule = fewstep.search_schedule(kde, shape=(1, 8, 8), nfe=nfe, solver=solver, num_warmup=12, grid_size=21,
                                       batch_size=4, afs_data=digits().images)  # fmt: skip
    assert schedule.indices == searched["indices"]
    assert schedule.sigmas.tolist() == searched["sigmas"]
    assert schedule.cost.shape == (21, 21) and schedule.grid[0] == 80.0
    assert schedule.to_diffusers()["sigmas"] == [s for s in searched["sigmas"] if s > 0]


def test_search_schedule_cache_is_reused_and_checked(kde, tmp_path, caplog):
    args = {"shape": (1, 8, 8), "nfe": 4, "solver": "euler", "num_warmup": 6, "grid_size": 11}
    first = fewstep.search_schedule(kde, cache_dir=tmp_path, cache_key="digits-kde", **args)
    (schedule_file,) = (tmp_path / "gits" / "schedules").glob("*.json")
    assert fewstep.search_schedule(kde, cache_dir=tmp_path, cache_key="digits-kde", **args).indices == first.indices
    record = json.loads(schedule_file.read_text())
    record["indices"][1] += 1  # altered after it was written: the checksum no longer matches
    schedule_file.write_text(json.dumps(record))
    again = fewstep.search_schedule(kde, cache_dir=tmp_path, cache_key="digits-kde", **args)
    assert again.indices == first.indices and "damaged gits schedule cache" in caplog.text


def test_evaluate_equals_the_command_lines_scores(make_cfg, tmp_path):
    import numpy as np

    metrics = fewstep.run(make_cfg(*QUICK, "dataset=mnist5k", "eval/features=pixels", "eval.save_npz=true",
                                   "eval.baseline=null"))  # fmt: skip
    run_dir = tmp_path / "run"
    images = np.load(run_dir / "samples.npz")["arr_0"]
    samples = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 127.5 - 1  # the scored uint8 images
    from fewstep.data import mnist5k

    scores = fewstep.evaluate(samples.float(), data=mnist5k().images, features="pixels",
                              bootstrap=0, kid_subsets=10)  # fmt: skip
    assert scores["fd"] == pytest.approx(metrics["fd"], rel=1e-9)
    assert scores["fd"] == pytest.approx(pixel_fd_with_numpy(images), rel=1e-5)
