"""Where a pretrained model lives: a local file or directory always; the Hugging Face hub only with network."""

from __future__ import annotations

import os
import re
from pathlib import Path

from fewstep.errors import FewstepError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".safetensors", ".bin", ".npz", ".json"}
# What the loaders read from a diffusers repo; not the original .ckpt files, fp16/non-EMA variants or other
# frameworks' weights (a Stable Diffusion repo holds tens of GB of those).
ALLOW_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*.bin"]
IGNORE_PATTERNS = ["*.ckpt", "*non_ema*", "*.fp16.*", "*.msgpack", "*.h5", "*.onnx", "*.pb", "safety_checker/*"]


def resolve_pretrained(name: str | os.PathLike, what: str = "model.path") -> Path:
    """A local path for `name`: the path itself if it exists, else a Hugging Face hub repo id ("org/name"),
    taken from the local hub cache or downloaded when the network allows.

    Raises FewstepError naming the path, or saying how to pre-download the repo on a machine with network.
    """
    path = Path(name).expanduser()
    if path.exists():
        return path
    text = str(name)
    if not _REPO_ID.match(text) or text.startswith((".", "~")) or path.suffix.lower() in _FILE_SUFFIXES:
        raise FewstepError(f"{what}={text}: no such file or directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise FewstepError(
            f"{what}={text} is neither a local path nor loadable: reading Hugging Face hub ids needs huggingface_hub "
            "(pip install 'fewstep[models]'), or give a local directory"
        ) from err
    try:
        return Path(snapshot_download(text, local_files_only=True))
    except Exception:  # not in the local cache: try the network below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise FewstepError(offline_message(text, what, "HF_HUB_OFFLINE is set"))
    try:
        return Path(snapshot_download(text, allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS))
    except Exception as err:  # no network, unknown repo, gated repo...
        raise FewstepError(offline_message(text, what, f"{type(err).__name__}: {err}")) from err


def offline_message(repo_id: str, what: str, reason: str) -> str:
    return (
        f"{what}={repo_id}: not a local path and not in the Hugging Face cache, and it could not be downloaded "
        f"({reason}). On a machine with network, run `hf download {repo_id} --local-dir DIR "
        f"--exclude '*.ckpt' '*non_ema*' '*.fp16.*'` (or `huggingface-cli download ...`), copy DIR here and set "
        f"{what}=DIR"
    )
