"""Caffe `.caffemodel` weights, read straight from the protobuf wire format (no protobuf or Caffe needed).

A binary `NetParameter` holds its layers as `layers` (V1, the published VGG files) or `layer` (V2);
their blobs are already in torch's (out, in, kh, kw) and (out, in) layouts, FC6's input in
(C, H, W) order. The networks were trained on BGR input (format.Preprocessing.caffe).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .format import existing_file
from .infer import stack_state

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
        if layer.type == "Convolution":  # (out, in, kh, kw), in both blob layouts
            agree = weight.dim() == 4 and weight.shape[0] == out and weight.numel() > 0
        else:  # (out, in), or legacy (1, 1, out, in)
            agree = out > 0 and weight.numel() > 0 and weight.numel() % out == 0
        if not agree:
            raise ValueError(
                f"{where}: layer {layer.name} ({layer.type}) has a weight of shape {tuple(weight.shape)} and "
                f"{out} biases: its blobs disagree"
            )
        if layer.type == "Convolution":
            convs.append((weight.reshape(out, -1, *weight.shape[-2:]), bias))  # legacy blobs are 4D already
        else:
            fcs.append((weight.reshape(out, -1), bias))  # legacy (1, 1, out, in) -> (out, in)
    return stack_state(convs, fcs, where, lrn=lrn)
