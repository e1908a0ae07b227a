"""The network of a run and where its first weights come from (section 3.1).

The paper trains net A from random weights and starts the deeper nets from it: their first four
conv layers and three FC layers are copied from A, the rest is drawn at random. A run of the same
configuration (a new scale S) starts from all of another run's weights.
"""

from __future__ import annotations

import math
import os

from ..configs import ModelConfig, TrainConfig
from ..model import VGG
from ..runs import weights_file
from ..weights import load_weights

# Section 3.1: deeper nets start from net A's first four conv layers and its three FC layers.
NET_A_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")


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


def init_from(model: VGG, source: str | os.PathLike[str], verify: bool = True) -> list[str]:
    """Copy weights from a run (its model.safetensors) or a weights file; returns the copied state keys.

    Same configuration: every tensor (e.g. S=384 from S=256, jittered S from S=384). Net A (or A-LRN)
    into a deeper net: conv1_1, conv2_1, conv3_1, conv3_2, fc6, fc7, fc8 (and their BN), the rest stays random.
    """
    path = weights_file(source)
    src, _ = load_weights(path, verify=verify)
    same = (src.cfg.arch, src.cfg.batch_norm) == (model.cfg.arch, model.cfg.batch_norm)
    if not same and src.cfg.arch not in ("A", "A-LRN"):
        raise ValueError(
            f"{path}: --init-from copies net A into a deeper net or a net of the same configuration; "
            f"got {src.cfg.arch} -> {model.cfg.arch}"
        )
    own, theirs = model.state_dict(), src.state_dict()
    if same:
        keys = list(own)
    else:
        src_names, dst_names = paper_names(src), paper_names(model)
        layers = [n for n in NET_A_LAYERS if n in src_names and n in dst_names]
        layers += [n.replace("conv", "bn") for n in layers if n.replace("conv", "bn") in dst_names]
        prefixes = {dst_names[n] + ".": src_names[n] + "." for n in layers if n in src_names}
        keys = [k for k in own if any(k.startswith(p) for p in prefixes)]
        theirs = {
            k: theirs[prefixes[p] + k[len(p) :]] for k in keys for p in prefixes if k.startswith(p)
        }  # target key -> source tensor
    state = dict(own)
    for k in keys:
        if k not in theirs or theirs[k].numel() != own[k].numel():
            shape = tuple(theirs[k].shape) if k in theirs else "nothing"
            raise ValueError(f"{path}: cannot copy {k}: source has {shape}, the model needs {tuple(own[k].shape)}")
        state[k] = theirs[k].reshape(own[k].shape)  # fc <-> conv heads hold the same numbers
    model.load_state_dict(state)
    return keys
