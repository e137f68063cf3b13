"""Cache entries that are checked before use.

Every entry is written with a content checksum (`seal`) and read through `read_entry`, which also runs the
entry's own sanity checks (finite, shapes, ranges). An entry that is unreadable, altered or insane is logged as
one warning and treated as absent, so the caller recomputes it (and overwrites it): never used, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewstep.utils.storage import atomic_save_json, atomic_torch_save

log = logging.getLogger(__name__)

CHECKSUM = "checksum"


class DamagedEntry(ValueError):
    """A cache entry failed a check; the message says which."""


def _canonical(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {"tensor": [str(t.dtype), list(t.shape), hashlib.sha256(raw).hexdigest()]}
    if isinstance(value, np.ndarray):
        return {"array": [str(value.dtype), list(value.shape), hashlib.sha256(value.tobytes()).hexdigest()]}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def digest(payload: Any) -> str:
    """A sha256 of the payload's content (tensors by dtype, shape and bytes; floats exactly, as JSON writes them)."""
    text = json.dumps(_canonical(payload), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def seal(payload: dict) -> dict:
    return {**payload, CHECKSUM: digest(payload)}


def unseal(entry: Any) -> dict:
    if not isinstance(entry, dict):
        raise DamagedEntry(f"holds a {type(entry).__name__}, not a record")
    if CHECKSUM not in entry:
        raise DamagedEntry("no checksum (written by an older fewstep, or by hand)")
    payload = {k: v for k, v in entry.items() if k != CHECKSUM}
    if entry[CHECKSUM] != digest(payload):
        raise DamagedEntry("checksum mismatch: the file was altered after it was written")
    return payload


def read_entry(path: str | Path, load: Callable[[Path], Any], check: Callable[[dict], None], what: str,
               then: str = "recomputing it") -> dict | None:  # fmt: skip
    """The checked payload of the entry at `path`; None (after one warning, unless it is simply absent) when it
    must be recomputed. `check(payload)` raises (any exception) to reject an entry."""
    path = Path(path)
    try:
        entry = load(path)
    except FileNotFoundError:
        return None
    except Exception as err:  # truncated, not the format, a code-carrying pickle refused by weights_only, ...
        log.warning("damaged %s %s (unreadable: %s): %s", what, path, _short(err), then)
        return None
    try:
        payload = unseal(entry)
        check(payload)
    except Exception as err:
        log.warning("damaged %s %s (%s): %s", what, path, _short(err), then)
        return None
    return payload


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}" if not isinstance(err, DamagedEntry) else text[0]


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def load_torch(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def write_json(path: str | Path, payload: dict) -> Path:
    return atomic_save_json(path, seal(payload))


def write_torch(path: str | Path, payload: dict) -> Path:
    return atomic_torch_save(path, seal(payload))


def require(condition: bool, problem: str) -> None:
    """For `check` functions: reject the entry with `problem` unless `condition` holds."""
    if not condition:
        raise DamagedEntry(problem)


def finite(value) -> bool:
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)
    return bool(torch.isfinite(tensor).all())
