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
    assert len(list((run_dir / "trajectories").glob("*.npz"))) == 3  # streamed per batch of 5, 5, 2
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
