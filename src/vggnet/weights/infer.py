"""Which VGG a set of tensors holds: Table 1 column, batch norm, width, head and classes, from shapes alone.

Keras and Caffe files hold an ordered list of layers: `stack_state` names them the torchvision way
(`features.N`, `classifier.0/3/6`) for the Table 1 column their kernel sizes fit. `infer_config`
reads the configuration of any torchvision-named state dict, so no file has to say what it holds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..configs import CONFIGS, ModelConfig, kernel_size
from ..model import VGG, make_features


def _kernels(letter: str) -> tuple[int, ...]:
    """Kernel size of every conv of a Table 1 column (3, or 1 for C's 1x1 convs)."""
    return tuple(kernel_size(v) for v in CONFIGS[letter] if v not in ("M", "LRN"))


def _conv_keys(letter: str, batch_norm: bool) -> list[str]:
    """torchvision module names (features.N) of the convs of a Table 1 column."""
    with torch.device("meta"):
        features, _ = make_features(letter, batch_norm, 1 / 64, 3)
    return [f"features.{i}" for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]


def stack_state(
    convs: list[tuple[torch.Tensor, torch.Tensor]],
    fcs: list[tuple[torch.Tensor, torch.Tensor]],
    where: str,
    lrn: bool = False,
) -> dict[str, torch.Tensor]:
    """Name an ordered list of conv and FC (weight, bias) pairs the torchvision way."""
    kernels = tuple(w.shape[-1] for w, _ in convs)
    letters = [letter for letter in CONFIGS if _kernels(letter) == kernels]
    if not letters:
        raise ValueError(
            f"{where}: {len(convs)} convolutions (kernel sizes {list(kernels)}) match no Table 1 configuration"
        )
    letter = "A-LRN" if lrn and "A-LRN" in letters else letters[0]
    state = {}
    for key, (w, b) in zip(_conv_keys(letter, False), convs, strict=True):
        state[f"{key}.weight"], state[f"{key}.bias"] = w, b
    if fcs and len(fcs) != 3:
        raise ValueError(f"{where}: {len(fcs)} fully connected layers; a VGG has three (fc6, fc7, fc8) or none")
    for index, (w, b) in zip((0, 3, 6)[: len(fcs)], fcs, strict=True):
        state[f"classifier.{index}.weight"], state[f"classifier.{index}.bias"] = w, b
    return state


def infer_config(state: dict[str, torch.Tensor], where: str = "weights") -> tuple[ModelConfig, bool]:
    """(ModelConfig, include_top) of a torchvision-named state dict, read from its shapes alone.

    The column of Table 1 comes from the conv kernel sizes and positions, BN from running
    statistics, the width from the channel counts, the head and classes from the classifier.
    """
    convs = sorted(
        int(k.split(".")[1])
        for k, v in state.items()
        if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4
    )
    if not convs:
        raise ValueError(f"{where}: no convolution weights named features.N.weight; not a VGG state dict")
    bn = f"features.{convs[0] + 1}.running_mean" in state
    kernels = tuple(state[f"features.{i}.weight"].shape[-1] for i in convs)
    positions = [f"features.{i}" for i in convs]
    letter = next((L for L in CONFIGS if _kernels(L) == kernels and _conv_keys(L, bn) == positions), None)
    if letter is None:
        raise ValueError(
            f"{where}: {len(convs)} convolutions at features.{convs} (kernel sizes {list(kernels)}, "
            f"batch norm {bn}) match no Table 1 configuration"
        )
    first, last = state[f"features.{convs[0]}.weight"], state[f"features.{convs[-1]}.weight"]
    c = last.shape[0]
    include_top = any(k.startswith("classifier.") for k in state)
    head, classes, grid = "fc", 1000, 7
    if include_top:
        w0 = state.get("classifier.0.weight")
        last_fc = state.get("classifier.6.weight", w0)
        if w0 is None or last_fc is None:
            raise ValueError(f"{where}: classifier tensors without classifier.0.weight; not a VGG classifier")
        classes = last_fc.shape[0]
        if w0.dim() == 4 and "classifier.6.weight" not in state:
            raise ValueError(f"{where}: FC6/FC7 without FC8 (a timm model made with num_classes=0?); not supported")
        if w0.dim() == 4:
            head, grid = "conv", w0.shape[-1]
        elif "classifier.6.weight" in state:
            grid = max(1, math.isqrt(w0.shape[1] // c))
        else:
            head = "gap"
    found = _shapes(state)
    for width in (c / 512, first.shape[0] / 64):  # equal unless rounding made the widths uneven
        cfg = ModelConfig(letter, classes, bn, head, width, in_channels=first.shape[1], input_size=32 * grid)
        with torch.device("meta"):
            model = VGG(cfg)
        if _shapes({k: v for k, v in model.state_dict().items() if include_top or k.startswith("features.")}) == found:
            break
    return cfg, include_top  # on no match, loading names the first layer that does not fit


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
