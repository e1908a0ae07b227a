"""Content hashes: what a file's numbers should be, recorded when it is written, checked when it is read.

`digest` is sha256 over a nested structure of tensors and plain values: each tensor's dtype, shape
and bytes, dict items in sorted key order, so it names the numbers themselves, not one file layout
(a state dict hashes the same in memory, in a .safetensors file and in a checkpoint). `file_sha256`
hashes a file's bytes (the source of a converted file). Nothing here imports the rest of vggnet.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch

CHUNK = 1 << 24  # bytes read per call when hashing a file

# torchvision publishes its VGG files as <name>-<first 8 hex digits of the file's sha256>.pth (as torch.hub checks).
TORCHVISION_NAME = re.compile(r"^vgg\d+(_bn)?-([0-9a-f]{8,64})\.pth$")


class IntegrityError(ValueError):
    """A file whose content does not match the hash recorded for it: damaged on disk or in transit."""


def digest(obj: Any) -> str:
    """sha256 (hex) of tensors and plain values nested in dicts, lists and tuples; dict keys in sorted order."""
    h = hashlib.sha256()
    _update(h, obj)
    return h.hexdigest()


def _update(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{str(t.dtype).removeprefix('torch.')}{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())  # the bytes, dtype-independent
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for key in sorted(obj, key=repr):  # state dicts have str keys, optimizer states int keys
            _update(h, key)
            _update(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}|".encode())
        for item in obj:
            _update(h, item)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(f"{type(obj).__name__}{obj!r}|".encode())
    else:
        raise TypeError(f"cannot hash a {type(obj).__name__}: only tensors, containers and plain values")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def text_sha256(text: str) -> str:
    """sha256 (hex) of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check(found: str, recorded: str, where: str | os.PathLike[str], what: str) -> None:
    """Raise a one-line IntegrityError naming the file when `found` does not start with `recorded`."""
    if not found.startswith(recorded.lower()):
        raise IntegrityError(
            f"{where}: damaged: the sha256 of {what} differs from the one recorded (expected {recorded[:12]}..., "
            f"found {found[:12]}...); re-download or re-create it (--no-verify loads it anyway)"
        )


def expected_file_sha256(path: Path, given: str | None) -> str | None:
    """The sha256 (or a prefix of at least 8 hex digits) a source file should have: `given`, else its torchvision name's."""
    if given:
        if not re.fullmatch(r"[0-9a-fA-F]{8,64}", given):
            raise ValueError(f"sha256 {given!r}: expected 8 to 64 hexadecimal digits")
        return given.lower()
    named = TORCHVISION_NAME.match(path.name)
    return named.group(2) if named else None
