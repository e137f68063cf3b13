"""A solver-aware step search (after Optimal Stepsize Distillation, Pei et al. 2025), for every deterministic solver.

GITS costs one Euler step from the teacher's states; here the state at (k, j) is the *student's own* sample at
grid point j after k steps of the sampling solver (its history, its second evaluation, its AFS first call, its
lower-order final steps: the solver function itself runs), reached along the best k-step path to j:

    V_k(j) = min_{i < j} dist(step of the solver from state (k-1, i) to grid time j, teacher at j)

and state (k, j) is the sample of the minimising i. The schedule is the path of state (K, last grid point).

Each candidate step runs the solver along the candidate path from the noise, with a `Replay` denoiser that answers
every call the run has made before (same path prefix) from memory: only the new step's evaluations reach the
model. One-evaluation solvers so spend one model call per (k, i), shared by every target j; heun, dpm and unipc
(whose corrector evaluates at the target) one per (k, i, j).
Pure tensor code: the denoiser is any `D(x, sigma)` already bound to the batch's seeds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from fewstep.errors import FewstepError
from fewstep.geometry.measures import chord_deviation

DISTANCES = ("l2", "l1", "dev")


class Replay:
    """A denoiser that remembers its answers by the sigmas of all calls made so far in the current run.

    Within one search the solver, its step count and the noise are fixed, so the input of a run's m-th call is a
    function of the sigmas of its calls 0..m (the path prefix they imply): the same key means the same input.
    """

    def __init__(self, denoiser, remember: bool = True):
        self.denoiser = denoiser
        self.remember = remember  # False: every call reaches the model (runs that are backpropagated)
        self.memory: dict[tuple[float, ...], torch.Tensor] = {}
        self.evaluations = 0  # calls that reached the model
        self.seconds = 0.0  # the time they took
        self.key: tuple[float, ...] = ()
        self.used: list[tuple[float, ...]] = []

    def start(self) -> Replay:
        self.key, self.used = (), []
        return self

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        self.key = (*self.key, float(sigma.detach()) if isinstance(sigma, torch.Tensor) else float(sigma))
        self.used.append(self.key)
        answer = self.memory.get(self.key)
        if answer is None:
            started = time.perf_counter()
            answer = self.denoiser(x, sigma)
            self.seconds += time.perf_counter() - started
            if self.remember:
                self.memory[self.key] = answer
            self.evaluations += 1
        return answer

    def keep_only(self, keys: set) -> None:
        self.memory = {key: value for key, value in self.memory.items() if key in keys}


class _Reached(Exception):
    def __init__(self, x: torch.Tensor):
        self.x = x


def run_to(solve, replay: Replay, x: torch.Tensor, sigmas: list[float], total_steps: int, to_zero: bool):
    """The solver's state after the steps along `sigmas`, as part of a run of `total_steps` steps (so that orders
    that depend on the steps left, e.g. `lower_order_final`, are the sampling run's). The steps after the last
    sigma are padding that is never taken; with `to_zero` the run's last sigma is 0, as in sampling."""
    steps = len(sigmas) - 1
    pad = total_steps - steps
    if pad < 0:
        raise FewstepError(f"a path of {steps} steps in a run of {total_steps}")
    last = float(sigmas[-1].detach()) if isinstance(sigmas, torch.Tensor) else float(sigmas[-1])
    tail = [last * 0.5**m for m in range(1, pad + 1)]
    if pad and to_zero:
        tail[-1] = 0.0
    if isinstance(sigmas, torch.Tensor):  # a differentiable path (the polish)
        path = torch.cat([sigmas.double(), torch.tensor(tail, dtype=torch.float64, device=sigmas.device)])
    else:
        path = torch.tensor([*sigmas, *tail], dtype=torch.float64)

    def stop(info):
        if info["i"] == steps - 1:
            raise _Reached(info["x_next"])

    try:
        solve(replay.start(), x, path, callback=stop)
    except _Reached as reached:
        return reached.x
    raise FewstepError("the solver ended before the searched step")  # pragma: no cover - a solver skipping steps


def distances(x: torch.Tensor, target: torch.Tensor, metric: str, start=None, end=None, target_dev=None):
    """Per-sample distance (B,) of `x` to the teacher's `target` (l2, l1) or its excess chord deviation (dev)."""
    flat, aim = x.flatten(1).double(), target.flatten(1).double()
    if metric == "l2":
        return (flat - aim).norm(dim=1)
    if metric == "l1":
        return (flat - aim).abs().sum(1)
    return chord_deviation(flat, start, end) - target_dev


@dataclass
class _State:
    path: list[int]
    value: float
    per_sample: torch.Tensor
    keys: list


def solver_aware_dp(solve, denoiser, x: torch.Tensor, grid: torch.Tensor, teacher_states: torch.Tensor,
                    num_steps: int, total_steps: int, to_zero: bool = False, metric: str = "l2") -> dict:  # fmt: skip
    """The DP above on one batch (one schedule for all its samples: mean distance over the batch).

    `solve(denoiser, x, sigmas, *, callback)` is the sampling solver (with its options and AFS prior); `x` the
    noise at grid[0]; `teacher_states` (N, B, ...) the teacher on the grid from the same noise. Returns the path,
    its value, the values V[k, j] (inf where unreached), each reached state's path, the paths into the last point
    from every state of the level before (best first), and the model evaluations spent (per sample).
    """
    if metric not in DISTANCES:
        raise FewstepError(f"unknown oss distance {metric!r}; choose one of {list(DISTANCES)}")
    n = len(grid)
    if not 1 <= num_steps <= n - 1:
        raise FewstepError(f"a grid of {n} points allows 1..{n - 1} steps, not {num_steps}; raise grid_size")
    sigmas = grid.tolist()
    flat_teacher = teacher_states.flatten(2).double()
    start, end = flat_teacher[0], flat_teacher[-1]
    teacher_dev = chord_deviation(flat_teacher, start, end) if metric == "dev" else None
    replay = Replay(denoiser)
    values = torch.full((num_steps + 1, n), math.inf, dtype=torch.float64)
    values[0, 0] = 0.0
    states = {0: _State([0], 0.0, torch.zeros(len(x), dtype=torch.float64), [])}
    paths: list[dict[int, list[int]]] = [{0: [0]}]
    finalists: list[tuple[float, list[int]]] = []  # every path into the last point, by its value
    for k in range(1, num_steps + 1):
        last_target = n - 1 - (num_steps - k)
        first_target = n - 1 if k == num_steps else k
        best: dict[int, _State] = {}
        for i, state in sorted(states.items()):
            for j in range(max(i + 1, first_target), last_target + 1):
                reached = run_to(solve, replay, x, [sigmas[p] for p in [*state.path, j]], total_steps, to_zero)
                per_sample = distances(reached, teacher_states[j], metric, start, end,
                                       teacher_dev[j] if teacher_dev is not None else None)  # fmt: skip
                value = float(per_sample.mean())
                if not math.isfinite(value):
                    raise FewstepError(f"oss search: non-finite distance after step {k} to grid point {j}")
                if k == num_steps:
                    finalists.append((value, [*state.path, j]))
                if j not in best or value < best[j].value:  # ties go to the smallest i, as the DP of GITS
                    best[j] = _State([*state.path, j], value, per_sample, list(replay.used))
        states = best
        for j, state in best.items():
            values[k, j] = state.value
        paths.append({j: state.path for j, state in best.items()})
        replay.keep_only({key for state in best.values() for key in state.keys})
    final = states[n - 1]
    return {
        "path": final.path, "value": final.value, "per_sample": final.per_sample, "values": values, "paths": paths,
        "finalists": [path for _, path in sorted(finalists, key=lambda item: item[0])],
        "evaluations": replay.evaluations, "model_seconds": replay.seconds,
    }  # fmt: skip


def median_path(paths: list[list[int]]) -> list[int]:
    """One path from per-sample paths: at each step the median grid index (the mean of the two middle ones,
    rounded down, as the OSS reference code aggregates). Strictly increasing when every path is."""
    columns = torch.tensor(paths, dtype=torch.long).sort(dim=0).values
    m = len(paths)
    return [int(v) for v in (columns[m // 2] + columns[(m - 1) // 2]) // 2]


def significantly_lower(trial: torch.Tensor, best: torch.Tensor, z: float) -> bool:
    """Whether per-sample distances `trial` are lower than `best` on the same samples by more than `z` standard
    errors of their paired difference (z = 0: any lower mean). On a denoiser that snaps to data points a
    sample's end distance jumps between ~0 and a whole data-point gap, so a mean over a few dozen samples moves
    by chance; a move must beat that chance to be taken."""
    difference = (trial - best).double()
    spread = float(difference.std()) / math.sqrt(len(difference)) if len(difference) > 1 else 0.0
    return float(difference.mean()) < -z * spread if spread > 0 else float(difference.mean()) < 0


class Validation:
    """End distances of whole runs on the validation seeds, in chunks of seeds: `validation(path, chunks)` is the
    per-sample distances of `path` on the first `chunks` chunks (all by default), each chunk run once per path and
    only when a comparison first needs it. `chunk_distances[m](path)` runs one chunk."""

    def __init__(self, chunk_distances: list):
        self.chunk_distances = list(chunk_distances)
        self.done: dict[tuple[int, ...], list[torch.Tensor]] = {}

    @property
    def chunks(self) -> int:
        return len(self.chunk_distances)

    def __call__(self, path: list[int], chunks: int | None = None) -> torch.Tensor:
        wanted = self.chunks if chunks is None else chunks
        done = self.done.setdefault(tuple(path), [])
        while len(done) < wanted:
            done.append(self.chunk_distances[len(done)](list(path)))
        return torch.cat(done[:wanted])

    def seen(self, path: list[int]) -> torch.Tensor:
        """The distances of `path` on the chunks it has run."""
        return torch.cat(self.done[tuple(path)])


def race(validation: Validation, candidates: dict[str, list[int]], z: float, margin: float = 0.0) -> str:
    """The candidate path with the lowest mean end distance, run chunk by chunk: after each chunk the candidates
    that the best so far beats `significantly_lower` and by more than `margin` of its mean stop running (their
    distances stay on the chunks they ran); the others run the next chunk until one is left or every chunk has
    run. The margin keeps near-ties running: where a few seeds in a hundred land on another mode, a chunk without
    such a seed shows two schedules differing by a hair with almost no spread, significant and meaningless."""
    alive = list(candidates)
    for m in range(1, validation.chunks + 1):
        scores = {name: validation(candidates[name], m) for name in alive}
        best = min(alive, key=lambda name: float(scores[name].mean()))
        lead = (1 + margin) * float(scores[best].mean())
        beaten = {name for name in alive if name != best and float(scores[name].mean()) > lead
                  and significantly_lower(scores[best], scores[name], z)}  # fmt: skip
        alive = [name for name in alive if name not in beaten]
        if len(alive) == 1:
            return alive[0]
    return min(alive, key=lambda name: float(validation(candidates[name]).mean()))


def tested_beyond_screen(validation: Validation, trial) -> tuple[torch.Tensor, slice]:
    """A trial picked by its mean on the first chunk: its distances on every chunk, and the seeds to test it on,
    those the screen did not pick on (with one chunk, that chunk)."""
    distances = validation(trial)
    return distances, slice(len(validation(trial, 1)) if validation.chunks > 1 else 0, None)


def refine(validation: Validation, path: list[int], window: int = 3, sweeps: int = 4, z: float = 2.0,
           affords=lambda chunks: True):  # fmt: skip
    """Coordinate descent on the interior grid indices of `path`, on the quantity the schedule is for: the
    per-sample end distances of whole runs on the validation seeds. Each sweep takes every interior point in turn:
    every index within `window` of it (the path kept strictly increasing) runs the first chunk of seeds; the one
    with the lowest mean there, if below the current path's, runs the other chunks and is taken when
    `significantly_lower` on them (the first chunk picked it: testing there too would favour it). With one chunk,
    the best trial is tested on it. It stops when a sweep changes nothing, or, keeping its path, before a run of
    `chunks` chunks that `affords(chunks)` says its budget has no room for. The DP fixes each state by its distance
    *there*, which a solver with history or a second evaluation may pay for later. Returns the path and its
    per-sample distances."""
    best, current = list(path), validation(path)
    screened = validation.chunks > 1
    for _ in range(sweeps):
        moved = False
        for p in range(1, len(best) - 1):
            low, high = max(best[p - 1] + 1, best[p] - window), min(best[p + 1] - 1, best[p] + window)
            screen = {}
            for c in range(low, high + 1):
                if c == best[p]:
                    continue
                if not affords(1):
                    return best, current
                trial = [*best[:p], c, *best[p + 1 :]]
                screen[c] = float(validation(trial, 1).mean())
            if not screen:
                continue
            c = min(screen, key=lambda index: (screen[index], abs(index - best[p])))
            if screened and not screen[c] < float(validation(best, 1).mean()):
                continue
            if screened and not affords(validation.chunks - 1):
                return best, current
            trial = [*best[:p], c, *best[p + 1 :]]
            trial_distances, tested = tested_beyond_screen(validation, trial)
            if significantly_lower(trial_distances[tested], current[tested], z):
                best, current, moved = trial, trial_distances, True
        if not moved:
            break
    return best, current


def polish(loss_of, sigmas: torch.Tensor, batches: list[torch.Tensor], lr: float, every: int):
    """Gradient descent on a schedule's interior sigmas, parametrised as LD3 learns them (the logits of each step's
    share of the fall in log sigma: the ends stay put, the sigmas strictly decreasing), with Adam: one step per rows
    in `batches` on `loss_of(sigmas, rows)`, a differentiable mean distance. Returns (the sigmas after every
    `every`-th step, why it stopped early or None): it stops, keeping what it has, at a non-finite loss or gradient,
    or at a loss that does not depend on the sigmas (a denoiser that autograd cannot see through)."""
    from fewstep.schedules.ld3.kernel import logits_of, sigmas_of

    high, low = float(sigmas[0]), float(sigmas[-1])
    theta = torch.nn.Parameter(logits_of(sigmas.detach()))
    optimizer = torch.optim.Adam([theta], lr=lr)
    checkpoints: list[torch.Tensor] = []
    with torch.enable_grad():
        for step, rows in enumerate(batches, start=1):
            loss = loss_of(sigmas_of(theta, low, high), rows)
            if not loss.requires_grad:
                return checkpoints, "no gradient reaches the sigmas (a denoiser autograd cannot see through)"
            if not bool(torch.isfinite(loss)):
                return checkpoints, f"a non-finite distance after {step - 1} steps"
            optimizer.zero_grad()
            loss.backward()
            if not bool(torch.isfinite(theta.grad).all()):
                return checkpoints, f"a non-finite gradient after {step - 1} steps"
            optimizer.step()
            if step % every == 0:
                checkpoints.append(sigmas_of(theta.detach(), low, high))
    return checkpoints, None
