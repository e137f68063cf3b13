"""`task=analyze` end to end: every plot and metric, with the optimal and with another denoiser."""

import json

import pytest

from fewstep import run

PLOTS = ["boomerang", "deviation", "pca", "distance_to_final", "denoising_strip"]


@pytest.mark.parametrize("model", ["kde", "gaussian"])
def test_analyze_writes_every_plot_and_metric(make_cfg, tmp_path, model):
    metrics = run(make_cfg("task=analyze", "dataset=digits", f"model={model}", "task.num_samples=12",
                           "task.num_steps=30", "batch_size=5"))  # fmt: skip
    run_dir = tmp_path / "run"
    extra = ["modes", "score_deviation"] if model == "gaussian" else ["modes"]
    for name in PLOTS + extra:
        assert (run_dir / f"{name}.png").stat().st_size > 2000, name
    assert len(list((run_dir / "trajectories").glob("*.npz"))) == 3  # streamed per batch of 4, 4, 4
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["num_samples"] == 12 and len(saved["sigmas"]) == 31
    for key in ("pca_top1_median", "pca_top3_min", "chord_deviation_max_median", "shape_spread",
                "turning_angle_max_median", "denoising_closer_fraction", "mean_shift_max_abs_error"):  # fmt: skip
        assert isinstance(saved[key], float), key
    assert 0 < metrics["pca_top1_median"] <= metrics["pca_top3_median"] <= 1
    assert metrics["mean_shift_max_abs_error"] < 1e-10  # one KDE call is one mean-shift step, in float64
    assert len(metrics["effective_modes_median_curve"]) == 30
    if model == "gaussian":  # the learned-model code path: deviation from the optimal denoiser along the way
        assert metrics["score_deviation_max_median"] > 0


@pytest.mark.slow
def test_analyze_with_two_processes_equals_one(tmp_path):
    """The prediction loop shards the trajectories over ranks; rank 0 summarises the same measures."""
    from .conftest import run_cli

    args = ["task=analyze", "dataset=digits", "model=gaussian", "task.num_samples=12", "task.num_steps=20",
            "batch_size=3", "trainer.enable_progress_bar=false"]  # fmt: skip
    one = run_cli(args, tmp_path / "one")
    two = run_cli([*args, "trainer=ddp", "trainer.devices=2"], tmp_path / "two")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "run" / "metrics.json").read_text()) for d in ("one", "two"))
    assert sorted(a) == sorted(b)
    for key, value in a.items():
        numeric = isinstance(value, float | list) and not isinstance(value, bool)
        assert b[key] == (pytest.approx(value, rel=1e-6, abs=1e-9) if numeric else value), key
    assert len(list((tmp_path / "two" / "run" / "trajectories").glob("batch-*.npz"))) == 4
