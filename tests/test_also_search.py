"""`eval.also_search`: other searches' schedules sampled on the run's seeds, one row of the table each; `auto` puts
oss beside a single run of schedule=gits on a closed-form denoiser (the default job)."""

from __future__ import annotations

import json

import pytest

from fewstep import run
from fewstep.app.config.plan import also_searches
from fewstep.errors import FewstepError
from fewstep.solvers import get_solver, plan_steps

from .conftest import QUICK, compose_config


def chosen(tmp_path, *overrides):
    cfg = compose_config(list(overrides), tmp_path)
    spec = get_solver(cfg.solver.name)
    return also_searches(cfg, spec, plan_steps(spec, cfg.nfe))


def test_auto_is_oss_beside_gits_on_a_closed_form_denoiser_only(tmp_path):
    assert chosen(tmp_path) == ["oss"]  # the default job: gits on the mnist5k KDE
    assert chosen(tmp_path, "model=gaussian", "solver=dpm") == ["oss"]
    assert chosen(tmp_path, "schedule=polynomial") == []
    assert chosen(tmp_path, "model=unet_mnist5k") == []  # a learned model: the user names it
    assert chosen(tmp_path, "solver=euler_ancestral") == []  # oss searches for ODE solvers only
    assert chosen(tmp_path, "eval.also_search=[]") == []
    assert chosen(tmp_path, "schedule=oss", "eval.also_search=[gits,oss,gits]") == ["gits"]  # its own run is a row


def test_a_bad_also_search_is_one_line_before_anything_loads(tmp_path):
    with pytest.raises(FewstepError, match=r"eval.also_search: 'polynomial' is not a search; use a list of \["):
        chosen(tmp_path, "eval.also_search=[polynomial]")
    with pytest.raises(FewstepError, match="eval.also_search=oss: schedule=oss searches for a deterministic solver"):
        chosen(tmp_path, "solver=euler_ancestral", "eval.also_search=[oss]")


def test_other_searches_are_rows_panels_and_records_of_the_run(tmp_path, capsys):
    settings = ["eval.also_search=[gits,oss]", "nfe=4"]
    metrics = run(compose_config([*QUICK, *settings], tmp_path))
    assert metrics["schedule"] == "polynomial" and metrics["also_searched"] == ["gits", "oss"]
    for name in ("gits", "oss"):
        assert metrics[f"{name}_truncation_error"] > 0 and len(metrics[f"{name}_sigmas"]) == 5
        assert metrics[f"{name}_sigmas"] != metrics["sigmas"]
        assert (tmp_path / "run" / f"{name}.png").is_file()
    saved = json.loads((tmp_path / "run" / "schedule.json").read_text())
    assert saved["also_searched"]["oss"]["sigmas"] == metrics["oss_sigmas"]
    assert saved["also_searched"]["gits"]["settings"]["grid_size"] == 61  # at its shipped defaults, not the run's
    table = capsys.readouterr().out
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:]
    assert rows[:3] == ["polynomial", "gits", "oss"] and rows[3].startswith("floor")
