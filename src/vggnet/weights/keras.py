"""Keras HDF5 weights (the published `vgg16_weights_tf_dim_ordering_tf_kernels*.h5` files and Keras 2's).

The file's own index names the layers: the root attribute `layer_names`, each group's
`weight_names`. Conv kernels are (H, W, in, out), dense kernels (in, out), and FC6's input is
pool5 flattened in (H, W, C) order; all three are turned into torch's layouts here.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

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
            root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise ValueError(f"{path}: HDF5 file without Keras `layer_names`; not a Keras weights file")
            layers = []
            for name in root.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else str(name)
                group = root[name]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
                layers.append((name, [np.asarray(group[n]) for n in names]))
            return layers
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:  # h5py's errors for damaged files vary
        if isinstance(e, ValueError) and str(e).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: unreadable Keras HDF5 file (truncated, damaged or not HDF5): {e}") from None


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
