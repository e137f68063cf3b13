"""GITS: the DP against brute force, the cost matrix against a direct computation, the paper's claim on
mnist5k, distributed agreement, and both caches."""

import itertools
import json

import pytest
import torch

from fewstep import FewstepError, run
from fewstep.data import digits, seeded_noise
from fewstep.geometry.measures import chord_deviation
from fewstep.models import GaussianDenoiser, KDEDenoiser
from fewstep.schedules import polynomial
from fewstep.schedules.gits import best_path, cost_sums, dynamic_programming
from fewstep.schedules.teacher import teacher_trajectory
from fewstep.solvers import euler, ipndm

from .conftest import compose_config, rank_threads, run_cli


def brute_force(cost: torch.Tensor, coeff: float, steps: int) -> tuple[float, list[int]]:
    n = cost.shape[0]
    best = (float("inf"), [])
    for middle in itertools.combinations(range(1, n - 1), steps - 1):
        path = [0, *middle, n - 1]
        value = sum(coeff**m * float(cost[a, b]) for m, (a, b) in enumerate(zip(path, path[1:], strict=False)))
        best = min(best, (value, path))
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("coeff", [0.8, 1.0, 1.15])
def test_dp_finds_the_true_minimum_for_every_step_count(seed, coeff):
    n = 9
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(n, n, generator=g, dtype=torch.float64) - (0.3 if seed % 2 else 0.0)  # also negative costs
    values, nxt = dynamic_programming(cost, coeff, n - 1)  # one pass, every step count
    for steps in range(1, n):
        expected_value, expected_path = brute_force(cost, coeff, steps)
        path = best_path(nxt, steps)
        assert values[steps, 0].item() == pytest.approx(expected_value, abs=1e-12)
        assert path[0] == 0 and path[-1] == n - 1 and len(path) == steps + 1
        assert all(a < b for a, b in zip(path, path[1:], strict=False))
        realised = sum(coeff**m * float(cost[a, b]) for m, (a, b) in enumerate(zip(path, path[1:], strict=False)))
        assert realised == pytest.approx(expected_value, abs=1e-12)


def test_dp_rejects_more_steps_than_the_grid_allows():
    with pytest.raises(FewstepError, match="raise grid_size"):
        dynamic_programming(torch.zeros(5, 5, dtype=torch.float64), 1.15, 5)


@pytest.mark.parametrize("metric", ["l1", "l2", "dev"])
def test_cost_matrix_equals_direct_per_pair_computation(metric):
    torch.manual_seed(0)
    denoiser = GaussianDenoiser(torch.randn(1, 3, 3).double() * 0.5, torch.rand(1, 3, 3).double() + 0.2)
    grid = polynomial(8, 0.002, 80.0)
    x = torch.randn(5, 1, 3, 3, dtype=torch.float64) * 80
    states, slopes = teacher_trajectory(ipndm, denoiser, x, grid)
    sums = cost_sums(states, slopes, grid, metric)
    n = len(grid)
    for i in range(n):
        for j in range(n):
            if j <= i:
                assert sums[i, j] == 0
                continue
            # the reference code's loop: one Euler step from teacher point i with the model's slope there
            d = (states[i] - denoiser(states[i], float(grid[i]))) / grid[i]
            pred = states[i] + (grid[j] - grid[i]) * d
            if metric == "l1":
                direct = (pred - states[j]).abs().flatten(1).sum(1)
            elif metric == "l2":
                direct = (pred - states[j]).flatten(1).norm(dim=1)
            else:
                start, end = states[0].flatten(1), states[-1].flatten(1)
                direct = chord_deviation(pred.flatten(1), start, end) - chord_deviation(
                    states[j].flatten(1), start, end
                )
            assert sums[i, j].item() == pytest.approx(direct.sum().item(), rel=1e-9, abs=1e-9)


def test_chord_deviation_is_zero_on_the_line_and_the_distance_off_it():
    start, end = torch.zeros(1, 3, dtype=torch.float64), torch.tensor([[2.0, 0, 0]], dtype=torch.float64)
    on_line = torch.tensor([[[0.5, 0, 0]], [[3.0, 0, 0]]], dtype=torch.float64)
    assert torch.allclose(chord_deviation(on_line, start, end), torch.zeros(2, 1, dtype=torch.float64))
    off = torch.tensor([[[1.0, 3.0, 4.0]]], dtype=torch.float64)
    assert chord_deviation(off, start, end).item() == pytest.approx(5.0)


def test_teacher_trajectory_records_every_grid_point():
    denoiser = GaussianDenoiser(0.0, 0.5)
    grid = polynomial(6, 0.002, 80.0)
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64) * 80
    states, slopes = teacher_trajectory(euler, denoiser, x, grid)
    assert states.shape == (7, 3, 1, 2, 2) and slopes.shape == (6, 3, 1, 2, 2)
    assert torch.equal(states[0], x) and torch.equal(states[-1], euler(denoiser, x, grid))


@pytest.mark.parametrize("solver", ["euler", "ipndm"])
@pytest.mark.parametrize("nfe", [5, 6])
def test_gits_beats_polynomial_on_mnist5k_kde(tmp_path_factory, solver, nfe):
    """The paper's claim: on the optimal mnist5k denoiser GITS roughly halves the truncation error (against the
    polynomial baseline the run samples on the same seeds)."""
    cache = tmp_path_factory.getbasetemp() / "gits-claim-cache"  # warm-up and reference shared by the 4 cases
    cfg = compose_config([f"solver={solver}", f"nfe={nfe}", "schedule=gits", "num_samples=128", "eval.bootstrap=0",
                          "eval.also_search=[]", "trainer.enable_progress_bar=false"],
                         tmp_path_factory.mktemp(f"{solver}{nfe}"))  # fmt: skip
    cfg.paths.cache_dir = str(cache)
    metrics = run(cfg)
    assert metrics["baseline_schedule"] == "polynomial"
    # measured here: gits / polynomial = 0.42 (euler 5), 0.47 (euler 6), 0.46 (ipndm 5), 0.34 (ipndm 6)
    assert metrics["truncation_error"] < 0.7 * metrics["baseline_truncation_error"], metrics


SMALL_GITS = [
    "dataset=digits",
    "schedule=gits",
    "schedule.num_warmup=12",
    "schedule.grid_size=21",
    "batch_size=4",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture
def counted_calls(monkeypatch):
    """Counts every call of the closed-form denoisers' forward methods."""
    calls = {"n": 0}
    for cls in (KDEDenoiser, GaussianDenoiser):
        original = cls.forward

        def counting(self, x, sigma, _original=original):
            calls["n"] += 1
            return _original(self, x, sigma)

        monkeypatch.setattr(cls, "forward", counting)
    return calls


def search(tmp_path, cache, *overrides):
    cfg = compose_config(["task=search", *SMALL_GITS, *overrides], tmp_path)
    cfg.paths.cache_dir = str(cache)
    return run(cfg)


def test_caches_reuse_and_invalidate(tmp_path, counted_calls, caplog):
    cache = tmp_path / "cache"
    first = search(tmp_path / "a", cache)
    assert counted_calls["n"] > 0
    costs, schedules = cache / "gits" / "costs", cache / "gits" / "schedules"
    assert len(list(costs.glob("*.pt"))) == 1 and len(list(schedules.glob("*.json"))) == 1

    def calls_for(*overrides, folder):
        counted_calls["n"] = 0
        result = search(tmp_path / folder, cache, *overrides)
        return counted_calls["n"], result

    calls, again = calls_for(folder="b")
    assert calls == 0 and again == first  # schedule reused: no denoiser call at all
    calls, _ = calls_for("nfe=6", folder="c")
    assert calls == 0 and len(list(schedules.glob("*.json"))) == 2  # cost matrix reused, only a DP
    calls, _ = calls_for("schedule.coeff=0.9", folder="d")
    assert calls == 0 and len(list(costs.glob("*.pt"))) == 1
    calls, _ = calls_for("model=gaussian", folder="e")
    assert calls > 0 and len(list(costs.glob("*.pt"))) == 2  # another model: warm-up again
    calls, _ = calls_for("schedule.grid_size=25", folder="f")
    assert calls > 0 and len(list(costs.glob("*.pt"))) == 3  # another grid: warm-up again

    # a truncated schedule file is searched again from the cached costs; a truncated cost file warms up again
    (schedule_file,) = [p for p in schedules.glob("*.json") if json.loads(p.read_text())["sigmas"] == first["sigmas"]]
    schedule_file.write_text(schedule_file.read_text()[:50])
    calls, result = calls_for(folder="g")
    assert calls == 0 and result == first and json.loads(schedule_file.read_text())["sigmas"] == first["sigmas"]
    cost_file = next(p for p in costs.glob("*.pt") if json.loads(schedule_file.read_text())["cost_key"] in p.name)
    cost_file.write_bytes(cost_file.read_bytes()[:100])
    schedule_file.unlink()
    calls, result = calls_for(folder="h")
    assert calls > 0 and result == first


@pytest.mark.parametrize("solver", ["euler", "heun", "dpm", "ipndm"])
def test_gits_schedule_works_with_every_solver(tmp_path, solver):
    cfg = compose_config(
        [*SMALL_GITS, f"solver={solver}", "nfe=5", "num_samples=8", "eval.reference.num_steps=8"], tmp_path
    )
    metrics = run(cfg)
    assert metrics["nfe"] == 5 and metrics["schedule"] == "gits"
    grid = polynomial(20, 0.002, 80.0).tolist()
    assert all(s in grid for s in metrics["sigmas"])  # every sigma comes from the search grid
    saved = json.loads((tmp_path / "run" / "schedule.json").read_text())
    assert saved["gits"]["indices"][0] == 0 and saved["gits"]["settings"]["grid_size"] == 21
    # eval.also_search=auto: oss beside GITS on the KDE, on the same seeds, with the same solver and NFE
    assert metrics["also_searched"] == ["oss"] and metrics["oss_truncation_error"] > 0
    assert saved["also_searched"]["oss"]["solver"] == solver and len(metrics["oss_sigmas"]) == len(metrics["sigmas"])


def test_bad_gits_option_is_a_clear_error(make_cfg):
    with pytest.raises(FewstepError, match="metric must be one of"):
        run(make_cfg("schedule=gits", "schedule.metric=l3"))
    with pytest.raises(FewstepError, match="task=search searches a schedule; add schedule=gits or schedule=oss"):
        run(make_cfg("task=search", "schedule=polynomial"))


def test_search_with_two_processes_equals_one(tmp_path):
    args = ["task=search", *SMALL_GITS, "schedule.num_warmup=10"]
    # at the ranks' thread count: on some CPUs a float32 matrix product's bits depend on the threads (conftest)
    one = run_cli(args, tmp_path / "one", env_extra={"OMP_NUM_THREADS": str(rank_threads(2))})
    two = run_cli([*args, "trainer=ddp", "trainer.devices=2"], tmp_path / "two")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "run" / "schedule.json").read_text())["gits"] for d in ("one", "two"))
    assert a["indices"] == b["indices"] and a["sigmas"] == b["sigmas"]
    assert a["warmup_count"] == b["warmup_count"] == 10
    assert torch.allclose(torch.tensor(a["cost"]), torch.tensor(b["cost"]), rtol=1e-10, atol=1e-12)
    assert "sigmas: [80" in one.stdout and (tmp_path / "one" / "run" / "gits.png").is_file()
    assert (tmp_path / "one" / "run" / "sigmas.txt").read_text().startswith("80, ")


def test_teacher_afs_answers_the_teachers_first_call_as_the_reference_code():
    """schedule.teacher_afs: the teacher's first step is the AFS prior's (the reference code's d = x/sqrt(1+s^2)),
    so row 0 of the cost matrix changes; without AFS in the plan, nothing changes."""
    from fewstep.schedules.gits import GitsSettings
    from fewstep.schedules.teacher import teacher
    from fewstep.solvers import ReferenceAFS

    kde = KDEDenoiser(digits().images)
    grid = polynomial(10, 0.002, 80.0)
    seeds = torch.arange(4)
    x = seeded_noise(seeds, (1, 8, 8)).double() * 80.0
    on = teacher(GitsSettings(teacher_afs=True), grid, ReferenceAFS())
    states, _ = teacher_trajectory(on.as_solver(seeds), kde, x, grid)
    step = float(grid[1] - grid[0]) * x / (1 + 80.0**2) ** 0.5  # one Euler step along the reference's direction
    torch.testing.assert_close(states[1], x + step, rtol=1e-12, atol=1e-12)
    off = teacher(GitsSettings(), grid, ReferenceAFS())  # teacher_afs=false (default): the prior is not used
    assert off.afs_prior is None

    import fewstep

    args = {"shape": (1, 8, 8), "num_warmup": 4, "grid_size": 11, "afs_prior": "reference"}
    plain = fewstep.search_schedule(kde, nfe=5, solver="dpm", **args)
    reference_like = fewstep.search_schedule(kde, nfe=5, solver="dpm", teacher_afs=True, **args)
    assert not torch.allclose(plain.cost[0], reference_like.cost[0])
    same = fewstep.search_schedule(kde, nfe=5, solver="ipndm", teacher_afs=True, **args)  # no AFS: no change
    assert torch.equal(same.cost, fewstep.search_schedule(kde, nfe=5, solver="ipndm", **args).cost)


def test_auto_warmup_finds_the_reference_schedule_with_fewer_trajectories():
    """On the default data (mnist5k KDE, ipndm at NFE 5), num_warmup=auto stops growing the warm-up when the path
    stops changing, and that path is the one 256 warm-up trajectories give."""
    import fewstep
    from fewstep.data import mnist5k

    kde = KDEDenoiser(mnist5k().images)
    full = fewstep.search_schedule(kde, shape=(1, 28, 28), nfe=5, solver="ipndm")
    auto = fewstep.search_schedule(kde, shape=(1, 28, 28), nfe=5, solver="ipndm", num_warmup="auto")
    assert full.record["warmup_count"] == 256
    assert auto.indices == full.indices
    assert auto.record["warmup_count"] == 128 and auto.record["settings"]["num_warmup"] == "auto"  # as the README says


def test_auto_warmup_is_a_checked_setting(make_cfg):
    from fewstep.schedules.gits import gits_settings

    assert gits_settings({"num_warmup": "auto", "max_warmup": 64}).warmup_limit == 64
    assert gits_settings({"num_warmup": 32}).warmup_limit == 32
    with pytest.raises(FewstepError, match="schedule.num_warmup must be an integer"):
        gits_settings({"num_warmup": "many"})
    with pytest.raises(FewstepError, match="schedule.max_warmup must be an integer"):
        gits_settings({"num_warmup": "auto", "max_warmup": 6.5})
