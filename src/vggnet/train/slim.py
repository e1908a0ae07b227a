"""Resume checkpoints of fine-tuning runs hold only what training can change.

A head-only fine-tune of VGG16 trains FC8's 4 M parameters and keeps the other 134 M exactly as
`--init-from` gave them; writing those 512 MB into every epoch's checkpoint cost more than the epoch itself.
The tensors that are both copied from the pretrained weights and frozen (parameters without gradients,
a frozen BatchNorm's statistics) are left out of the checkpoint, which names them instead. On resume they
are copied again from the same file, found through the run's `init.json` and refused unless its SHA-256
is still the one recorded when the run started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model import VGG
from ..runs import INIT
from ..weights import file_sha256
from .finetune import FrozenBatchNorm2d
from .initialize import copy_pretrained, open_pretrained


def constant_keys(model: VGG) -> set[str]:
    """State-dict keys that no training step changes: frozen parameters and the buffers of frozen BatchNorms."""
    keys = {name for name, p in model.named_parameters() if not p.requires_grad}
    for prefix, module in model.named_modules():
        if isinstance(module, FrozenBatchNorm2d):  # (its step counter stays: BatchNorm loads without it silently)
            keys |= {f"{prefix}.{name}" for name, _ in module.named_buffers(recurse=False)}
            keys.discard(f"{prefix}.num_batches_tracked")
    return keys


def omitted_keys(model: VGG, copied: list[str] | None) -> list[str]:
    """The keys a checkpoint may leave out: copied from --init-from (so a file holds them) and never trained."""
    if not copied:
        return []
    return sorted(constant_keys(model) & set(copied))


def slim_state(model: VGG, omitted: list[str]) -> dict[str, Any]:
    """The model's state dict without the omitted keys (the tensors are shared, not copied)."""
    left_out = set(omitted)
    return {k: v for k, v in model.state_dict().items() if k not in left_out}


def reload_source(run_dir: Path, origin: dict[str, Any]) -> Path:
    """The --init-from file a slim checkpoint's left-out tensors come from, checked against its recorded SHA-256."""
    path = Path(str(origin.get("path", "")))
    fix = "put the file back, or start the run again"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: its checkpoint leaves the frozen layers to --init-from {path}, which is missing; {fix}"
        )
    if file_sha256(path) != origin.get("sha256"):
        raise ValueError(
            f"{run_dir}: its checkpoint leaves the frozen layers to --init-from {path}, which changed since the run "
            f"started (SHA-256 differs from {run_dir / INIT}); {fix}"
        )
    return path


def check_loaded(run_dir: Path, missing: list[str], unexpected: list[str], omitted: list[str]) -> None:
    """After loading a slim checkpoint: exactly the omitted keys were missing, and nothing was unknown."""
    if unexpected or sorted(missing) != sorted(omitted):
        extra = sorted(set(missing) - set(omitted))
        raise ValueError(
            f"{run_dir}: the checkpoint does not fit this model (missing {extra[:3] or 'none'}, "
            f"unexpected {unexpected[:3] or 'none'})"
        )


def refill(model: VGG, run_dir: Path, origin: dict[str, Any], classes: list[str], verify: bool) -> None:
    """Copy --init-from into a resumed run's model again, as at its start, for the tensors its checkpoint left out."""
    if not origin:
        raise ValueError(f"{run_dir}: its checkpoint leaves the frozen layers to --init-from, but {INIT} is missing")
    start = open_pretrained(reload_source(run_dir, origin), verify)
    copy_pretrained(model, start.model, str(start.path), classes, start.meta.class_names)
