"""Any weights file in, a model out: recognising a file's source, importing it, converting it.

A file is recognised by its content (signature, key names), the extension only breaking ties;
each source's module turns its tensors into torchvision-named ones, infer.py reads the
configuration, and format.py builds the model and writes the project format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..model import VGG
from .caffe import caffe_state, read_caffemodel
from .format import (
    FORMAT_KEY,
    Preprocessing,
    WeightsMeta,
    assemble,
    existing_file,
    has_classifier,
    load_project_weights,
    read_meta,
    safetensors_header,
    save_weights,
)
from .infer import infer_config
from .integrity import check, expected_file_sha256, file_sha256
from .keras import keras_state, read_keras_h5
from .timm import timm_state
from .torchvision import read_safetensors_state, read_torch_state

SOURCES = ("auto", "vggnet", "torchvision", "timm", "keras", "caffe")
# The preprocessing each source's weights were trained with (PAPER.md).
SOURCE_PREPROCESSING: dict[str, Callable[[], Preprocessing]] = {
    "torchvision": Preprocessing.torchvision,
    "timm": Preprocessing.torchvision,
    "keras": Preprocessing.caffe,
    "caffe": Preprocessing.caffe,
}
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")


# -- loading any weights file ------------------------------------------------------------------


def read_weights(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    source: str = "auto",
    *,
    verify: bool = True,
    sha256: str | None = None,
) -> tuple[VGG, WeightsMeta]:
    """Rebuild the model stored in any supported weights file; returns (model in eval mode, metadata).

    A local file only: names, URLs and run folders go through `resolve.load_weights`.
    Project-format files load as saved, their content hashes checked unless `verify` is False;
    torchvision, timm, Keras and Caffe files are imported in memory (see `import_weights`). `sha256`:
    what the file's own sha256 must start with (at least 8 hex digits), e.g. a published checksum.
    """
    path = existing_file(path)
    if source not in ("auto", "vggnet") or (source == "auto" and not _is_project_file(path)):
        model, meta = import_weights(path, source=source, verify=verify, sha256=sha256)
        return model.to(device), meta
    expected = expected_file_sha256(path, sha256)
    if verify and expected:
        check(file_sha256(path), expected, path, "the file")
    return load_project_weights(path, device, verify)


def weights_meta(path: str | os.PathLike[str], verify: bool = True) -> WeightsMeta:
    """The metadata of any supported weights file: a project file's header alone; a torchvision, timm, Keras or
    Caffe file is imported to learn its configuration from the tensors."""
    path = existing_file(path)
    return read_meta(path, verify) if _is_project_file(path) else import_weights(path, verify=verify)[1]


# -- importing from every public source --------------------------------------------------------


def import_weights(
    src: str | os.PathLike[str],
    source: str = "auto",
    *,
    head: str | None = None,
    class_names: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
    verify: bool = True,
    sha256: str | None = None,
) -> tuple[VGG, WeightsMeta]:
    """Read a torchvision, timm, Keras, Caffe or project-format file into (model, metadata).

    The configuration comes from the tensors; the preprocessing from the source's convention
    unless given. `head` ("fc" or "conv") converts the classifier; by default each source keeps
    its own layout (timm: conv, the others: fc). A foreign file's sha256 is recorded in the
    metadata (extra["file_sha256"]) and, with `verify`, checked against `sha256` (a prefix of
    at least 8 hex digits will do) or the prefix in a torchvision file name (vgg16-397923af.pth).
    """
    path = existing_file(src)
    if source not in SOURCES:
        raise ValueError(f"unknown weights source {source!r}; accepted: {', '.join(SOURCES)}")
    if head is not None and head not in ("fc", "conv"):
        raise ValueError(f"cannot import into a {head!r} head; accepted: fc, conv")
    where = str(path)
    project = source == "vggnet" or (source == "auto" and _is_project_file(path))
    expected = expected_file_sha256(path, sha256)
    found = file_sha256(path) if expected or not project else ""
    if verify and expected:
        check(found, expected, path, "the file")
    extra: dict[str, Any] = {"file": path.name, "file_sha256": found}
    if project:
        model, meta = load_project_weights(path, verify=verify)
        preprocessing = preprocessing or meta.preprocessing
        class_names = class_names if class_names is not None else meta.class_names
        source, extra = meta.source, meta.extra
    else:
        source, state = _read_source(path, source)
        cfg, include_top = infer_config(state, where)
        model = assemble(cfg, include_top, state, where)
    if head is not None and head != model.cfg.head and has_classifier(model):
        model = model.to_head(head).eval()
    if class_names is not None and len(class_names) != model.cfg.num_classes:
        raise ValueError(
            f"{len(class_names)} class names given for weights with {model.cfg.num_classes} classes ({where})"
        )
    preprocessing = preprocessing or SOURCE_PREPROCESSING.get(source, Preprocessing)()
    return model, WeightsMeta.for_model(
        model, preprocessing=preprocessing, class_names=class_names, source=source, extra=extra
    )


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    source: str = "auto",
    *,
    head: str | None = None,
    class_names: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
    verify: bool = True,
    sha256: str | None = None,
) -> WeightsMeta:
    """Import `src` (any supported source) and write it to `dst` in the project format, hashes included.

    A foreign `src`'s sha256 is recorded (extra["file_sha256"]); `verify` and `sha256` as in `import_weights`.
    """
    model, meta = import_weights(
        src, source, head=head, class_names=class_names, preprocessing=preprocessing, verify=verify, sha256=sha256
    )
    return save_weights(
        model,
        dst,
        preprocessing=meta.preprocessing,
        class_names=meta.class_names,
        source=meta.source,
        extra=meta.extra,
    )


def _read_source(path: Path, source: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(source, torchvision-named state dict) of a foreign file; `source` may be "auto"."""
    container = _container(path)
    if source == "auto" and container in ("keras", "caffe"):
        source = container
    fits = container == source if source in ("keras", "caffe") else container in ("torch", "safetensors")
    if not fits:
        raise ValueError(f"{path}: looks like a {container} file, not a {source} one (try --from auto)")
    if source == "keras":
        return source, keras_state(read_keras_h5(path), str(path))
    if source == "caffe":
        return source, caffe_state(read_caffemodel(path), str(path))
    state = read_safetensors_state(path) if container == "safetensors" else read_torch_state(path)
    if source == "auto":
        source = _tensor_convention(list(state), str(path))
    return source, timm_state(state) if source == "timm" else state


# -- recognising a file: its container by signature, its convention by key names ---------------


def detect_source(path: str | os.PathLike[str]) -> str:
    """Which convention a weights file follows: vggnet, torchvision, timm, keras or caffe.

    Decided by content (file signature, key names), the extension only breaking ties.
    """
    path = existing_file(path)
    container = _container(path)
    if container == "safetensors":
        return "vggnet" if _is_project_file(path) else _tensor_convention(_safetensors_keys(path), str(path))
    if container == "torch":
        return _tensor_convention(list(read_torch_state(path)), str(path))
    return container  # "keras" or "caffe"


def _is_project_file(path: Path) -> bool:
    return _container(path) == "safetensors" and FORMAT_KEY in safetensors_header(path)


def _container(path: Path) -> str:
    """The file kind by signature, then extension: safetensors, torch, keras (HDF5) or caffe."""
    with open(path, "rb") as f:
        head = f.read(16)
    suffix = path.suffix.lower()
    if not head:
        raise ValueError(f"{path}: empty file, not weights")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras"
    if head.startswith(b"PK\x03\x04"):  # torch zip
        return "torch"
    # u64 header length, then JSON; before the pickle test: a header length whose low byte is 0x80 looks like one
    if len(head) >= 9 and head[8:9] == b"{" and suffix != ".caffemodel":
        return "safetensors"
    if head[:1] == b"\x80":  # legacy torch pickle
        return "torch"
    if suffix == ".caffemodel":
        return "caffe"
    if suffix in (".h5", ".hdf5"):
        return "keras"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    if suffix == ".safetensors":
        return "safetensors"
    if head[:1] in (b"\x0a", b"\x12") or head[:2] == b"\xa2\x06":  # NetParameter name / layers / layer
        return "caffe"
    raise ValueError(
        f"{path}: not a recognised weights file (expected .safetensors, .pth/.pt, Keras .h5 or .caffemodel)"
    )


def _tensor_convention(keys: list[str], where: str) -> str:
    """torchvision or timm, from the key names of a state dict."""
    if any(k.startswith(("pre_logits.", "head.fc.")) for k in keys):
        return "timm"
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    shown = ", ".join(keys[:4]) or "none"
    raise ValueError(f"{where}: tensors named {shown}... are not a VGG state dict (expected features.N.weight)")


def _safetensors_keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())
