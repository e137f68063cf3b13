"""`python -m fewstep dashboard`: offline, the W&B report's specification, with the panels a sweep needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("wandb_workspaces")


def test_offline_dashboard_specification_has_the_sweeps_panels(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "dashboard.json"
    done = subprocess.run([sys.executable, "-m", "fewstep", "dashboard", "--entity", "me", "--project", "fewstep",
                           "--group", "10-11-12-123456", "--output", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "W&B is offline (WANDB_MODE=offline)" in done.stdout and str(out) in done.stdout
    spec = json.loads(out.read_text())
    assert spec["type"] == "Report" and spec["entity"] == "me" and spec["project"] == "fewstep"
    grids = [block for block in spec["blocks"] if block["type"] == "PanelGrid"]
    panels = [panel for grid in grids for panel in grid["panels"]]
    lines = {panel["y"][0]["name"]: panel for panel in panels if panel["type"] == "LinePlot"}
    assert set(lines) == {"fid", "fid_std", "truncation_error"}
    assert all(line["x"]["name"] == "nfe" for line in lines.values())
    for grid in grids:  # every grid shows this sweep's runs, one group (line) per solver x schedule
        (runset,) = grid["runsets"]
        assert runset["filters"] == "Config('sweep_group') == '10-11-12-123456'"
        assert runset["groupby"] == ["solver.name", "schedule.name"]
    kinds = [panel["type"] for panel in panels]
    assert "WeavePanelSummaryTable" in kinds and "ParallelCoordinatesPlot" in kinds
    media = [panel["media_keys"] for panel in panels if panel["type"] == "MediaBrowser"]
    assert ["samples"] in media


def test_dashboard_needs_entity_and_project():
    done = subprocess.run([sys.executable, "-m", "fewstep", "dashboard"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "dashboard needs --entity and --project" in done.stderr
