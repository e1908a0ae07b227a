"""Weights on disk: the project's own format, safe loading, atomic writes.

The project format is one `.safetensors` file whose header metadata holds, under the key
"vggnet", a JSON document: the ModelConfig, class names, preprocessing, source and
parameter count. Nothing here ever unpickles arbitrary objects.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .configs import ModelConfig
from .data import Preprocessing
from .model import VGG, count_parameters

FORMAT_KEY = "vggnet"


@dataclass
class WeightsMeta:
    """What travels with a set of weights, so nobody has to repeat it."""

    model: ModelConfig
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    class_names: list[str] | None = None
    source: str = "vggnet"
    params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WeightsMeta:
        raw = json.loads(text)
        return cls(
            model=ModelConfig(**raw["model"]),
            preprocessing=Preprocessing(**raw.get("preprocessing", {})),
            class_names=raw.get("class_names"),
            source=raw.get("source", "vggnet"),
            params=raw.get("params", 0),
            extra=raw.get("extra", {}),
        )


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    A reader sees the old file or the new one, never half of one (a killed run included).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_weights(
    model: VGG,
    path: str | os.PathLike[str],
    *,
    preprocessing: Preprocessing | None = None,
    class_names: list[str] | None = None,
    source: str = "vggnet",
    extra: dict[str, Any] | None = None,
) -> WeightsMeta:
    """Write `model` in the project format (safetensors + JSON metadata), atomically."""
    if class_names is not None and len(class_names) != model.cfg.num_classes:
        raise ValueError(f"{len(class_names)} class names given for a model with {model.cfg.num_classes} classes")
    meta = WeightsMeta(
        model=model.cfg,
        preprocessing=preprocessing or Preprocessing(),
        class_names=list(class_names) if class_names is not None else None,
        source=source,
        params=count_parameters(model),
        extra=extra or {},
    )
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={FORMAT_KEY: meta.to_json()}))
    return meta


def read_meta(path: str | os.PathLike[str]) -> WeightsMeta:
    """The metadata of a project-format weights file, without loading the tensors."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a safetensors weights file ({e})") from None
    if FORMAT_KEY not in header:
        raise ValueError(f"{path}: safetensors file without vggnet metadata; import it with `vggnet convert`")
    return WeightsMeta.from_json(header[FORMAT_KEY])


def load_weights(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[VGG, WeightsMeta]:
    """Rebuild the model stored in a project-format file; returns (model in eval mode, metadata)."""
    meta = read_meta(path)
    tensors = load_file(str(path), device=str(device))
    model = VGG(meta.model).to(device)
    load_state_checked(model, tensors, source=str(path))
    return model.eval(), meta


def load_state_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "weights") -> None:
    """load_state_dict(strict=True) with errors that name the layer and both shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"{source}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{source}: layer {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=True)


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise ValueError(f"{p}: is a folder, expected a weights file")
    return p
