"""A search is one package, one registry line and one YAML file: a toy search defined and registered by this test
runs through the Python API and through run.py (CLI, task=search, outputs, plot) without any other file changing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fewstep
from fewstep import FewstepError
from fewstep.models import GaussianDenoiser
from fewstep.schedules import polynomial
from fewstep.schedules.registry import get_search, search_names

ROOT = Path(__file__).resolve().parents[1]

# The toy search: `steps` evenly spaced points of the polynomial grid (so its sigmas are the polynomial schedule's).
TOY_SEARCH = textwrap.dedent(
    '''
    from dataclasses import asdict, dataclass, field

    from fewstep.errors import FewstepError
    from fewstep.schedules.registry import SearchMethod, register_search
    from fewstep.schedules.teacher import base_grid
    from fewstep.utils.options import options_like, reject_unknown

    DEFAULTS = {"base": "polynomial", "rho": 7.0, "base_options": {}, "grid_size": 61}


    @dataclass(frozen=True)
    class ToySettings:
        base: str = "polynomial"
        rho: float = 7.0
        base_options: dict = field(default_factory=dict)
        grid_size: int = 61


    def settings(options):
        reject_unknown("schedule 'toy'", options, DEFAULTS)
        return ToySettings(**options_like("schedule", {**DEFAULTS, **options}, DEFAULTS))


    def check(settings, spec, steps):
        if (settings.grid_size - 1) % (steps.num_steps - int(steps.denoise_to_zero)):
            raise FewstepError("toy: grid_size - 1 must be a multiple of the steps")


    def run(settings, context):
        grid = base_grid(settings, context.sigma_min, context.sigma_max)
        stride = (len(grid) - 1) // context.num_steps
        indices = list(range(0, len(grid), stride))
        return {"sigmas": grid[indices].tolist(), "indices": indices, "grid": grid.tolist(), "path_cost": 0.0,
                "settings": asdict(settings), "solver": context.sampler.name}


    def plot(fig, ax, record):
        ax.plot(record["indices"], "o-")
        ax.set_title("toy: evenly spaced grid points")


    SEARCH = SearchMethod("toy", DEFAULTS, settings, check, run, plot, "every k-th grid point")
    register_search(SEARCH)
    '''
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    (folder / "toy_search.py").write_text(TOY_SEARCH)
    (folder / "conf" / "schedule").mkdir(parents=True)
    (folder / "conf" / "schedule" / "toy.yaml").write_text("name: toy\nbase: polynomial\nrho: 7.0\nbase_options: {}\n"
                                                           "grid_size: 61\n")  # fmt: skip
    sys.path.insert(0, str(folder))
    try:
        import toy_search  # noqa: F401 - registers the search

        yield folder
    finally:
        sys.path.remove(str(folder))


def test_a_registered_search_runs_through_the_api(toy):
    assert "toy" in search_names() and get_search("toy").summary == "every k-th grid point"
    schedule = fewstep.search_schedule(GaussianDenoiser(), shape=(1, 4, 4), nfe=6, solver="euler", method="toy")
    assert schedule.method == "toy" and schedule.indices == [0, 10, 20, 30, 40, 50, 60] and schedule.cost is None
    torch.testing.assert_close(schedule.sigmas, polynomial(6, 0.002, 80.0), rtol=1e-12, atol=0)
    schedule.plot(toy / "toy_api.png")
    assert (toy / "toy_api.png").stat().st_size > 1000
    with pytest.raises(FewstepError, match="grid_size - 1 must be a multiple"):  # the search's own check
        fewstep.search_schedule(GaussianDenoiser(), shape=(1, 4, 4), nfe=7, solver="euler", method="toy")
    with pytest.raises(FewstepError, match="takes options"):
        fewstep.search_schedule(GaussianDenoiser(), shape=(1, 4, 4), nfe=6, solver="euler", method="toy", coeff=1.2)


def test_a_registered_search_runs_through_run_py(toy):
    """run.py with the toy's YAML on Hydra's search path (how a plugin ships its config), in a process that imported
    the toy package first: task=search writes the schedule, its record and the search's own plot."""
    run_py = str(ROOT / "run.py")
    script = ("import runpy, sys, toy_search\nsys.argv = ['run.py', *sys.argv[1:]]\n"
              f"runpy.run_path({run_py!r}, run_name='__main__')")  # fmt: skip
    command = [sys.executable, "-c", script, "task=search", "schedule=toy", "solver=euler", "nfe=6",
               "dataset=digits", "model=gaussian", f"hydra.searchpath=[file://{toy / 'conf'}]"]  # fmt: skip
    out = subprocess.run(command, cwd=toy, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(toy)})  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = Path(next(line for line in out.stdout.splitlines() if line.startswith("run_dir: "))[9:])
    record = json.loads((run_dir / "schedule.json").read_text())
    assert record["toy"]["method"] == "toy" and record["toy"]["indices"] == [0, 10, 20, 30, 40, 50, 60]
    torch.testing.assert_close(torch.tensor(record["sigmas"], dtype=torch.float64), polynomial(6, 0.002, 80.0),
                               rtol=1e-12, atol=0)  # fmt: skip
    assert (run_dir / "toy.png").stat().st_size > 1000
