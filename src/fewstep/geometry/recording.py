"""Recording sampling trajectories: every state x(sigma_i) and every denoiser output D(x_i, sigma_i).

`record_trajectories` runs any solver of `fewstep.solvers` with a callback and returns a `Trajectories`.
`stream_to_npz` writes batches of them to a folder, one `.npz` file per batch (atomically, so a crash never
leaves a half-written batch), holding one batch in memory at a time; `load_trajectories` reads them back.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fewstep.errors import FewstepError
from fewstep.utils.storage import atomic_write_bytes

BATCH_PATTERN = "batch-*.npz"


@dataclass(frozen=True)
class Trajectories:
    """B sampling trajectories over T steps, flattened per sample to D = C*H*W.

    sigmas:   (T+1,) float64, the noise levels of the states.
    states:   (T+1, B, D), x at every sigma, the final state (the sample) included.
    denoised: (T, B, D), D(x_i, sigma_i) for i < T, as the solver's callback reports it.
    seeds:    (B,) int64 or None, the seeds of the samples, where known.
    """

    sigmas: torch.Tensor
    states: torch.Tensor
    denoised: torch.Tensor
    seeds: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        return self.states.shape[0] - 1

    @property
    def batch_size(self) -> int:
        return self.states.shape[1]


def record_trajectories(
    solver, denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, seeds=None, **options
) -> Trajectories:
    """Run `solver(denoiser, x, sigmas, callback=..., **options)` and record its whole trajectory.

    The states keep the dtype of `x` (float32 stays float32, float64 stays float64) and its device.
    `seeds` (optional) is stored with the trajectories; every other keyword goes to the solver.
    """
    batch = x.shape[0]
    states, denoised = [], []

    def record(info: dict) -> None:
        states.append(info["x"].detach().reshape(batch, -1).clone())
        denoised.append(info["denoised"].detach().reshape(batch, -1).to(x.dtype).clone())

    final = solver(denoiser, x, sigmas, callback=record, **options)
    num_steps = len(sigmas) - 1
    if len(states) != num_steps:
        raise FewstepError(f"the solver reported {len(states)} steps for a schedule of {num_steps}")
    return Trajectories(
        sigmas=torch.as_tensor(sigmas).detach().to("cpu", torch.float64).clone(),
        states=torch.stack([*states, final.detach().reshape(batch, -1).to(x.dtype)]),
        denoised=torch.stack(denoised),
        seeds=None if seeds is None else torch.as_tensor(seeds, dtype=torch.long).cpu(),
    )


def stream_to_npz(path: str | Path, batches: Iterable[Trajectories]) -> list[Path]:
    """Write each batch of trajectories to `path/batch-NNNNNN.npz` as it arrives; return the files written.

    Memory stays bounded by one batch: `batches` may be a generator that samples lazily. Each file is an
    uncompressed `np.savez` of sigmas, states, denoised (and seeds where known), written atomically.
    The folder must not already hold batch files (a new run would silently mix with an old one).
    """
    folder = Path(path)
    refuse_used_folder(folder)
    return [write_batch(folder, index, traj) for index, traj in enumerate(batches)]


def refuse_used_folder(folder: Path) -> None:
    if folder.is_dir() and any(folder.glob(BATCH_PATTERN)):
        raise FewstepError(f"{folder} already holds trajectory batches; write to an empty folder")


def write_batch(folder: Path, index: int, traj: Trajectories, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """`folder/batch-NNNNNN.npz` (NNNNNN = index): the trajectories and any `extra` arrays (per-sample measures)."""
    arrays = {
        "sigmas": traj.sigmas.detach().cpu().numpy(),
        "states": traj.states.detach().cpu().numpy(),
        "denoised": traj.denoised.detach().cpu().numpy(),
    }
    if traj.seeds is not None:
        arrays["seeds"] = traj.seeds.detach().cpu().numpy()
    arrays.update({name: value.detach().cpu().numpy() for name, value in (extra or {}).items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(Path(folder) / f"batch-{index:06d}.npz", buffer.getvalue())


def read_batch(file: str | Path, trajectories: bool = True) -> tuple[Trajectories | None, dict[str, torch.Tensor]]:
    """One file of `write_batch`: its trajectories (unless `trajectories=False`: only the small extra arrays are
    read) and its extra arrays."""
    with np.load(file, allow_pickle=False) as npz:
        traj = None
        if trajectories:
            traj = Trajectories(
                sigmas=torch.from_numpy(npz["sigmas"]),
                states=torch.from_numpy(npz["states"]),
                denoised=torch.from_numpy(npz["denoised"]),
                seeds=torch.from_numpy(npz["seeds"]) if "seeds" in npz.files else None,
            )
        extra = {name: torch.from_numpy(npz[name]) for name in npz.files if name not in _TRAJECTORY_ARRAYS}
    return traj, extra


_TRAJECTORY_ARRAYS = ("sigmas", "states", "denoised", "seeds")


def load_trajectories(path: str | Path) -> Trajectories:
    """Concatenate the batches written by `stream_to_npz` (in order) into one `Trajectories`."""
    files = sorted(Path(path).glob(BATCH_PATTERN))
    if not files:
        raise FewstepError(f"no trajectory batches ({BATCH_PATTERN}) in {path}")
    sigmas, states, denoised, seeds = None, [], [], []
    for file in files:
        with np.load(file, allow_pickle=False) as npz:
            if sigmas is None:
                sigmas = npz["sigmas"]
            elif not np.array_equal(sigmas, npz["sigmas"]):
                raise FewstepError(f"{file.name} was sampled on other sigmas than {files[0].name}")
            states.append(torch.from_numpy(npz["states"]))
            denoised.append(torch.from_numpy(npz["denoised"]))
            seeds.append(torch.from_numpy(npz["seeds"]) if "seeds" in npz.files else None)
    if any(s is None for s in seeds) and not all(s is None for s in seeds):
        raise FewstepError(f"some batches in {path} have seeds and some do not")
    return Trajectories(
        sigmas=torch.from_numpy(sigmas),
        states=torch.cat(states, dim=1),
        denoised=torch.cat(denoised, dim=1),
        seeds=None if seeds[0] is None else torch.cat(seeds),
    )
