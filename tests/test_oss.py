"""schedule=oss: the solver-aware DP over the sampling solver's own states."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import fewstep
from fewstep import FewstepError, run
from fewstep.data import seeded_noise
from fewstep.models import CountingDenoiser, GaussianDenoiser
from fewstep.schedules import make_schedule, polynomial
from fewstep.schedules.oss import (
    OssSettings,
    candidates,
    median_path,
    oss_search,
    oss_settings,
    planned_evaluations,
    solver_aware_dp,
)
from fewstep.schedules.oss.kernel import Validation, race, refine, significantly_lower
from fewstep.schedules.teacher import teacher_trajectory
from fewstep.solvers import Sampler, get_solver, ipndm

from .conftest import compose_config


def gaussian_problem(batch: int = 3, n: int = 8):
    torch.manual_seed(0)
    denoiser = GaussianDenoiser(torch.randn(1, 2, 2).double() * 0.5, torch.rand(1, 2, 2).double() * 0.8 + 0.1)
    grid = polynomial(n - 1, 0.01, 20.0)
    x = torch.randn(batch, 1, 2, 2, dtype=torch.float64) * 20.0
    teacher, _ = teacher_trajectory(ipndm, denoiser, x, grid)
    return denoiser, grid, x, teacher


def from_scratch(spec, options, denoiser, x, sigmas: list[float], total: int, to_zero: bool) -> torch.Tensor:
    """The state after len(sigmas)-1 steps of a whole run of `total` steps, with nothing remembered: the run goes on
    along an arbitrary completion, and the state is read from its callback."""
    tail = [sigmas[-1] / 3**m for m in range(1, total - len(sigmas) + 2)]
    if to_zero and tail:
        tail[-1] = 0.0
    seen = {}
    spec.fn(denoiser, x, torch.tensor([*sigmas, *tail], dtype=torch.float64),
            callback=lambda info: seen.setdefault(info["i"], info["x_next"]), **options)  # fmt: skip
    return seen[len(sigmas) - 2]


def brute_force(spec, options, denoiser, x, grid, teacher, num_steps, total, to_zero):
    """Every path evaluated from scratch, then the DP's recursion applied to that table: the best state at (k, j)
    extends the best state at (k-1, i) that lands closest to the teacher at j."""
    n, sigmas = len(grid), grid.tolist()
    error = {}
    for k in range(1, num_steps + 1):
        for inner in itertools.combinations(range(1, n), k):
            path = (0, *inner)
            state = from_scratch(spec, options, denoiser, x, [sigmas[p] for p in path], total, to_zero)
            error[path] = float((state - teacher[path[-1]]).flatten(1).norm(dim=1).mean())
    best = {0: (0,)}
    for k in range(1, num_steps + 1):
        last = n - 1 - (num_steps - k)
        targets = [n - 1] if k == num_steps else range(k, last + 1)
        best = {j: min((best[i] + (j,) for i in sorted(best) if i < j), key=lambda p: error[p]) for j in targets}
    return list(best[n - 1]), error


@pytest.mark.parametrize(
    ("solver", "options", "steps", "total", "to_zero"),
    [
        ("euler", {}, 3, 3, False),
        ("heun", {}, 2, 2, False),
        ("ipndm_v", {}, 3, 3, False),
        ("dpmpp", {"lower_order_final": True}, 3, 4, True),  # orders depend on the steps left, to a final 0
        ("unipc", {}, 3, 3, False),  # the corrector evaluates at each candidate target
    ],
)
def test_dp_equals_brute_force_under_the_same_recursion(solver, options, steps, total, to_zero):
    denoiser, grid, x, teacher = gaussian_problem()
    spec = get_solver(solver)

    def solve(d, start, sigmas, *, callback):
        return spec.fn(d, start, sigmas, callback=callback, **options)

    found = solver_aware_dp(solve, denoiser, x, grid, teacher, steps, total, to_zero, "l2")
    path, error = brute_force(spec, options, denoiser, x, grid, teacher, steps, total, to_zero)
    assert found["path"] == path
    assert math.isclose(found["value"], error[tuple(path)], rel_tol=1e-12)
    for k, states in enumerate(found["paths"][1:], start=1):  # every state's value is its path's, from scratch
        for j, state_path in states.items():
            assert math.isclose(float(found["values"][k, j]), error[tuple(state_path)], rel_tol=1e-12)
    # the recursion is greedy: no path of the table is better at the end than the global optimum it may miss
    assert min(e for p, e in error.items() if len(p) == steps + 1 and p[-1] == len(grid) - 1) <= found["value"]


def test_replay_spends_one_model_call_per_state_or_candidate():
    denoiser, grid, x, teacher = gaussian_problem(n=12)
    states, pairs = candidates(12, 4)
    for solver, expected in [("euler", states), ("ipndm", states), ("heun", states + pairs), ("dpm", states + pairs)]:
        spec = get_solver(solver)

        def solve(d, start, sigmas, *, callback, spec=spec):
            return spec.fn(d, start, sigmas, callback=callback)

        found = solver_aware_dp(solve, denoiser, x, grid, teacher, 4, 4)
        assert found["evaluations"] == expected, solver
        assert planned_evaluations(Sampler(spec, grid), 12, 4) == expected + 11  # plus the teacher's 11


def test_search_bookkeeping_reproduces_the_recorded_error():
    """Re-running the solver on the searched schedule from the validation noise gives the distance the search
    recorded; with refine=false and one finalist, the DP's own path is the schedule."""
    denoiser = GaussianDenoiser(torch.full((1, 3, 3), 0.3), torch.full((1, 3, 3), 0.6))
    for refine_on in (False, True):
        for solver in ("heun", "ipndm_v", "dpmpp"):
            sampler = Sampler.of(solver, [80.0, 0.002])
            settings = {"grid_size": 13, "num_warmup": 6, "min_warmup": 6, "num_validation": 10,
                        "refine": refine_on, "finalists": 1 if not refine_on else 4}  # fmt: skip
            record = oss_search(settings, sampler=sampler, denoiser=denoiser, shape=(1, 3, 3), sigma_min=0.002,
                            sigma_max=80.0, num_steps=3)  # fmt: skip
            first, count = record["validation_seeds"]
            assert first == 1_000_006 and count == 10  # after the DP's warm-up seeds
            seeds = torch.arange(first, first + count)
            noise = seeded_noise(seeds, (1, 3, 3))
            grid = torch.tensor(record["grid"], dtype=torch.float64)
            out = sampler.with_sigmas(grid[record["indices"]])(denoiser, noise, seeds)
            teacher = Sampler.of("ipndm", grid[record["base_indices"]], max_order=4)(denoiser, noise, seeds)
            again = (out - teacher).flatten(1).double().norm(dim=1).mean().item()
            assert math.isclose(again, record["path_cost"], rel_tol=1e-9), (solver, refine_on)
            assert record["warmup_count"] == 6 and record["method"] == "oss"
            if not refine_on and record["start"] == "dp 0":
                assert record["indices"] == record["dp_indices"]


@pytest.mark.parametrize(("solver", "per_sample"), [("euler", False), ("heun", False), ("ipndm_v", True)])
def test_recorded_evaluations_are_the_model_calls_made(solver, per_sample):
    """The record's cost is what the model was asked for, per sample: the teacher on the warm-up and validation
    noise, the DP, and the validation runs of the finalists and the refinement (each call on the whole batch)."""
    counter = CountingDenoiser(GaussianDenoiser(torch.full((1, 3, 3), 0.3), torch.full((1, 3, 3), 0.6)))
    settings = {"grid_size": 13, "num_warmup": 4, "min_warmup": 4, "num_validation": 9, "per_sample": per_sample}
    record = oss_search(settings, sampler=Sampler.of(solver, [80.0, 0.002]), denoiser=counter, shape=(1, 3, 3),
                    sigma_min=0.002, sigma_max=80.0, num_steps=3)  # fmt: skip
    parts = record["evaluations_by_part"]
    assert record["evaluations"] == counter.rows == sum(parts.values())
    assert parts["teacher"] == 12 * 4 and parts["validation_teacher"] == 12 * 9
    assert parts["validation_runs"] > 0 and parts["validation_runs"] % 9 == 0


@pytest.mark.parametrize("solver", ["euler", "heun", "ipndm"])
def test_oss_is_never_worse_than_a_hand_crafted_path_on_its_validation_seeds(solver):
    from fewstep.schedules.oss.method import HANDCRAFTED_CANDIDATES

    denoiser = GaussianDenoiser(torch.full((1, 3, 3), 0.3), torch.full((1, 3, 3), 0.6))
    settings = {"grid_size": 21, "num_warmup": 8, "min_warmup": 8, "num_validation": 16}
    record = oss_search(settings, sampler=Sampler.of(solver, [80.0, 0.002]), denoiser=denoiser, shape=(1, 3, 3),
                        sigma_min=0.002, sigma_max=80.0, num_steps=4)  # fmt: skip
    assert set(record["handcrafted"]) == set(HANDCRAFTED_CANDIDATES)
    for name, against in record["handcrafted"].items():
        assert against["difference"] <= 0 and record["path_cost"] <= against["value"], name
        assert against["se"] >= 0
    best = record["best_handcrafted"]
    assert record["handcrafted"][best]["value"] == min(a["value"] for a in record["handcrafted"].values())


def test_oss_returns_the_hand_crafted_path_when_it_is_best_on_the_validation_seeds(monkeypatch):
    """The DP offers only a poor path (all steps crowded at the high end): the validation must return the best
    hand-crafted schedule instead, exactly (its sigmas, not the nearest base-grid path), unrefined."""
    from fewstep.schedules.oss import method

    def poor_dp(solve, bound, x, grid, states, num_steps, *args):
        n = len(grid)
        crowded = [*range(num_steps), n - 1]
        return {"path": crowded, "values": torch.zeros(num_steps + 1, n), "finalists": [crowded], "evaluations": 0}

    monkeypatch.setattr(method, "solver_aware_dp", poor_dp)
    denoiser = GaussianDenoiser(torch.full((1, 3, 3), 0.3), torch.full((1, 3, 3), 0.6))
    settings = {"grid_size": 21, "num_warmup": 4, "min_warmup": 4, "num_validation": 16, "refine": False}
    record = oss_search(settings, sampler=Sampler.of("euler", [80.0, 0.002]), denoiser=denoiser, shape=(1, 3, 3),
                        sigma_min=0.002, sigma_max=80.0, num_steps=4)  # fmt: skip
    best = record["best_handcrafted"]
    assert record["start"] == best and record["start_values"]["dp 0"] > record["start_values"][best]
    expected = make_schedule(best, 4, 0.002, 80.0).double()
    assert torch.allclose(torch.tensor(record["sigmas"], dtype=torch.float64), expected, rtol=1e-9, atol=0)
    assert record["handcrafted"][best]["difference"] == 0.0


POLISHED = {"grid_size": 13, "num_warmup": 8, "min_warmup": 8, "num_validation": 16, "validation_chunk": 8,
            "polish": 16, "polish_batch": 4}  # fmt: skip


def polished_search(denoiser, solver: str, **settings) -> dict:
    return oss_search({**POLISHED, **settings}, sampler=Sampler.of(solver, [80.0, 0.002]), denoiser=denoiser,
                      shape=(1, 3, 3), sigma_min=0.002, sigma_max=80.0, num_steps=3)  # fmt: skip


def spread_gaussian():
    return GaussianDenoiser(torch.full((1, 3, 3), 0.3), torch.linspace(0.05, 1.5, 9).reshape(1, 3, 3))


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_polish_leaves_the_grid_only_when_significantly_better_on_the_validation_seeds(solver):
    """On a Gaussian the best schedule is off any 13-point grid: the polish's pick is taken, tested on the chunk
    it was not picked on; the record's sigmas are then its own (no grid indices), the grid path is kept, and the
    path cost is the polished schedule's validation distance, recomputed here from scratch."""
    denoiser = spread_gaussian()
    plain = polished_search(denoiser, solver, polish=0)
    record = polished_search(denoiser, solver)
    polish = record["polish"]
    assert plain["polish"] is None and record["grid_indices"] == plain["indices"]
    assert polish["steps"] == 16 and len(polish["screen"]) == 4 and polish["stopped"] is None
    assert polish["taken"] and polish["difference"] < -2 * polish["se"] and polish["seeds"] == 8
    assert record["indices"] is None and record["path_cost"] < plain["path_cost"]
    sigmas = torch.tensor(record["sigmas"], dtype=torch.float64)
    grid = torch.tensor(record["grid"], dtype=torch.float64)
    assert sigmas[0] == grid[0] and sigmas[-1] == grid[-1] and bool((sigmas.diff() < 0).all())
    assert not any(bool(torch.isclose(grid, s, rtol=1e-9).any()) for s in sigmas[1:-1])
    first, count = record["validation_seeds"]
    seeds = torch.arange(first, first + count)
    noise = seeded_noise(seeds, (1, 3, 3))
    base = grid[record["base_indices"]]
    teacher = Sampler.of("ipndm", base, max_order=4)(denoiser, noise, seeds)
    out = Sampler.of(solver, sigmas)(denoiser, noise, seeds)
    again = (out - teacher).flatten(1).double().norm(dim=1).mean().item()
    assert math.isclose(again, record["path_cost"], rel_tol=1e-9)


def test_polish_keeps_the_grid_path_when_it_is_not_significantly_better():
    """ipndm on the same Gaussian: the polish's best checkpoint is not below the path on the first chunk, so the
    other chunk is never run and the grid path stays, with its indices."""
    record = polished_search(spread_gaussian(), "ipndm")
    assert not record["polish"]["taken"] and "difference" not in record["polish"]
    assert record["indices"] == record["grid_indices"]
    assert record["sigmas"] == [record["grid"][i] for i in record["indices"]]


def test_polish_counts_its_backward_passes_and_stops_on_a_denoiser_autograd_cannot_see_through():
    counter = CountingDenoiser(spread_gaussian())
    record = polished_search(counter, "heun")
    parts = record["evaluations_by_part"]
    assert parts["polish"] > 0 and counter.rows == record["evaluations"] - parts["polish"] // 2

    class Detached(torch.nn.Module):
        def forward(self, x, sigma):
            with torch.no_grad():
                return spread_gaussian()(x, sigma)

    stopped = polished_search(Detached(), "heun")
    assert stopped["polish"]["stopped"].startswith("no gradient reaches the sigmas")
    assert stopped["indices"] == stopped["grid_indices"] and stopped["polish"]["screen"] == []


def test_polish_kernel_descends_to_a_known_schedule_and_stops_on_a_non_finite_loss():
    from fewstep.schedules.oss.kernel import polish

    target = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.002], dtype=torch.float64)
    start = polynomial(4, 0.002, 80.0).double()

    def loss_of(sigmas, rows):
        return ((sigmas.log() - target.log()) ** 2).sum()

    checkpoints, stopped = polish(loss_of, start, [None] * 200, lr=0.05, every=50)
    assert stopped is None and len(checkpoints) == 4
    assert all(c[0] == 80.0 and c[-1] == 0.002 and bool((c.diff() < 0).all()) for c in checkpoints)
    assert torch.allclose(checkpoints[-1], target, rtol=1e-3)
    assert loss_of(checkpoints[0], None) < loss_of(start, None)
    nan_after = iter([1.0, 1.0, float("nan")])
    checkpoints, stopped = polish(lambda s, r: loss_of(s, r) * next(nan_after), start, [None] * 5, lr=0.05, every=1)
    assert stopped == "a non-finite distance after 2 steps" and len(checkpoints) == 2


def test_max_warmups_stops_the_refinement():
    """With the whole allowance spent before the refinement starts, no move is taken: the race's pick is the
    schedule, at its own validation value; with room, the same search refines on."""
    denoiser = GaussianDenoiser(torch.full((1, 3, 3), 0.3), torch.full((1, 3, 3), 0.6))
    common = {"sampler": Sampler.of("euler", [80.0, 0.002]), "denoiser": denoiser, "shape": (1, 3, 3),
              "sigma_min": 0.002, "sigma_max": 80.0, "num_steps": 4}  # fmt: skip
    settings = {"grid_size": 21, "num_warmup": 8, "min_warmup": 8, "num_validation": 16, "validation_chunk": 8,
                "refine_significance": 0.0}  # fmt: skip
    stopped = oss_search({**settings, "max_warmups": 0.0}, **common)
    free = oss_search(settings, **common)
    assert stopped["path_cost"] == stopped["start_values"][stopped["start"]]
    assert free["start"] == stopped["start"] and free["path_cost"] < stopped["path_cost"]
    assert free["evaluations_by_part"]["validation_runs"] > stopped["evaluations_by_part"]["validation_runs"]


def test_max_warmups_caps_the_searchs_own_runs_not_the_teacher():
    """max_warmups bounds the DP's and the validation's runs (the teacher, shared by a sweep, is not counted): a
    cap at half of what the free search's own runs spent stops the refinement before a run it has no room for (a
    trial's screen on one chunk, or its test on the other), never past the cap."""
    from fewstep.schedules.oss.method import GITS_REFERENCE_WARMUP, own_runs

    denoiser = GaussianDenoiser(torch.full((1, 3, 3), 0.3), torch.full((1, 3, 3), 0.6))
    common = {"sampler": Sampler.of("euler", [80.0, 0.002]), "denoiser": denoiser, "shape": (1, 3, 3),
              "sigma_min": 0.002, "sigma_max": 80.0, "num_steps": 4}  # fmt: skip
    settings = {"grid_size": 21, "num_warmup": 8, "min_warmup": 8, "num_validation": 16, "validation_chunk": 8,
                "refine_significance": 0.0}  # fmt: skip
    warmup = GITS_REFERENCE_WARMUP * 20  # the base grid's 21 points: 20 teacher steps per sample
    free = oss_search(settings, **common)
    before_refining = own_runs(free["evaluations_by_part"]) - free["evaluations_by_part"]["validation_runs"]
    before_refining += 16 * 4  # the race's pick on every validation seed (four Euler steps per run)
    cap = (before_refining + own_runs(free["evaluations_by_part"])) / 2
    capped = oss_search({**settings, "max_warmups": cap / warmup}, **common)
    own = own_runs(capped["evaluations_by_part"])
    parts = capped["evaluations_by_part"]
    assert parts["teacher"] == 8 * 20 and parts["validation_teacher"] == 16 * 20  # counted, outside the cap
    assert capped["evaluations"] == own + 8 * 20 + 16 * 20
    assert cap - 8 * 4 < own <= cap  # stopped before a chunk of 8 runs of 4 Euler steps that did not fit
    assert capped["path_cost"] >= free["path_cost"]


def test_refine_takes_only_significant_moves_and_keeps_a_path():
    target = [0, 4, 9, 15, 20]
    offsets = torch.linspace(-0.5, 0.5, 16)  # per-sample spread around each path's mean distance

    def distances(path):
        return sum((a - b) ** 2 for a, b in zip(path, target, strict=True)) + 1.0 + offsets

    path, ends = refine(Validation([distances]), [0, 1, 2, 3, 20], window=3, z=2.0)
    assert path == target and torch.equal(ends, distances(target))
    assert all(a < b for a, b in zip(path, path[1:], strict=False))

    def noisy(path):  # the same mean everywhere, per-sample noise that differs by path: no move is significant
        generator = torch.Generator().manual_seed(sum(path))
        return 5.0 + torch.randn(16, generator=generator)

    start = [0, 5, 10, 15, 20]
    assert refine(Validation([noisy]), start, window=3, z=3.0)[0] == start
    assert significantly_lower(torch.zeros(4), torch.ones(4), 2.0)  # no spread: any lower mean


def test_race_stops_significantly_worse_candidates_after_their_chunk():
    runs = []
    spread = torch.linspace(-0.5, 0.5, 8)

    def chunk(m):
        def distances(path):
            runs.append((tuple(path), m))
            return float(path[1]) + spread  # the mean is the first interior index: [0, 1, 9] is best
        return distances

    validation = Validation([chunk(0), chunk(1), chunk(2)])
    candidates = {"a": [0, 5, 9], "b": [0, 1, 9], "c": [0, 1, 9], "d": [0, 2, 9]}
    assert race(validation, candidates, z=2.0) == "b"  # the first of equals
    assert len(validation.seen([0, 5, 9])) == len(validation.seen([0, 2, 9])) == 8  # dropped after one chunk
    assert len(validation.seen([0, 1, 9])) == 24 and runs.count(((0, 1, 9), 0)) == 1  # each chunk runs once per path


def test_race_keeps_a_near_tie_running_past_a_chunk_without_its_tail():
    """Chunk 1 has no seed on another mode: "b" trails "a" by a hair with no spread (significant at any z). With a
    margin it runs on, and the later chunks, where "a" has its heavy tail, make it the winner."""
    def chunk(m):
        def distances(path):
            tail = 20.0 if (path[1] == 5 and m > 0) else 0.0
            return torch.full((8,), 1.0 + 0.001 * (path[1] == 6)) + torch.tensor([tail] + [0.0] * 7)
        return distances

    candidates = {"a": [0, 5, 9], "b": [0, 6, 9]}
    assert race(Validation([chunk(0), chunk(1), chunk(2)]), candidates, z=2.0) == "a"  # dropped "b" on chunk 1
    assert race(Validation([chunk(0), chunk(1), chunk(2)]), candidates, z=2.0, margin=0.05) == "b"


def test_refine_runs_only_the_best_screened_trial_past_its_first_chunk():
    target, offsets = [0, 4, 9], torch.linspace(-0.5, 0.5, 8)
    runs = []

    def chunk(m):
        def distances(path):
            runs.append((tuple(path), m))
            return (path[1] - target[1]) ** 2 + 1.0 + offsets
        return distances

    path, _ = refine(Validation([chunk(0), chunk(1)]), [0, 2, 9], window=3, z=2.0)
    assert path == target
    first = {p for p, m in runs if m == 0}
    assert first == {(0, c, 9) for c in range(1, 8)}  # every index within the window of 2, then of 4, screened
    second = {p for p, m in runs if m == 1}
    assert second == {(0, 2, 9), (0, 4, 9)}  # only the best screened trial ([0, 4, 9]) runs the other chunk


def test_median_path():
    assert median_path([[0, 3, 9], [0, 5, 9], [0, 4, 9]]) == [0, 4, 9]
    assert median_path([[0, 2, 5, 9], [0, 3, 4, 9]]) == [0, 2, 4, 9]  # mean of the two middle ones, rounded down


def test_search_grid_holds_the_base_grid_and_every_hand_crafted_schedule_exactly():
    from fewstep.schedules.oss.method import handcrafted_schedules, search_grid

    base = polynomial(60, 0.002, 80.0)
    schedules = handcrafted_schedules(6, 0.002, 80.0)
    grid, on_base, paths = search_grid(base, schedules)
    assert bool((grid[1:] < grid[:-1]).all()) and torch.equal(grid[on_base], base.double())
    assert paths["polynomial"] == on_base[::10]  # the base grid's own points: nothing added for it
    for name, sigmas in schedules.items():
        assert torch.allclose(grid[paths[name]], sigmas, rtol=1e-9, atol=0), name
    assert len(grid) < len(base) + 6 * 5 + 1


def test_budget_sets_the_warmup_size():
    from fewstep.schedules.oss import warmup_size

    assert warmup_size(OssSettings(), 200) == 32  # 1-evaluation solvers, few steps: num_warmup
    assert warmup_size(OssSettings(), 5000) == 8  # budget would allow 1: min_warmup
    assert warmup_size(OssSettings(budget=2.0), 1000) == 30


def test_dp_plan_coarsens_the_grid_before_overspending():
    """A DP sample of heun (one evaluation per candidate target) at 5 steps costs ~7,000 evaluations on the full
    grid: min_warmup samples would spend 3.6 warm-ups, so the DP steps between every k-th grid point instead."""
    from fewstep.schedules.oss.method import GITS_REFERENCE_WARMUP, dp_grid, dp_plan, planned_evaluations

    settings = OssSettings()
    for solver, steps in [("euler", 6), ("ipndm", 10), ("heun", 3), ("heun", 5), ("unipc", 8)]:
        sampler = Sampler.of(solver, [80.0, 0.002])
        count, stride = dp_plan(settings, sampler, steps)
        points = dp_grid(61, stride)
        per_sample = planned_evaluations(sampler, len(points), steps) + 61 - len(points)
        assert count * per_sample <= settings.budget * GITS_REFERENCE_WARMUP * 60 or count == settings.min_warmup
        assert count >= settings.min_warmup and points[-1] == 60 and len(points) - 1 >= steps
        if solver in ("euler", "ipndm"):
            assert stride == 1, solver
        else:
            assert stride > 1 and count * per_sample <= settings.budget * GITS_REFERENCE_WARMUP * 60, solver


def test_bad_oss_settings_are_one_clear_error(make_cfg):
    with pytest.raises(FewstepError, match="schedule.metric must be one of"):
        oss_settings({"metric": "l3"})
    with pytest.raises(FewstepError, match="schedule 'oss' takes options"):
        oss_settings({"coeff": 1.15})
    with pytest.raises(FewstepError, match="min_warmup must be between 1 and 32"):
        oss_settings({"min_warmup": 40})
    with pytest.raises(FewstepError, match="schedule.max_warmups must be >= 0"):
        oss_settings({"max_warmups": -1.0})
    with pytest.raises(FewstepError, match="schedule.polish must be at least 0"):
        oss_settings({"polish": -1})
    with pytest.raises(FewstepError, match="schedule.polish_lr must be positive"):
        oss_settings({"polish_lr": 0.0})
    with pytest.raises(FewstepError, match="schedule.race_margin must be >= 0"):
        oss_settings({"race_margin": -0.1})
    with pytest.raises(FewstepError, match="schedule.metric must be one of"):
        run(make_cfg("schedule=oss", "schedule.metric=l3"))
    with pytest.raises(FewstepError, match="er_sde is stochastic"):
        run(make_cfg("schedule=oss", "solver=er_sde"))
    with pytest.raises(FewstepError, match="oss grid of 5 points cannot provide"):
        run(make_cfg("schedule=oss", "schedule.grid_size=5", "nfe=8"))
    with pytest.raises(FewstepError, match="deterministic solver"):
        oss_search({}, sampler=Sampler.of("er_sde", [80.0, 0.002]), denoiser=GaussianDenoiser(), shape=(1, 2, 2),
               sigma_min=0.002, sigma_max=80.0, num_steps=2)  # fmt: skip


def test_oss_yaml_lists_the_defaults():
    import yaml

    from fewstep.schedules.oss import DEFAULTS

    from .conftest import ROOT

    shipped = yaml.safe_load((ROOT / "conf" / "schedule" / "oss.yaml").read_text())
    assert shipped.pop("name") == "oss" and shipped == DEFAULTS


SMALL_OSS = ["dataset=digits", "schedule=oss", "schedule.grid_size=16", "schedule.num_warmup=8", "batch_size=8",
             "trainer.enable_progress_bar=false"]  # fmt: skip


def test_task_search_oss_writes_its_record_and_reuses_its_cache(tmp_path, monkeypatch, caplog):
    from fewstep.models import KDEDenoiser

    calls = {"n": 0}
    original = KDEDenoiser.forward

    def counting(self, x, sigma):
        calls["n"] += 1
        return original(self, x, sigma)

    monkeypatch.setattr(KDEDenoiser, "forward", counting)

    def searched(folder):
        calls["n"] = 0
        cfg = compose_config(["task=search", *SMALL_OSS, "solver=heun", "nfe=5"], tmp_path / folder)
        cfg.paths.cache_dir = str(tmp_path / "cache")
        return run(cfg), calls["n"]

    first, spent = searched("a")
    saved = json.loads((tmp_path / "a" / "run" / "schedule.json").read_text())
    record = saved["oss"]
    assert record["indices"] == first["indices"] and len(first["indices"]) == 4  # heun NFE 5: 3 steps with AFS
    assert record["evaluations"] > 0 and record["seconds"] > 0 and record["solver"] == "heun" and spent > 0
    assert (tmp_path / "a" / "run" / "oss.png").is_file()
    (entry,) = (tmp_path / "cache" / "oss" / "schedules").glob("*.json")
    assert searched("b") == (first, 0)  # reused: no denoiser call
    entry.write_text(entry.read_text()[:40])  # damaged: one warning, searched again, never read
    again, spent = searched("c")
    assert again == first and spent > 0 and "damaged oss schedule cache" in caplog.text


def test_sampling_run_with_oss(tmp_path):
    cfg = compose_config([*SMALL_OSS, "solver=dpmpp", "nfe=4", "num_samples=8", "eval.reference.num_steps=8",
                          "denoise_to_zero=true"], tmp_path)  # fmt: skip
    metrics = run(cfg)
    assert metrics["schedule"] == "oss" and metrics["nfe"] == 4 and metrics["sigmas"][-1] == 0
    record = json.loads((tmp_path / "run" / "schedule.json").read_text())["oss"]
    assert record["total_steps"] == 4 and record["num_steps"] == 3 and record["to_zero"]


def test_api_search_schedule_oss_equals_the_search():
    denoiser = GaussianDenoiser(torch.full((1, 2, 2), 0.2), torch.full((1, 2, 2), 0.5))
    schedule = fewstep.search_schedule(denoiser, shape=(1, 2, 2), nfe=4, solver="ipndm_v", method="oss",
                                       grid_size=11, num_warmup=4, min_warmup=4)  # fmt: skip
    direct = oss_search({"grid_size": 11, "num_warmup": 4, "min_warmup": 4}, sampler=Sampler.of("ipndm_v", [80, 0.002]),
                    denoiser=denoiser, shape=(1, 2, 2), sigma_min=0.002, sigma_max=80.0, num_steps=4)  # fmt: skip
    assert schedule.indices == direct["indices"] and schedule.sigmas.tolist() == direct["sigmas"]


def truncation_errors(problem, solver: str, nfe: int, cache) -> dict:
    """Mean L2 to the reference of polynomial, logsnr, gits and oss (fewstep.search_schedule, defaults)."""
    from fewstep.schedules import logsnr
    from fewstep.solvers import plan_steps

    data, denoiser, seeds, _, reference = problem
    steps = plan_steps(get_solver(solver), nfe).num_steps
    schedules = {"polynomial": polynomial(steps, 0.002, 80.0), "logsnr": logsnr(steps, 0.002, 80.0)}
    for method in ("gits", "oss"):
        schedules[method] = fewstep.search_schedule(denoiser, shape=data.shape, nfe=nfe, solver=solver, method=method,
                                                    cache_dir=cache, cache_key="kde-mnist5k")  # fmt: skip
    errors = {}
    for name, sigmas in schedules.items():
        samples = fewstep.sample(denoiser, solver, sigmas, seeds=seeds.tolist(), shape=data.shape)
        errors[name] = (samples - reference).flatten(1).norm(dim=1).mean().item()
    return errors


@pytest.mark.parametrize(
    ("solver", "claim"),
    [
        pytest.param("ipndm_v", "beats hand-crafted"),
        pytest.param("deis", "beats hand-crafted"),
        pytest.param("euler", "no worse than gits"),
        pytest.param("heun", "beats hand-crafted", marks=pytest.mark.slow),
        pytest.param("dpm", "no worse than gits", marks=pytest.mark.slow),  # vs polynomial: 6.46 vs 5.99 here
        pytest.param("ipndm", "no worse than gits", marks=pytest.mark.slow),
        pytest.param("unipc", "no worse than gits", marks=pytest.mark.slow),
        pytest.param("dpmpp", "no worse than gits", marks=pytest.mark.slow),
    ],
)
def test_oss_at_nfe6_on_the_default_data(mnist5k_problem, tmp_path_factory, solver, claim):
    """The issue's acceptance at NFE 6 (mnist5k KDE, truncation error on 128 held-out seeds; the table for every
    NFE is `make bench ARGS="--only searches"`)."""
    errors = truncation_errors(mnist5k_problem, solver, 6, tmp_path_factory.getbasetemp() / "oss-claims")
    if claim == "beats hand-crafted":
        assert errors["oss"] < min(errors["polynomial"], errors["logsnr"]), errors
    else:
        assert errors["oss"] <= errors["gits"], errors
