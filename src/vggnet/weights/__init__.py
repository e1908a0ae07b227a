"""Weights on disk: the project's own format, importers for every public source, safe loading.

The project format is one `.safetensors` file whose header metadata holds, under the key
"vggnet", a JSON document: the ModelConfig, class names, preprocessing, source, parameter
count and whether the classifier is present. Nothing here ever unpickles arbitrary objects.

Importers (the conventions are in PAPER.md, "Public implementations"):

- torchvision: `features.N` / `classifier.0/3/6` state dicts (`.pth`, or raw `.safetensors`).
- timm: the same features, FC6/FC7 held as 7x7 / 1x1 convs (`pre_logits.fc1/fc2`), `head.fc`.
- Keras: HDF5 with `layer_names` / `weight_names` attributes; kernels (H, W, in, out), dense
  kernels (in, out), FC6's input flattened in (H, W, C) order.
- Caffe: a binary `NetParameter` (`layers`, V1, or `layer`, V2); blobs already in torch's
  (out, in, kh, kw) and (out, in) layouts, FC6's input in (C, H, W) order; BGR input.

The configuration (Table 1 column, BN, width, classes, head) is read from the tensors.
A file without the classifier ("notop") gives a features-only model: its `classifier` is a
`NoClassifier`, its metadata says `include_top: false`, and it serves features and losses.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model import VGG, count_parameters
from .format import (
    CAFFE_MEAN_BGR,
    FORMAT_KEY,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NoClassifier,
    Preprocessing,
    WeightsMeta,
    aligned,
    assemble,
    existing_file,
    has_classifier,
    load_project_weights,
    load_state_checked,
    read_meta,
    safetensors_header,
    save_weights,
)
from .infer import infer_config, stack_state
from .keras import keras_state, read_keras_h5
from .timm import timm_state
from .torchvision import read_safetensors_state, read_torch_state

__all__ = [
    "CAFFE_MEAN_BGR",
    "CAFFE_V1_TYPES",
    "CaffeLayer",
    "FORMAT_KEY",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NoClassifier",
    "Preprocessing",
    "SOURCES",
    "SOURCE_PREPROCESSING",
    "TORCH_SUFFIXES",
    "WeightsMeta",
    "aligned",
    "caffe_state",
    "convert",
    "detect_source",
    "has_classifier",
    "import_weights",
    "infer_config",
    "keras_state",
    "load_state_checked",
    "load_weights",
    "read_caffemodel",
    "read_keras_h5",
    "read_meta",
    "read_torch_state",
    "save_weights",
    "timm_state",
]

SOURCES = ("auto", "vggnet", "torchvision", "timm", "keras", "caffe")
# The preprocessing each source's weights were trained with (PAPER.md).
SOURCE_PREPROCESSING: dict[str, Callable[[], Preprocessing]] = {
    "torchvision": Preprocessing.torchvision,
    "timm": Preprocessing.torchvision,
    "keras": Preprocessing.caffe,
    "caffe": Preprocessing.caffe,
}
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")


# -- loading any weights file -------------------------------------------------------------------


def load_weights(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", source: str = "auto"
) -> tuple[VGG, WeightsMeta]:
    """Rebuild the model stored in any supported weights file; returns (model in eval mode, metadata).

    Project-format files load as saved; torchvision, timm, Keras and Caffe files are imported
    in memory (see `import_weights`), so every command accepts them directly.
    """
    path = existing_file(path)
    if source not in ("auto", "vggnet") or (source == "auto" and not _is_project_file(path)):
        model, meta = import_weights(path, source=source)
        return model.to(device), meta
    return load_project_weights(path, device)


# -- importing from every public source ------------------------------------------------------


def import_weights(
    src: str | os.PathLike[str],
    source: str = "auto",
    *,
    head: str | None = None,
    class_names: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
) -> tuple[VGG, WeightsMeta]:
    """Read a torchvision, timm, Keras, Caffe or project-format file into (model, metadata).

    The configuration comes from the tensors; the preprocessing from the source's convention
    unless given. `head` ("fc" or "conv") converts the classifier; by default each source keeps
    its own layout (timm: conv, the others: fc).
    """
    path = existing_file(src)
    if source not in SOURCES:
        raise ValueError(f"unknown weights source {source!r}; accepted: {', '.join(SOURCES)}")
    if head is not None and head not in ("fc", "conv"):
        raise ValueError(f"cannot import into a {head!r} head; accepted: fc, conv")
    where = str(path)
    extra: dict[str, Any] = {"file": path.name}
    if source == "vggnet" or (source == "auto" and _is_project_file(path)):
        model, meta = load_project_weights(path)
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
    meta = WeightsMeta(
        model=model.cfg,
        preprocessing=preprocessing or SOURCE_PREPROCESSING.get(source, Preprocessing)(),
        class_names=list(class_names) if class_names is not None else None,
        source=source,
        params=count_parameters(model),
        include_top=has_classifier(model),
        extra=extra,
    )
    return model, meta


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    source: str = "auto",
    *,
    head: str | None = None,
    class_names: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
) -> WeightsMeta:
    """Import `src` (any supported source) and write it to `dst` in the project format."""
    model, meta = import_weights(src, source, head=head, class_names=class_names, preprocessing=preprocessing)
    return save_weights(
        model,
        dst,
        preprocessing=meta.preprocessing,
        class_names=meta.class_names,
        source=meta.source,
        extra=meta.extra,
    )


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


def _read_source(path: Path, source: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(source, torchvision-named state dict) of a foreign file; `source` may be "auto"."""
    container = _container(path)
    if source == "auto" and container in ("keras", "caffe"):
        source = container
    if source in ("keras", "caffe") and container != source:
        raise ValueError(f"{path}: looks like a {container} file, not a {source} one (try --from auto)")
    if source == "keras":
        return source, keras_state(read_keras_h5(path), str(path))
    if source == "caffe":
        return source, caffe_state(read_caffemodel(path), str(path))
    if container not in ("torch", "safetensors"):
        raise ValueError(f"{path}: looks like a {container} file, not a {source} one (try --from auto)")
    state = read_safetensors_state(path) if container == "safetensors" else read_torch_state(path)
    if source == "auto":
        source = _tensor_convention(list(state), str(path))
    return source, timm_state(state) if source == "timm" else state


def _tensor_convention(keys: list[str], where: str) -> str:
    """torchvision or timm, from the key names of a state dict."""
    if any(k.startswith(("pre_logits.", "head.fc.")) for k in keys):
        return "timm"
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    shown = ", ".join(keys[:4]) or "none"
    raise ValueError(f"{where}: tensors named {shown}... are not a VGG state dict (expected features.N.weight)")


# -- reading files safely ------------------------------------------------------------------


def _container(path: Path) -> str:
    """The file kind by signature, then extension: safetensors, torch, keras (HDF5) or caffe."""
    with open(path, "rb") as f:
        head = f.read(16)
    suffix = path.suffix.lower()
    if not head:
        raise ValueError(f"{path}: empty file, not weights")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch zip or legacy pickle
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and suffix != ".caffemodel":  # u64 header length, JSON
        return "safetensors"
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


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


# -- Caffe .caffemodel ----------------------------------------------------------------------

# V1LayerParameter.LayerType values (caffe.proto) of the layers a VGG holds.
CAFFE_V1_TYPES = {4: "Convolution", 5: "Data", 6: "Dropout", 14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU"}
CAFFE_V1_TYPES |= {20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 1: "Accuracy", 29: "MemoryData"}


@dataclass
class CaffeLayer:
    """One layer of a `.caffemodel`: its name, type and parameter blobs (shaped arrays)."""

    name: str
    type: str
    blobs: list[np.ndarray]


class _Truncated(ValueError):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise _Truncated("message ends inside a number")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed number")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """Protobuf wire format: (field number, wire type, int value or (start, end) span)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire in (1, 2, 5):
            if wire == 2:
                size, pos = _varint(buf, pos, end)
            else:
                size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _Truncated("message ends inside a field")
            value, pos = (pos, pos + size), pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _caffe_blob(buf: memoryview, start: int, end: int) -> np.ndarray:
    """A BlobProto: data (field 5, float) or double_data (8); shape (7) or legacy num/channels/height/width (1-4)."""
    dims: list[int] | None = None
    legacy = [0, 0, 0, 0]
    chunks: list[np.ndarray] = []
    for number, wire, value in _fields(buf, start, end):
        if number == 7 and wire == 2:
            dims = []
            for n, w, v in _fields(buf, *value):
                if n == 1 and w == 2:  # packed int64
                    pos, stop = v
                    while pos < stop:
                        d, pos = _varint(buf, pos, stop)
                        dims.append(d)
                elif n == 1 and w == 0:
                    dims.append(v)
        elif number in (1, 2, 3, 4) and wire == 0:
            legacy[number - 1] = value
        elif number == 5 and wire in (2, 5):
            chunks.append(np.frombuffer(buf[value[0] : value[1]], dtype="<f4"))
        elif number == 8 and wire in (1, 2):
            chunks.append(np.frombuffer(buf[value[0] : value[1]], dtype="<f8").astype(np.float32))
    data = np.concatenate(chunks) if len(chunks) > 1 else (chunks[0] if chunks else np.zeros(0, np.float32))
    shape = dims if dims is not None else legacy
    if math.prod(shape) != data.size:
        raise ValueError(f"a blob holds {data.size} values for the shape {tuple(shape)}")
    return np.array(data, dtype=np.float32).reshape(shape)  # a copy: independent of the mapped file


def _caffe_layer(buf: memoryview, span: tuple[int, int], v1: bool) -> CaffeLayer:
    # V2 LayerParameter: name 1, type 2 (string), blobs 7. V1: name 4, type 5 (enum), blobs 6,
    # and an embedded V0 layer (field 1: name 1, type 2, blobs 50) in the oldest files.
    name_f, type_f, blob_f = (4, 5, 6) if v1 else (1, 2, 7)
    layer = CaffeLayer("", "", [])
    for number, wire, value in _fields(buf, *span):
        if number == name_f and wire == 2:
            layer.name = bytes(buf[value[0] : value[1]]).decode("utf-8", "replace")
        elif number == type_f and wire == 0 and v1:
            layer.type = CAFFE_V1_TYPES.get(value, f"V1 type {value}")
        elif number == type_f and wire == 2 and not v1:
            layer.type = bytes(buf[value[0] : value[1]]).decode("utf-8", "replace")
        elif number == blob_f and wire == 2:
            layer.blobs.append(_caffe_blob(buf, *value))
        elif v1 and number == 1 and wire == 2:
            old = _caffe_layer_v0(buf, value)
            layer.name, layer.type, layer.blobs = layer.name or old.name, layer.type or old.type, old.blobs
    return layer


def _caffe_layer_v0(buf: memoryview, span: tuple[int, int]) -> CaffeLayer:
    layer = CaffeLayer("", "", [])
    v0_types = {"conv": "Convolution", "innerproduct": "InnerProduct", "lrn": "LRN"}
    for number, wire, value in _fields(buf, *span):
        if number in (1, 2) and wire == 2:
            text = bytes(buf[value[0] : value[1]]).decode("utf-8", "replace")
            if number == 1:
                layer.name = text
            else:
                layer.type = v0_types.get(text, text)
        elif number == 50 and wire == 2:
            layer.blobs.append(_caffe_blob(buf, *value))
    return layer


def read_caffemodel(path: str | os.PathLike[str]) -> list[CaffeLayer]:
    """The layers of a binary Caffe `NetParameter`, read straight from the protobuf wire format.

    `layers` (field 2, V1, the published VGG files) and `layer` (field 100, V2) are both read;
    float data is mapped from the file, not parsed number by number.
    """
    path = existing_file(path)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ValueError(f"{path}: empty file, not a Caffe model")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    buf = memoryview(mapped)
    layers: list[CaffeLayer] = []
    try:
        for number, wire, value in _fields(buf, 0, len(buf)):
            if number in (2, 100) and wire == 2:
                layers.append(_caffe_layer(buf, value, v1=number == 2))
    except _Truncated as e:
        raise ValueError(f"{path}: truncated Caffe model ({e})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a Caffe model ({e})") from None
    finally:
        with contextlib.suppress(BufferError):  # arrays still viewing the map (an error path): GC closes it
            buf.release()
            mapped.close()
    if not any(layer.blobs for layer in layers):
        raise ValueError(f"{path}: no layers with weights; not a Caffe model")
    return layers


def caffe_state(layers: list[CaffeLayer], where: str) -> dict[str, torch.Tensor]:
    """Caffe conv/inner-product blobs -> torchvision names (already (out, in, kh, kw) and (out, in) in C,H,W order)."""
    convs, fcs, lrn = [], [], False
    for layer in layers:
        lrn = lrn or layer.type == "LRN"
        if not layer.blobs:
            continue
        if layer.type not in ("Convolution", "InnerProduct") or len(layer.blobs) != 2:
            shapes = [b.shape for b in layer.blobs]
            raise ValueError(
                f"{where}: layer {layer.name} ({layer.type}) holds blobs of shapes {shapes}; "
                "only Convolution and InnerProduct layers with a bias are read"
            )
        weight, bias = (torch.from_numpy(b) for b in layer.blobs)
        bias = bias.reshape(-1)
        out = bias.numel()
        if layer.type == "Convolution":
            convs.append((weight.reshape(out, -1, *weight.shape[-2:]), bias))  # legacy blobs are 4D already
        else:
            fcs.append((weight.reshape(out, -1), bias))  # legacy (1, 1, out, in) -> (out, in)
    return stack_state(convs, fcs, where, lrn=lrn)
