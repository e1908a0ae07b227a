"""Keras HDF5 weights (the published `vgg16_weights_tf_dim_ordering_tf_kernels*.h5` files and Keras 2's).

The file's own index names the layers: the root attribute `layer_names`, each group's
`weight_names`. Conv kernels are (H, W, in, out), dense kernels (in, out), and FC6's input is
pool5 flattened in (H, W, C) order; all three are turned into torch's layouts here.

HDF5 can point outside the file (external storage, virtual datasets, external links) and declare
datasets far larger than it holds: only hard-linked numeric datasets stored in the file are read,
their declared sizes summed against `limits.WEIGHTS_BYTES` before any is.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from ..limits import WEIGHTS_BYTES
from .format import existing_file
from .infer import stack_state


def read_keras_h5(path: str | os.PathLike[str]) -> list[tuple[str, list[np.ndarray]]]:
    """(layer name, [weights...]) in model order from a Keras HDF5 weights file.

    Follows the files' own index: the root attribute `layer_names` and each layer group's
    `weight_names` (`block1_conv1_W_1:0` in the published files, `block1_conv1/kernel:0` later).
    """
    import h5py

    path = existing_file(path)
    try:
        with h5py.File(path, "r") as f:
            root = _member(f, "model_weights", path) if "layer_names" not in f.attrs and "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise ValueError(f"{path}: HDF5 file without Keras `layer_names`; not a Keras weights file")
            index = []
            for name in root.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else str(name)
                group = _member(root, name, path)
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
                index.append((name, [_dataset(group, n, path) for n in names]))
            # Every array becomes float32: an int8 dataset costs 4 bytes an element, not 1.
            declared = sum(d.size * max(4, d.dtype.itemsize) for _, datasets in index for d in datasets)
            WEIGHTS_BYTES.check(declared, f"{path}: its datasets declare, as float32,")
            return [(name, [np.asarray(d) for d in datasets]) for name, datasets in index]
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:  # h5py's errors for damaged files vary
        if isinstance(e, ValueError) and str(e).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: unreadable Keras HDF5 file (truncated, damaged or not HDF5): {e}") from None


def _member(group: Any, name: str, path: os.PathLike[str]) -> Any:
    """`group[name]`, following hard links only: a soft or external link could lead to another file."""
    import h5py

    for part in name.split("/"):
        link = group.get(part, getlink=True) if part else None
        if link is None:
            raise ValueError(f"{path}: no {name!r} in the file, which its index names")
        if not isinstance(link, h5py.HardLink):
            raise ValueError(
                f"{path}: {name!r} is a {type(link).__name__} (it could lead outside the file); only hard links are read"
            )
        group = group[part]
    return group


def _dataset(group: Any, name: str, path: os.PathLike[str]) -> Any:
    """The numeric dataset `group[name]` with its data inside the file, else a one-line error."""
    import h5py

    d = _member(group, name, path)
    if not isinstance(d, h5py.Dataset):
        raise ValueError(f"{path}: {name!r} is not a dataset")
    if d.is_virtual or d.id.get_create_plist().get_external_count():
        kind = "a virtual dataset" if d.is_virtual else "stored in an external file"
        raise ValueError(f"{path}: dataset {d.name!r} is {kind}; refused: it would read data from outside this file")
    if d.shape is None or d.dtype.kind not in "fiu" or d.dtype.itemsize > 8 or d.size == 0:
        raise ValueError(f"{path}: dataset {d.name!r} holds {d.shape} {d.dtype}, not an array of numbers")
    return d


def keras_state(layers: list[tuple[str, list[np.ndarray]]], where: str) -> dict[str, torch.Tensor]:
    """Keras conv/dense weights -> torchvision names, transposing kernels and FC6's input order."""
    convs, fcs = [], []
    for name, weights in layers:
        if not weights:
            continue  # input, pooling, flatten, dropout layers
        shapes = [w.shape for w in weights]
        if len(weights) != 2 or weights[0].ndim not in (2, 4) or weights[1].ndim != 1:
            raise ValueError(f"{where}: layer {name} holds weights of shapes {shapes}; only Conv2D and Dense are read")
        kernel, bias = (torch.from_numpy(np.array(w, dtype=np.float32)) for w in weights)
        if kernel.dim() == 4:
            fed = convs[-1][0].shape[0] if convs else kernel.shape[2]
            if kernel.shape[0] != kernel.shape[1] or kernel.shape[0] not in (1, 3) or kernel.shape[2] != fed:
                raise ValueError(
                    f"{where}: layer {name} has kernel {tuple(kernel.shape)}, not (3 or 1, same, in={fed}, out): "
                    "only TensorFlow-ordered kernels (H, W, in, out) are supported"
                )
            convs.append((kernel.permute(3, 2, 0, 1).contiguous(), bias))  # (H, W, in, out) -> (out, in, H, W)
        else:
            fcs.append((kernel.t().contiguous(), bias))  # (in, out) -> (out, in)
    if convs and fcs:
        # Keras flattens pool5 as (H, W, C); torch as (C, H, W): reorder FC6's input columns.
        w6, b6 = fcs[0]
        c = convs[-1][0].shape[0]
        g = math.isqrt(w6.shape[1] // c)
        if g * g * c != w6.shape[1]:
            raise ValueError(
                f"{where}: the first Dense layer takes {w6.shape[1]} inputs, not a square grid of {c} channels"
            )
        w6 = w6.reshape(-1, g, g, c).permute(0, 3, 1, 2).reshape(w6.shape[0], -1).contiguous()
        fcs[0] = (w6, b6)
    return stack_state(convs, fcs, where)
