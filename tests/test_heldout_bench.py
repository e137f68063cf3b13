"""The held-out bench (`make bench ARGS="--only heldout"`) on one small cell: its table row, its report and the
issue's goals it prints, each from the numbers of that cell."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from heldout import heldout, parse_variant  # noqa: E402


def test_one_cell_prints_its_row_report_and_goals(capsys):
    heldout(("euler",), (4,), num_samples=16, seed=7, only=("mixture (seed 7)",), searches=("oss", "ld3"))
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| euler | 4 |"))
    ratios = [float(r) for r in re.findall(r"\| (\d+\.\d+) \(", row)]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
    overhead = float(re.search(r"all: oss wall time / the time its model calls took: median (\d+\.\d+)", out)[1])
    assert overhead >= 1.0  # the search's wall time includes its model calls
    goals = next(line for line in out.splitlines() if line.startswith("- goals for oss:"))
    median = float(re.search(r"median ratio <= 0.5 \((\d+\.\d+)\) (met|NOT met)", goals)[1])
    assert median == pytest.approx(ratios[0], abs=0.005)
    assert (f"median ratio <= 0.5 ({median:.2f}) met" in goals) == (median <= 0.5)
    assert "cost in the sweep median <= 1" in goals and "- goals for ld3:" in out
    assert "wall time" not in goals  # that goal is on the mnist5k KDE alone
    assert "(goal: the best other search at least as good as ld3 in every cell:" in out


def test_search_variants_parse():
    assert parse_variant("oss:polish=32,polish_lr=0.02") == ("oss", {"polish": 32, "polish_lr": 0.02})
    assert parse_variant("ld3") == ("ld3", {})
