"""Where searched schedules are cached: one folder per search (`<cache_dir>/<method>/schedules/<key>.json`), every
entry sealed with a checksum and checked before use (a path on this grid with this many steps, inside the model's
range); a damaged entry is reported and searched again. A search may keep more under its folder (GITS: its cost
matrices in `costs/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fewstep.models.denoiser import inside_range
from fewstep.utils.cache import finite, load_json, read_entry, require, write_json
from fewstep.utils.storage import content_key


@dataclass(frozen=True)
class SearchCache:
    """One search's cache folder and what identifies the model and its samples there."""

    root: Path
    identity: dict  # data, model, weights and numerics (see the plan's model identity), plus the sample shape
    name: str = "search"  # the search, in warnings about damaged entries

    @classmethod
    def for_search(cls, cache_dir: str | Path, method: str, identity: dict, shape) -> SearchCache:
        return cls(Path(cache_dir) / method, {**identity, "shape": list(shape)}, method)

    def key(self, settings: dict, grid: torch.Tensor) -> str:
        """A content key of the model's identity, the grid and `settings` (what else decides the entry)."""
        return content_key({**self.identity, "grid": grid.tolist(), **settings})

    def schedule_path(self, key: str) -> Path:
        return Path(self.root) / "schedules" / f"{key}.json"

    def read_schedule(self, key: str, grid, num_steps: int, sigma_range, on_grid: bool | None = True) -> dict | None:
        """The cached schedule, checked: a path on `grid` (or, `on_grid=False`, any schedule from the grid's first
        to its last sigma: a search that is not confined to a grid, ld3; `None`: a path on the grid where the record
        has grid indices, else any such schedule: oss, whose polish leaves the grid)."""
        on_path, off_path = check_schedule(grid, num_steps, sigma_range), check_sigmas(grid, num_steps, sigma_range)
        if on_grid is None:
            check = lambda record: (off_path if record.get("indices") is None else on_path)(record)  # noqa: E731
        else:
            check = on_path if on_grid else off_path
        return read_entry(self.schedule_path(key), load_json, check, f"{self.name} schedule cache",
                          "searching again")  # fmt: skip

    def write_schedule(self, key: str, record: dict) -> None:
        write_json(self.schedule_path(key), record)


def check_schedule(grid: torch.Tensor, num_steps: int, sigma_range: tuple[float, float]):
    """A cached schedule must be a path on this grid with this many steps: strictly decreasing sigmas inside
    the model's range that are the grid's own values at its indices."""

    def check(record: dict) -> None:
        indices = record.get("indices")
        require(isinstance(indices, list) and all(type(i) is int for i in indices), "no grid indices")
        require(len(indices) == num_steps + 1, f"{len(indices) - 1} steps, expected {num_steps}")
        increasing = all(a < b for a, b in zip(indices, indices[1:], strict=False))
        on_grid = indices[0] == 0 and increasing and indices[-1] <= len(grid) - 1
        require(on_grid, f"indices {indices} are not a path on a {len(grid)}-point grid")
        values = checked_sigmas(record, num_steps, sigma_range)
        require(torch.allclose(values, grid.double()[indices], rtol=1e-12, atol=0), "sigmas are not the grid's")

    return check


def checked_sigmas(record: dict, num_steps: int, sigma_range: tuple[float, float]) -> torch.Tensor:
    """The record's sigmas, required to be num_steps + 1 finite, strictly decreasing values inside the range."""
    sigmas = record.get("sigmas")
    require(isinstance(sigmas, list) and len(sigmas) == num_steps + 1 and finite(sigmas),
            f"not {num_steps + 1} finite sigmas")  # fmt: skip
    values = torch.tensor(sigmas, dtype=torch.float64)
    require(bool((values[1:] < values[:-1]).all()), "sigmas not strictly decreasing")
    low, high = sigma_range
    require(inside_range(float(values[-1]), float(values[0]), (low, high)), f"sigmas outside [{low:g}, {high:g}]")
    return values


def check_sigmas(grid: torch.Tensor, num_steps: int, sigma_range: tuple[float, float]):
    """A cached schedule not confined to a grid: num_steps + 1 finite, strictly decreasing sigmas from the grid's
    first value to its last, inside the model's range."""

    def check(record: dict) -> None:
        ends = checked_sigmas(record, num_steps, sigma_range)[[0, -1]]
        require(torch.allclose(ends, grid.double()[[0, -1]], rtol=1e-12, atol=0), "sigmas do not span the grid's")

    return check
