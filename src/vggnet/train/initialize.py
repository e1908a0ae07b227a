"""The network of a run and where its first weights come from (section 3.1, and fine-tuning).

The paper trains net A from random weights and starts the deeper nets from it: their first four
conv layers and three FC layers are copied from A, the rest is drawn at random. A run of the same
configuration (a new scale S, or pretrained weights from any source `load_weights` reads) starts
from all of the other's conv layers and whatever of its classifier fits: FC6/FC7 when both heads
have them, FC8 when the classes are the same. Layers not copied (a new FC8 for the data's classes,
a new gap head, a fresh FC stack on features-only weights) keep their random init.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..configs import ModelConfig, TrainConfig, resolve
from ..model import VGG
from ..weights import WeightsMeta, file_sha256, has_classifier, load_weights, resolve_weights

# Section 3.1: deeper nets start from net A's first four conv layers and its three FC layers.
NET_A_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")
NET_A = ("A", "A-LRN")


def build_model(cfg: TrainConfig, num_classes: int) -> VGG:
    """The VGG of a training config; the paper init's std is divided by sqrt(width) for narrow nets."""
    return VGG(
        ModelConfig(
            arch=cfg.arch,
            num_classes=num_classes,
            head=cfg.head,
            width=cfg.width,
            dropout=cfg.dropout,
            input_size=cfg.crop,
            init=cfg.init,
            init_std=cfg.init_std / math.sqrt(cfg.width),  # fan-in shrinks with width; keep each layer's gain
        )
    )


def paper_names(model: VGG) -> dict[str, str]:
    """Paper layer name -> state-dict prefix, e.g. conv2_1 -> features.3 in net A, features.5 in net D."""
    names = {n: f"features.{i}" for i, n in enumerate(model.feature_names)}
    names.update({n: f"classifier.{i}" for i, n in enumerate(model.classifier_names)})
    return names


@dataclass
class Pretrained:
    """Weights a run starts from: the model, its metadata and its file."""

    model: VGG
    meta: WeightsMeta
    path: Path

    @property
    def arch(self) -> str:
        """The configuration as `--arch` spells it: "D", "D_bn"."""
        return self.model.cfg.arch + ("_bn" if self.model.cfg.batch_norm else "")


def open_pretrained(source: str | os.PathLike[str], verify: bool = True) -> Pretrained:
    """A run folder's best weights, any weights file (project format, torchvision, timm, Keras, Caffe), a catalogue
    name or a URL; `verify`: check the content hashes the file records."""
    path = resolve_weights(source)
    model, meta = load_weights(path, verify=verify)
    return Pretrained(model, meta, path)


def start_config(cfg: TrainConfig, start: Pretrained) -> TrainConfig:
    """`cfg` with the weights' own configuration and width, or a one-line error when they cannot seed it.

    `--arch` left at its default takes the weights' configuration; net A (or A-LRN) may seed a deeper
    `--arch` (section 3.1); any other pair is refused, as is a `--width` other than the weights'.
    """
    src = start.model
    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "arch")
    letter, bn = resolve(cfg.arch)
    same = (letter, bn) == (src.cfg.arch, src.cfg.batch_norm)
    if not same and cfg.arch == default:
        cfg, same = dataclasses.replace(cfg, arch=start.arch), True
    if not same and src.cfg.arch not in NET_A:
        raise ValueError(
            f"{start.path}: --init-from copies net A into a deeper net or a net of the same configuration; "
            f"got {start.arch} -> {cfg.arch} (leave --arch out to fine-tune {start.arch})"
        )
    if cfg.width != src.cfg.width:
        if cfg.width != 1.0:
            raise ValueError(f"{start.path}: --width {cfg.width:g} differs from the weights' width {src.cfg.width:g}")
        cfg = dataclasses.replace(cfg, width=src.cfg.width)
    with_fc = has_classifier(src) and "gap" not in (src.cfg.head, cfg.head)
    if with_fc and src.grid != cfg.crop // 32:
        raise ValueError(
            f"{start.path}: FC6 of these weights reads a {src.grid}x{src.grid} grid of features (input "
            f"{32 * src.grid} px) but --crop {cfg.crop} gives {cfg.crop // 32}x{cfg.crop // 32}; train with "
            f"--crop {32 * src.grid}, or replace the FC layers with --head gap"
        )
    return cfg


def copy_pretrained(
    model: VGG, src: VGG, where: str, classes: list[str] | None = None, src_classes: list[str] | None = None
) -> list[str]:
    """Copy what fits of `src` into `model` (see the module's docstring); returns the copied state keys.

    FC8 is copied only for the same number of classes and, when both lists are known, the same class names.
    """
    same = (src.cfg.arch, src.cfg.batch_norm) == (model.cfg.arch, model.cfg.batch_norm)
    if not same and src.cfg.arch not in NET_A:
        raise ValueError(
            f"{where}: --init-from copies net A into a deeper net or a net of the same configuration; "
            f"got {src.cfg.arch} -> {model.cfg.arch}"
        )
    src_names, dst_names = paper_names(src), paper_names(model)
    convs = [n for n in model.feature_names if n.startswith("conv")] if same else list(NET_A_LAYERS[:4])
    layers = convs + [n.replace("conv", "bn") for n in convs if n.replace("conv", "bn") in dst_names]
    if has_classifier(src) and (src.cfg.head == "gap") == (model.cfg.head == "gap"):
        last = model.classifier_names[-1]
        same_classes = src.cfg.num_classes == model.cfg.num_classes and (
            classes is None or src_classes is None or list(classes) == list(src_classes)
        )
        layers += [n for n in model.classifier_names if n.startswith("fc") and (n != last or same_classes)]
    prefixes = {dst_names[n] + ".": src_names[n] + "." for n in layers if n in src_names}
    own, theirs = model.state_dict(), src.state_dict()
    keys = [k for k in own if any(k.startswith(p) for p in prefixes)]
    mapped = {k: prefixes[p] + k[len(p) :] for k in keys for p in prefixes if k.startswith(p)}  # target -> source key
    state = dict(own)
    for k in keys:
        value = theirs.get(mapped[k])
        if value is None or value.numel() != own[k].numel():
            shape = tuple(value.shape) if value is not None else "nothing"
            raise ValueError(f"{where}: cannot copy {k}: source has {shape}, the model needs {tuple(own[k].shape)}")
        state[k] = value.reshape(own[k].shape).to(own[k].dtype)  # fc <-> conv heads hold the same numbers
    model.load_state_dict(state)
    return keys


def init_from(model: VGG, source: str | os.PathLike[str], verify: bool = True) -> list[str]:
    """Copy weights from a run (its model.safetensors) or any weights file; returns the copied state keys.

    Same configuration: every conv layer and the classifier layers that fit (fine-tuning, a new scale S).
    Net A (or A-LRN) into a deeper net: conv1_1, conv2_1, conv3_1, conv3_2, fc6, fc7, fc8 (and their BN).
    """
    start = open_pretrained(source, verify)
    return copy_pretrained(model, start.model, str(start.path))


def describe_start(start: Pretrained, model: VGG, copied: list[str]) -> dict[str, Any]:
    """Where a run's first weights came from, recorded in the run and beside its saved weights."""
    names = paper_names(model)
    weighted = [n for n in names if n.startswith(("conv", "fc"))]
    is_new = {n: not any(k.startswith(names[n] + ".") for k in copied) for n in weighted}
    return {
        "path": str(start.path.resolve()),
        "source": start.meta.source,
        "sha256": file_sha256(start.path),
        "arch": start.model.cfg.display_name(with_width=True),
        "num_classes": start.model.cfg.num_classes if has_classifier(start.model) else 0,
        "new_layers": [n for n in weighted if is_new[n]],
    }
