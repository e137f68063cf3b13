"""Atomic writes and content keys: nothing half-written is ever mistaken for a result."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename. The temporary's
    name says which process writes it, so that one left by a killed writer (kill -9, a lost node) is removed by the
    next writer into the folder (`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent not in _SWEPT:
        remove_stale_temporaries(path.parent)
        _SWEPT.add(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_writer_tag()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results should be as readable as any other
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # a failed write() (a full disk) does not say which file: this one
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_SWEPT: set[Path] = set()  # folders this process has swept for stale temporaries
_TEMPORARY = re.compile(r"^\..+\.w(?P<pid>\d+)@(?P<host>[^.]*)\.[^.]+\.tmp$")
FOREIGN_TMP_SECONDS = 24 * 3600  # a temporary of another host (or an older fewstep) is stale after a day


def _host() -> str:
    import socket

    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())


def _writer_tag() -> str:
    return f"w{os.getpid()}@{_host()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries of writers that died before their rename: those of a process of this host that no
    longer exists, and any over a day old (another host's, whose processes cannot be asked). Returns them."""
    import time

    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        match = _TEMPORARY.match(tmp.name)
        try:
            if match and match["host"] == _host():
                stale = not _alive(int(match["pid"]))
            else:
                stale = time.time() - tmp.stat().st_mtime > FOREIGN_TMP_SECONDS
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # removed meanwhile by another process, or not ours to remove
            continue
    return removed


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


def first_line(err: BaseException) -> str:
    """`Type: the first line of its message` (a message may be empty or many lines)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


NPZ_MAGIC = b"PK\x03\x04"  # an npz is a zip archive of .npy arrays


def npz_problem(path: str | Path) -> str | None:
    """Why `path` cannot be an npz archive (empty, or not a zip; numpy would call the latter "pickled data"), or
    None."""
    with open(path, "rb") as f:
        head = f.read(len(NPZ_MAGIC))
    if not head:
        return "it is empty (0 bytes)"
    if head != NPZ_MAGIC:
        return f"it is not an npz archive (an npz is a zip of .npy arrays; this file starts with {head!r})"
    return None


def refused_pickled_code(err: BaseException | None) -> bool:
    """Whether torch.load(weights_only=True) refused a pickle that needs code (possibly wrapped by a loader), as
    opposed to a damaged file."""
    while err is not None:
        text = str(err).lower()
        if "weights only load failed" in text and ("global" in text or "blocked" in text):  # not a garbage file
            return True
        err = err.__cause__ or err.__context__
    return False
