"""The registry of schedule searches: name -> `SearchMethod`. The shipped searches are one line each in `REGISTRY`
(imported on first use); a plugin or a test adds one with `register_search`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fewstep.errors import FewstepError

# name -> "module:attribute" of its SearchMethod, imported on first use (the packages import this module)
REGISTRY: dict[str, str] = {
    "gits": "fewstep.schedules.gits.method:SEARCH",
    "oss": "fewstep.schedules.oss.method:SEARCH",
    "ld3": "fewstep.schedules.ld3.method:SEARCH",
}
_registered: dict[str, SearchMethod] = {}


@dataclass(frozen=True)
class SearchMethod:
    """A search, as the contract (`fewstep.schedules.searches`) runs it."""

    name: str
    defaults: dict  # the one source of its options; conf/schedule/<name>.yaml lists the same keys
    settings: Callable[[dict], Any]  # options -> checked settings (unknown names, types, ranges: one error each)
    check: Callable[[Any, Any, Any], None]  # (settings, SolverSpec, StepPlan), before anything loads: they fit
    run: Callable[[Any, Any], dict]  # (settings, SearchContext) -> the record: sigmas (no final 0), indices, grid, ...
    plot: Callable[[Any, Any, dict], None] | None = None  # (figure, axes, record): what the search minimised
    summary: str = ""  # one line for `fewstep schedules`


def register_search(method: SearchMethod) -> None:
    """Add a search from outside the package (a plugin, a test); `REGISTRY` holds the shipped ones."""
    _registered[method.name] = method


def search_names() -> list[str]:
    return [*REGISTRY, *(name for name in _registered if name not in REGISTRY)]


def is_search(name: str) -> bool:
    return name in REGISTRY or name in _registered


def get_search(name: str) -> SearchMethod:
    if name in _registered:
        return _registered[name]
    if name not in REGISTRY:
        raise FewstepError(f"{name!r} is not a schedule search; choose one of {search_names()}")
    module, _, attribute = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
