import subprocess
import sys

from fewstep.app.cli import schedules_table, solvers_table
from fewstep.schedules import SCHEDULES
from fewstep.solvers import SOLVERS

from .conftest import CONF, ROOT


def test_solver_listing_names_every_solver_with_cost_order_and_options():
    table = solvers_table()
    for spec in SOLVERS.values():
        row = next(line for line in table.splitlines() if line.startswith(f"| {spec.name} |"))
        assert f"| {spec.nfe_per_step} | {spec.order} |" in row
    assert "max_order=3, variant='bh2'" in table and "afs=auto|true|false" in table


def test_every_solver_and_schedule_has_a_config_and_vice_versa():
    assert {p.stem for p in (CONF / "solver").glob("*.yaml")} == set(SOLVERS)
    assert {p.stem for p in (CONF / "schedule").glob("*.yaml")} == set(SCHEDULES) | {"explicit", "gits", "oss", "ld3"}
    assert all(f"| {name} |" in schedules_table() for name in [*SCHEDULES, "explicit", "gits", "oss", "ld3"])


def test_run_help_points_to_the_listing():
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "python -m fewstep solvers" in result.stdout and "solver: deis, dpm, dpmpp" in result.stdout
