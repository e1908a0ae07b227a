"""VGG as a feature extractor: named taps (relu1_2 ...) and the perceptual / style loss.

Layer names are the paper's, for every configuration: conv{b}_{i}, bn{b}_{i} (BN variants),
relu{b}_{i}, norm1 (A-LRN), pool{b}; then fc6, relu6, drop6, fc7, relu7, drop7, fc8 (fc and
conv heads) or fc (gap head). The usual perceptual-loss taps of VGG16 are relu1_2, relu2_2,
relu3_3 and relu4_3 (torchvision's features.3/8/15/22).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .analysis import activation_bytes
from .data import open_rescalable
from .limits import ACTIVATION_BYTES
from .model import VGG
from .weights import Preprocessing, has_classifier, load_weights

LayerWeights = Sequence[str] | Mapping[str, float]


def layer_names(model: VGG) -> list[str]:
    """Every name `features_at` accepts for this model, in the order they are computed."""
    names = list(model.feature_names)
    if has_classifier(model):
        names += model.classifier_names
    return names


def block_outputs(model: VGG) -> list[str]:
    """The last ReLU of each block (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 for VGG16)."""
    last: dict[str, str] = {}
    for name in model.feature_names:
        if name.startswith("relu"):
            last[name.split("_")[0]] = name
    return list(last.values())


def _check_layers(names: list[str], layers: Sequence[str], what: str) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    wanted = list(dict.fromkeys(layers))
    unknown = [n for n in wanted if n not in names]
    if unknown or not wanted:
        raise ValueError(f"unknown layer(s) {unknown or '(none given)'} for {what}; available: {', '.join(names)}")
    return wanted


def _tap(
    steps: Sequence[tuple[str, nn.Module]],
    x: torch.Tensor,
    wanted: set[str],
    out: dict[str, torch.Tensor],
    run_all: bool = False,
) -> torch.Tensor:
    """Run `steps` in order, storing the outputs named in `wanted`; stops after the last one wanted.

    The model's ReLUs work in place: an output the next module would overwrite is cloned, so a
    conv tap holds the pre-activation values.
    """
    last = len(steps) - 1 if run_all else max((i for i, (n, _) in enumerate(steps) if n in wanted), default=-1)
    for i, (name, module) in enumerate(steps[: last + 1]):
        x = module(x)
        if name in wanted:
            following = steps[i + 1][1] if i < last else None
            overwrites = isinstance(following, nn.ReLU) and following.inplace
            out[name] = x.clone() if overwrites else x
    return x


def features_at(
    model: VGG, x: torch.Tensor, layers: Sequence[str], preprocessing: Preprocessing | None = None
) -> dict[str, torch.Tensor]:
    """Activations of `layers` (paper names) for a batch, running the network only as deep as needed.

    `x` is the network's input, or 0-1 RGB when `preprocessing` (e.g. the weights' own) is given.
    The model's train/eval mode is left as it is: call `model.eval()` for inference.
    """
    names = layer_names(model)
    wanted = _check_layers(names, layers, f"VGG {model.cfg.display_name()}")
    if x.dim() != 4 or x.shape[1] != model.cfg.in_channels:
        raise ValueError(f"expected a (N, {model.cfg.in_channels}, H, W) batch, got shape {tuple(x.shape)}")
    if preprocessing is not None:
        x = preprocessing(x)
    out: dict[str, torch.Tensor] = {}
    head_taps = any(n not in model.feature_names for n in wanted)
    x = _tap(list(zip(model.feature_names, model.features, strict=True)), x, set(wanted), out, run_all=head_taps)
    if head_taps:
        if model.cfg.head != "conv":
            x = torch.flatten(model.avgpool(x), 1)  # (N, C*g*g) for fc, (N, C) for gap
        _tap(list(zip(model.classifier_names, model.classifier, strict=True)), x, set(wanted), out)
    return {n: out[n] for n in wanted}


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix of feature maps (N, C, H, W) -> (N, C, C), divided by C*H*W (Gatys et al.)."""
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def _weighted(layers: LayerWeights | None, default: list[str]) -> dict[str, float]:
    if layers is None:
        return dict.fromkeys(default, 1.0)
    if isinstance(layers, str):
        return {layers: 1.0}
    if isinstance(layers, Mapping):
        return {k: float(v) for k, v in layers.items()}
    return dict.fromkeys(layers, 1.0)


class PerceptualLoss(nn.Module):
    """Content (feature L2) and style (Gram matrix L2) terms from a frozen VGG.

    Inputs and targets are 0-1 RGB batches; the weights' own preprocessing is applied. Layers
    are lists of names or {name: weight} maps; defaults: content on the last ReLU of block 2,
    style on the last ReLU of blocks 1-4 (relu2_2; relu1_2, relu2_2, relu3_3, relu4_3 for VGG16).
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | VGG,
        content_layers: LayerWeights | None = None,
        style_layers: LayerWeights | None = None,
        content_weight: float = 1.0,
        style_weight: float = 1.0,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        super().__init__()
        if isinstance(weights, VGG):
            model, default_pre = weights, Preprocessing()
        else:
            model, meta = load_weights(weights)
            default_pre = meta.preprocessing
        self.preprocessing = preprocessing or default_pre
        blocks = block_outputs(model)
        self.content_layers = _weighted(content_layers, blocks[1:2])
        self.style_layers = _weighted(style_layers, blocks[:4])
        self.content_weight, self.style_weight = float(content_weight), float(style_weight)
        wanted = _check_layers(model.feature_names, [*self.content_layers, *self.style_layers], "a perceptual loss")
        depth = max(model.feature_names.index(n) for n in wanted) + 1
        # Only the convolutional part up to the deepest tap, copied so the caller's model stays trainable.
        self.names = model.feature_names[:depth]
        self.features = copy.deepcopy(nn.Sequential(*list(model.features)[:depth]))
        self.features.requires_grad_(False).eval()
        self.targets: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The network stays in eval mode (BN statistics frozen) whatever the mode of the loss."""
        super().train(mode)
        self.features.eval()
        return self

    def _features(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        _tap(list(zip(self.names, self.features, strict=True)), self.preprocessing(x), set(layers), out)
        return out

    def set_targets(self, content: torch.Tensor | None = None, style: torch.Tensor | None = None) -> None:
        """Compute and keep the target features once (style transfer reuses them every step).

        Targets stay on the device they were computed on: move the loss first, then set them.
        """
        with torch.no_grad():
            if content is not None:
                self.targets |= {
                    f"content:{k}": v for k, v in self._features(content, list(self.content_layers)).items()
                }
            if style is not None:
                grams = {f"style:{k}": gram(v) for k, v in self._features(style, list(self.style_layers)).items()}
                self.targets |= grams

    def terms(
        self, x: torch.Tensor, content: torch.Tensor | None = None, style: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The weighted content and style terms for input `x` (0-1 RGB), targets given or set before."""
        if content is not None or style is not None:
            self.set_targets(content, style)
        use_content = self.content_weight != 0 and bool(self.content_layers)
        use_style = self.style_weight != 0 and bool(self.style_layers)
        for kind, used, layers in (
            ("content", use_content, self.content_layers),
            ("style", use_style, self.style_layers),
        ):
            if used and any(f"{kind}:{k}" not in self.targets for k in layers):
                raise ValueError(f"no {kind} target: pass {kind}=... or call set_targets({kind}=...) first")
        feats = self._features(x, [*self.content_layers, *self.style_layers])
        zero = x.new_zeros(())
        c_loss, s_loss = zero, zero
        if use_content:
            c_loss = sum(
                (w * (feats[k] - self.targets[f"content:{k}"]).pow(2).mean() for k, w in self.content_layers.items()),
                zero,
            )
        if use_style:
            s_loss = sum(
                (w * (gram(feats[k]) - self.targets[f"style:{k}"]).pow(2).mean() for k, w in self.style_layers.items()),
                zero,
            )
        return {"content": self.content_weight * c_loss, "style": self.style_weight * s_loss}

    def forward(
        self, x: torch.Tensor, content: torch.Tensor | None = None, style: torch.Tensor | None = None
    ) -> torch.Tensor:
        """content_weight * sum_l w_l |F_l(x) - F_l(content)|^2 + style_weight * sum_l w_l |G_l(x) - G_l(style)|^2 (means)."""
        t = self.terms(x, content, style)
        return t["content"] + t["style"]


# -- extracting features from image files ------------------------------------------------------


@dataclass
class ExtractedFeatures:
    """Features of a set of images: one array (N, ...) per layer, the images kept and skipped."""

    features: dict[str, np.ndarray]
    paths: list[str]
    skipped: list[str] = field(default_factory=list)


def load_images(
    paths: Sequence[str | os.PathLike[str]], size: int | None = 224
) -> tuple[torch.Tensor, list[str], list[str]]:
    """Read images as a 0-1 RGB batch: shorter side resized to `size`, centre crop size x size.

    `size=None` keeps each image as it is (all must then share one size). Unreadable files are
    skipped after a line on stderr naming them.
    """
    import torchvision.transforms.functional as TF

    tensors, kept, skipped = [], [], []
    for p in paths:
        im = open_rescalable(p, [size] if size is not None else [])
        if im is None:
            skipped.append(str(p))
            continue
        if size is not None:
            im = TF.center_crop(TF.resize(im, size), [size, size])
        tensors.append(TF.to_tensor(im))
        kept.append(str(p))
    if not tensors:
        raise ValueError(f"no readable image among {len(paths)} file(s)")
    sizes = {tuple(t.shape[-2:]) for t in tensors}
    if len(sizes) > 1:
        raise ValueError(f"images differ in size ({sorted(sizes)}); give a size to resize them to")
    return torch.stack(tensors), kept, skipped


def _check_activations(model: VGG, shape: torch.Size, where: str) -> None:
    """A one-line ValueError when a batch of `shape` (N, C, H, W) would pass the activation budget (images kept
    at their own size: a large one feeds the network as many pixels)."""
    n, _, h, w = shape
    if min(h, w) < 32:  # smaller than any head takes: a few pixels, nothing to bound
        return
    with torch.device("meta"):  # shapes only; a gap head accepts any size
        shapes = VGG(dataclasses.replace(model.cfg, head="gap"))
    ACTIVATION_BYTES.check(
        n * activation_bytes(shapes, h, w),
        f"{where}: {n} image(s) of {w}x{h} in a batch (resize them with --size): their activations need",
    )


def extract_features(
    paths: Sequence[str | os.PathLike[str]],
    weights: str | os.PathLike[str],
    layers: Sequence[str],
    *,
    size: int | None = 224,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = True,
    verify: bool = True,
) -> ExtractedFeatures:
    """Features at `layers` of every image, with the preprocessing recorded in the weights (hashes checked with `verify`)."""
    from tqdm import tqdm

    model, meta = load_weights(weights, device=device, verify=verify)
    _check_layers(layer_names(model), layers, str(weights))
    chunks: dict[str, list[np.ndarray]] = {}
    kept_all, skipped_all = [], []
    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, desc="features", unit="batch", disable=not progress or len(starts) < 2):
        try:
            batch, kept, skipped = load_images(paths[start : start + batch_size], size)
        except ValueError as e:
            if not str(e).startswith("no readable image"):
                raise
            skipped_all += [str(p) for p in paths[start : start + batch_size]]
            continue
        kept_all += kept
        skipped_all += skipped
        _check_activations(model, batch.shape, kept[0])
        with torch.inference_mode():
            out = features_at(model, batch.to(device), layers, preprocessing=meta.preprocessing)
        for name, value in out.items():
            chunks.setdefault(name, []).append(value.float().cpu().numpy())
    if not kept_all:
        raise ValueError(f"no readable image among {len(paths)} file(s)")
    if any(len({a.shape[1:] for a in v}) > 1 for v in chunks.values()):
        raise ValueError("images differ in size; give a size to resize them to")
    return ExtractedFeatures({k: np.concatenate(v) for k, v in chunks.items()}, kept_all, skipped_all)
