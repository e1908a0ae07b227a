"""Hostile files, built the way an attacker would: each one small on disk, each one aimed at one reader.

Issue 33's findings as generators, shared by the tests of each reader and by the fuzzer (tests/fuzz.py),
which draws variants of them: HDF5 that reads outside itself or declares more than it holds, a zip record
that inflates, project-format metadata whose hash was recomputed after it was changed, a Caffe
convolution whose blobs disagree, images whose rescale is thin.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from vggnet.weights import FORMAT_KEY, HASH_KEY
from vggnet.weights.integrity import text_sha256
from weights_files import keras_layers, write_keras_h5

# -- HDF5 (Keras) -------------------------------------------------------------------------------

H5_TRICKS = ("external storage", "virtual dataset", "soft link", "external link", "declared", "strings")


def hostile_h5(
    path: Path,
    model: torch.nn.Module,
    trick: str,
    secret: Path,
    declared: int = 64 << 30,
    target: str = "block1_conv1/block1_conv1/kernel:0",
    dtype: str = "f4",
    ndim: int = 1,
) -> Path:
    """A Keras weights file of `model` whose dataset `target` (default: the first kernel) is replaced by `trick`.

    external storage / virtual dataset / external link: the data comes from `secret` (a local file, or
    an HDF5 file made beside it); soft link: the dataset points at another one of the file; declared: a
    `dtype` dataset of `ndim` dimensions and about `declared` bytes that is never written; strings: text.
    """
    write_keras_h5(path, keras_layers(model), "keras2")
    with h5py.File(path, "a") as f:
        names = h5_datasets(f)
        shape, kind = f[target].shape, f[target].dtype
        del f[target]
        if trick == "external storage":
            nbytes = int(np.prod(shape)) * kind.itemsize
            f.create_dataset(target, shape=shape, dtype=kind, external=[(str(secret), 0, nbytes)])
        elif trick in ("virtual dataset", "external link"):
            other = secret.with_suffix(".h5")
            with h5py.File(other, "w") as o:
                o.create_dataset("x", data=np.ones(shape, kind))
            if trick == "external link":
                f[target] = h5py.ExternalLink(str(other), "/x")
            else:
                layout = h5py.VirtualLayout(shape=shape, dtype=kind)
                layout[...] = h5py.VirtualSource(str(other), "x", shape=shape)
                f.create_virtual_dataset(target, layout)
        elif trick == "soft link":
            f[target] = h5py.SoftLink("/" + next(n for n in names if n != target))
        elif trick == "declared":
            count = max(1, declared // np.dtype(dtype).itemsize)
            side = max(1, round(count ** (1 / ndim)))
            dims = (side,) * (ndim - 1) + (max(1, count // side ** (ndim - 1)),)
            f.create_dataset(target, shape=dims, dtype=dtype)  # never written: HDF5 stores nothing
        elif trick == "strings":
            f.create_dataset(target, data=np.array([b"x" * 8] * 4))
        else:
            raise ValueError(trick)
    return path


def h5_datasets(f: h5py.File) -> list[str]:
    """Every dataset of an HDF5 file, by path."""
    found: list[str] = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


# -- torch zip records -----------------------------------------------------------------------------


def zip_bomb_pth(path: Path, inflated: int, record: str = "data/0") -> Path:
    """A torch file of a small state dict whose record `record` is replaced by `inflated` bytes of zeros, deflated.

    The deflate stream repeats one fully flushed 16 MiB block, so a gigabyte costs a megabyte and no
    compression time. Its CRC is left 0: a reader finds out only after inflating all of it.
    """
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3)}, buf)
    records = {i.filename: zipfile.ZipFile(buf).read(i.filename) for i in zipfile.ZipFile(buf).infolist()}
    chunk = min(16 << 20, inflated)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = squeeze.compress(bytes(chunk)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    count = -(-inflated // chunk)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    local, central = bytearray(), bytearray()
    for name, data in records.items():
        bomb = name.endswith("/" + record)
        stored = block * count + end if bomb else data
        size, crc, method = (count * chunk, 0, 8) if bomb else (len(data), zlib.crc32(data), 0)
        offset = len(local)
        fields = (20, 0, method, 0, 0, crc, len(stored), size, len(name), 0)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + name.encode() + stored
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, offset) + name.encode()
    tail = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + tail))
    return path


# -- project-format metadata ------------------------------------------------------------------------

# Shapes of metadata the review crafted (issue 33, finding 6), as edits of a valid document.
META_EDITS: dict[str, Any] = {
    "nested 200k deep": lambda m: json.dumps(m)[:-1] + ', "deep": ' + "[" * 200_000 + "]" * 200_000 + "}",
    "one class name for 5 classes": lambda m: m.update(class_names=["one"]),
    "class_names a number": lambda m: m.update(class_names=5),
    "a class name with a newline": lambda m: m.update(class_names=["a\nb"] + m["class_names"][1:]),
    "preprocessing scale a string": lambda m: m["preprocessing"].update(scale="255"),
    "preprocessing std 0": lambda m: m["preprocessing"].update(std=[0.0, 1.0, 1.0]),
    "preprocessing mean of 5": lambda m: m["preprocessing"].update(mean=[0.5] * 5),
    "preprocessing mean infinite": lambda m: m["preprocessing"].update(mean=[float("inf"), 0.5, 0.5]),
    "width a string": lambda m: m["model"].update(width="1"),
    "width negative": lambda m: m["model"].update(width=-1.0),
    "arch a list": lambda m: m["model"].update(arch=["A"]),
    "arch unknown": lambda m: m["model"].update(arch="Z"),
    "num_classes a float": lambda m: m["model"].update(num_classes=5.0),
    "num_classes a billion": lambda m: m["model"].update(num_classes=10**9),
    "head unknown": lambda m: m["model"].update(head="mlp"),
    "input_size 0": lambda m: m["model"].update(input_size=0),
    "include_top a string": lambda m: m.update(include_top="yes"),
    "extra a list": lambda m: m.update(extra=[1]),
    "training scale infinite": lambda m: m["extra"].update(scale=[1e400, 1e400]),
    "model missing": lambda m: m.pop("model"),
    "unknown model field": lambda m: m["model"].update(layers=3),
}


def rewrite_meta(src: Path, dst: Path, edit: Any) -> Path:
    """A copy of a project-format file whose metadata `edit` changed, its hash recomputed (as anyone can).

    `edit` changes the parsed document in place, or returns the new JSON text itself.
    """
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = f.metadata()
    meta = json.loads(header[FORMAT_KEY])
    text = edit(meta)
    text = text if isinstance(text, str) else json.dumps(meta, sort_keys=True)
    save_file(tensors, str(dst), metadata={FORMAT_KEY: text, HASH_KEY: text_sha256(text)})
    return dst


# -- images -----------------------------------------------------------------------------------------


def thin_png(path: Path, width: int, height: int = 1) -> Path:
    """A width x height PNG of one colour: a few bytes that rescale into a very wide network input."""
    Image.new("RGB", (width, height), (90, 20, 200)).save(path)
    return path


# -- Caffe ------------------------------------------------------------------------------------------


def caffe_disagreeing_conv(path: Path, model: torch.nn.Module, bias: int) -> Path:
    """A Caffe V2 net of `model` whose first convolution's bias holds `bias` values (its weight disagrees)."""
    return caffe_reshaped_blob(path, model, 0, 1, [bias])


def caffe_reshaped_blob(path: Path, model: torch.nn.Module, layer: int, blob: int, dims: list[int]) -> Path:
    """A Caffe V2 net of `model` whose `layer`-th layer with blobs has blob `blob` of shape `dims` (values 0.5)."""
    from weights_files import caffe_messages, write_caffemodel

    write_caffemodel(path, model, "v2")
    net = caffe_messages()()
    net.ParseFromString(path.read_bytes())
    target = [entry for entry in net.layer if entry.blobs][layer].blobs[blob]
    del target.shape.dim[:]
    target.shape.dim.extend(dims)
    del target.data[:]
    target.data.extend([0.5] * int(np.prod(dims)))
    path.write_bytes(net.SerializeToString())
    return path
