"""Atomic writes and content keys: nothing half-written is ever mistaken for a result."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results should be as readable as any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def content_key(settings: Any, length: int = 16) -> str:
    """A short stable hash of JSON-serialisable settings, used to name cache entries."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str | Path) -> str:
    """A file's content hash: what cached feature statistics are keyed by (same-size weight files differ)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def tensor_fingerprint(tensor: torch.Tensor, length: int = 16) -> str:
    """A hash of a tensor's shape, dtype and bytes (identifies a dataset or a set of weights)."""
    t = tensor.detach().cpu().contiguous().reshape(-1)
    shape = tuple(tensor.shape)
    h = hashlib.sha256(f"{shape}|{t.dtype}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:length]


def refused_pickled_code(err: BaseException | None) -> bool:
    """Whether torch.load(weights_only=True) refused a pickle that needs code (possibly wrapped by a loader), as
    opposed to a damaged file."""
    while err is not None:
        text = str(err).lower()
        if "weights only load failed" in text and ("global" in text or "blocked" in text):  # not a garbage file
            return True
        err = err.__cause__ or err.__context__
    return False
