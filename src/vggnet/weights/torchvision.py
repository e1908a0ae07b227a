"""torchvision state dicts, read safely: `features.N` / `classifier.0/3/6` tensors in torch's layouts.

A `.pth` checkpoint is read with `weights_only=True`, so nothing pickled ever runs, after the sizes its
zip records declare are checked against a budget (a compressed record can inflate a small file into
gigabytes); a raw `.safetensors` state dict is read as it is. Training wrappers and key prefixes are
undone. timm's files arrive the same way and are renamed afterwards (timm.py).
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..limits import WEIGHTS_BYTES, Limit
from .format import existing_file

# Where training scripts keep the model's tensors inside a checkpoint dict.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "net", "weights")


def read_torch_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a `.pth` checkpoint, read with `weights_only=True`: nothing pickled ever runs.

    A checkpoint holding pickled objects other than tensors and plain containers is refused.
    Wrappers ({"state_dict": ...}, {"model": ...}) and DataParallel's `module.` prefix are undone.
    """
    path = existing_file(path)
    obj = torch_load(path, WEIGHTS_BYTES, "not a readable PyTorch checkpoint, truncated or another format")
    state = _find_state_dict(obj)
    if state is None:
        shown = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}: no state dict of tensors in this checkpoint (top level: {shown})")
    return _strip_prefixes(state)


# torch names the global a weights-only load refused: "Unsupported global: GLOBAL __main__.F was not an
# allowed global" or, for a module it blocks, "unsupported GLOBAL posix.system whose module posix is blocked".
REFUSED_GLOBAL = re.compile(r"unsupported global:?\s*(?:global\s+)?([\w.]+)", re.IGNORECASE)


def torch_load(path: Path, limit: Limit, unreadable: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` of a file whose zip records declare at most `limit` bytes.

    One-line ValueErrors: "PATH: refused: ..." for a pickle that would run code or a file over the
    budget, "PATH: <unreadable> (<torch's reason>)" for a damaged one.
    """
    check_zip_records(path, limit, unreadable)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, KeyError... for bad files
        text = str(e)
        found = REFUSED_GLOBAL.search(text)
        if found:
            raise ValueError(
                f"{path}: refused: its pickle would run code when loaded (it calls {found.group(1)}); nothing was "
                "executed. Only tensors are loaded: re-save it as a state dict or as .safetensors"
            ) from None
        text = text.split("WeightsUnpickler error:")[-1]  # after torch's paragraphs about weights_only: the reason
        reason = ([line.strip() for line in text.splitlines() if line.strip()] or [type(e).__name__])[0].split(". ")[0]
        raise ValueError(f"{path}: {unreadable} ({reason})") from None


def check_zip_records(path: Path, limit: Limit, unreadable: str) -> None:
    """Refuse a torch zip file whose records declare more than `limit` bytes uncompressed, before any is read.

    torch writes its records uncompressed, so a real file declares about its own size; a compressed
    record of zeros declares gigabytes in a few kilobytes. Legacy (pre-zip) files read their storages
    from the file itself and are not checked.
    """
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return
    try:
        with zipfile.ZipFile(path) as z:
            declared = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: {unreadable} (not a readable zip archive: {e})") from None
    limit.check(declared, f"{path}: its zip records declare")


def read_safetensors_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a plain `.safetensors` state dict (not the project format), prefixes undone."""
    try:
        return _strip_prefixes(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a safetensors weights file ({e})") from None


def _find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """`obj` if it is a state dict, else the first one it wraps under a usual key, else None."""
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        return next((obj[key] for key in WRAPPER_KEYS if _is_state_dict(obj.get(key))), None)
    return None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo DataParallel's `module.` and torch.compile's `_orig_mod.` key prefixes."""
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)
