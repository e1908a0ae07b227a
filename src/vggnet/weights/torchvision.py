"""torchvision state dicts, read safely: `features.N` / `classifier.0/3/6` tensors in torch's layouts.

A `.pth` checkpoint is read with `weights_only=True`, so nothing pickled ever runs; a raw
`.safetensors` state dict is read as it is. Training wrappers and key prefixes are undone.
timm's files arrive the same way and are renamed afterwards (timm.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .format import existing_file

# Where training scripts keep the model's tensors inside a checkpoint dict.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "net", "weights")


def read_torch_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a `.pth` checkpoint, read with `weights_only=True`: nothing pickled ever runs.

    A checkpoint holding pickled objects other than tensors and plain containers is refused.
    Wrappers ({"state_dict": ...}, {"model": ...}) and DataParallel's `module.` prefix are undone.
    """
    path = existing_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, KeyError... for bad files
        text = str(e)
        if "Unsupported global" in text or "WeightsUnpickler" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise ValueError(
                f"{path}: refused: the checkpoint contains pickled non-tensor objects{what}; nothing was "
                "executed. Only tensors are loaded: re-save it as a state dict or as .safetensors"
            ) from None
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or another format)") from None
    state = _find_state_dict(obj)
    if state is None:
        shown = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}: no state dict of tensors in this checkpoint (top level: {shown})")
    return _strip_prefixes(state)


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
