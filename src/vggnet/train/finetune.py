"""Fine-tuning pretrained weights: which layers stay fixed, which learn at which rate, and the weights' own input.

`--freeze` names layers the paper's way (`features`, `conv1_1-conv4_3`, `fc6,fc7`); a frozen layer's
parameters get no gradient and its BatchNorm stays in eval mode, so its running statistics never move.
The new layers (those `--init-from` did not copy) learn at `--lr`, the copied ones at `--lr` times
`--backbone-lr-scale`. Pretrained weights expect their own input (channel order, 0-1 or 0-255, mean and
std: `Preprocessing`); `to_network_input` turns the paper's mean-subtracted 0-255 RGB crops into it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..model import VGG
from ..weights import Preprocessing


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm that stays in eval mode whatever `train()` says: its running statistics never change.

    Same tensors and state-dict keys as `nn.BatchNorm2d`, so checkpoints and weights files do not notice.
    """

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)

    @classmethod
    def of(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen copy of `bn` (same tensors, no gradients)."""
        frozen = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        frozen.load_state_dict(bn.state_dict())
        return frozen.to(bn.weight.device).requires_grad_(False).eval()


def weight_layers(model: VGG) -> list[str]:
    """The paper's names of the layers with weights, input to output: conv1_1 ... conv5_3, fc6, fc7, fc8 (or fc)."""
    convs = [n for n in model.feature_names if n.startswith("conv")]
    return convs + [n for n in model.classifier_names if n.startswith("fc")]


def parse_freeze(model: VGG, spec: str) -> list[str]:
    """The weight layers a `--freeze` spec names: none | features | classifier | NAME | FIRST-LAST, comma-separated.

    A one-line error for an unknown layer, a backward range, or a spec that leaves nothing to train.
    """
    names = weight_layers(model)
    convs = [n for n in names if n.startswith("conv")]
    accepted = f"none, features, classifier, a layer ({names[0]} ... {names[-1]}) or a range such as conv1_1-conv4_3"
    chosen: set[str] = set()
    for token in (t.strip() for t in spec.split(",")):
        if token in ("", "none"):
            continue
        if token == "features":
            chosen.update(convs)
        elif token == "classifier":
            chosen.update(n for n in names if n not in convs)
        elif "-" in token:
            first, _, last = token.partition("-")
            if first not in names or last not in names:
                bad = first if first not in names else last
                raise ValueError(f"--freeze {spec!r}: no layer {bad!r} in this VGG; accepted: {accepted}")
            i, j = names.index(first), names.index(last)
            if i > j:
                raise ValueError(f"--freeze {spec!r}: {token} runs backwards; write the layer nearer the input first")
            chosen.update(names[i : j + 1])
        elif token in names:
            chosen.add(token)
        else:
            raise ValueError(f"--freeze {spec!r}: no layer {token!r} in this VGG; accepted: {accepted}")
    if chosen == set(names):
        raise ValueError(f"--freeze {spec!r} leaves nothing to train; leave at least the last layer ({names[-1]}) out")
    return [n for n in names if n in chosen]


def freeze(model: VGG, spec: str) -> list[str]:
    """Fix the layers `spec` names (and the BatchNorm after each frozen conv); returns the frozen layer names."""
    layers = parse_freeze(model, spec)
    index = {n: i for i, n in enumerate(model.feature_names)}
    for name in layers:
        if name in index:
            model.features[index[name]].requires_grad_(False)
            bn = index.get(name.replace("conv", "bn"))
            if bn is not None:
                model.features[bn] = FrozenBatchNorm2d.of(model.features[bn])
        else:
            model.classifier[model.classifier_names.index(name)].requires_grad_(False)
    return layers


def param_groups(model: nn.Module, new: Iterable[str] | None, backbone_scale: float = 1.0) -> list[dict[str, Any]]:
    """SGD parameter groups of the trainable parameters: the new layers at lr x 1, the copied ones at lr x `backbone_scale`.

    `new`: state-dict keys of the layers not copied from pretrained weights (None: every layer is new).
    Each group carries "lr_scale", which the plateau schedule multiplies its LR by.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if new is None:
        return [{"params": [p for _, p in trainable], "lr_scale": 1.0, "name": "all"}]
    new = set(new)
    groups = [
        {"params": [p for n, p in trainable if n in new], "lr_scale": 1.0, "name": "new"},
        {"params": [p for n, p in trainable if n not in new], "lr_scale": float(backbone_scale), "name": "pretrained"},
    ]
    return [g for g in groups if g["params"]]


# -- the weights' own input ------------------------------------------------------------------------------


def rgb255_mean(pre: Preprocessing) -> list[float]:
    """The weights' mean as 0-255 RGB pixel values: what the paper's transforms subtract."""
    mean = list(pre.mean)[::-1] if pre.color == "BGR" else list(pre.mean)
    return [v * (255.0 / pre.scale) for v in mean]  # 255/255 = 1 exactly: the paper's own means pass unchanged


@dataclass
class InputAdapter:
    """On 0-255 RGB minus `rgb255_mean(pre)`: reorder the channels and scale each to the weights' input.

    Works on one image (3, H, W) and on a batch (N, 3, H, W) alike (the batched input path's crops).
    """

    bgr: bool
    factor: tuple[float, float, float]  # per channel, in the network's order: pre.scale / 255 / pre.std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(-3)
        return x * torch.tensor(self.factor, dtype=x.dtype, device=x.device).view(3, 1, 1)


def input_adapter(pre: Preprocessing) -> InputAdapter | None:
    """What `pre` needs beyond the mean; None for the paper's 0-255 RGB with std 1."""
    factor = tuple(pre.scale / 255.0 / s for s in pre.std)
    if pre.color == "RGB" and all(f == 1.0 for f in factor):
        return None
    return InputAdapter(pre.color == "BGR", factor)  # type: ignore[arg-type]


@dataclass
class NetworkInput:
    """A per-image transform followed by an InputAdapter."""

    transform: Callable[..., torch.Tensor]
    adapt: InputAdapter

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        return self.adapt(self.transform(image, rng))


def to_network_input(transform: Callable[..., torch.Tensor], pre: Preprocessing) -> Callable[..., torch.Tensor]:
    """`transform` followed by what `pre` needs beyond the mean; unchanged for the paper's 0-255 RGB, std 1."""
    adapt = input_adapter(pre)
    return transform if adapt is None else NetworkInput(transform, adapt)


# -- data checks and provenance ---------------------------------------------------------------------------


def check_class_sizes(dataset: torch.utils.data.Dataset, where: str, least: int = 2) -> None:
    """Raise a one-line error naming the first class with fewer than `least` images (when labels are known)."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return
    counts = np.bincount([y for _, y in samples], minlength=len(dataset.classes))
    for name, n in zip(dataset.classes, counts.tolist(), strict=True):
        if n < least:
            root = getattr(dataset, "root", where)
            raise ValueError(
                f"{Path(root) / name}: class folder holds {n} image{'s' if n != 1 else ''}; "
                f"training needs at least {least} images per class"
            )
