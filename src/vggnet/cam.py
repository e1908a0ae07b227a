"""Where in the image the evidence for a class lies: Grad-CAM at any conv layer, CAM for the gap head.

Grad-CAM (Selvaraju et al., ICCV 2017): weight each channel k of a layer's activation A_k by the
spatial mean of d score_c / d A_k, sum over channels, keep the positive part. It needs only a
differentiable path from the layer to the class score, so it works for every head. CAM (Zhou et
al., CVPR 2016) is the special case of a global-average-pooled head: the class score map of the
last feature map, which `VGG.score_map` already computes for the gap head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import VGG
from .weights import Preprocessing

Target = int | Sequence[int] | torch.Tensor | None


def last_relu(model: VGG) -> str:
    """The last rectified conv output (relu5_3 for VGG16): Grad-CAM's usual layer."""
    return [n for n in model.feature_names if n.startswith("relu")][-1]


def gradcam(
    model: VGG,
    x: torch.Tensor,
    layer: str | None = None,
    target: Target = None,
    preprocessing: Preprocessing | None = None,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM of `target` (default: each image's top class) at a feature layer (default: the last ReLU).

    `x` is the network's input, or 0-1 RGB when `preprocessing` is given. Returns (N, H, W) in [0, 1],
    image-sized (the layer's own (N, h, w) with `upsample=False`). Call `model.eval()` first.
    """
    layer = layer or last_relu(model)
    return gradcams(model, x, [layer], target, preprocessing, upsample)[layer]


def gradcams(
    model: VGG,
    x: torch.Tensor,
    layers: Sequence[str],
    target: Target = None,
    preprocessing: Preprocessing | None = None,
    upsample: bool = True,
) -> dict[str, torch.Tensor]:
    """Grad-CAM at several feature layers from one forward and one backward pass; see `gradcam`."""
    x = preprocessing(x) if preprocessing is not None else x
    with _tapped(model, layers) as taps, torch.enable_grad():
        logits = model(x)  # (N, classes)
        score = logits.gather(1, _targets(target, logits)[:, None]).sum()
        grads = torch.autograd.grad(score, list(taps.values()))
    size = x.shape[-2:] if upsample else None
    return {name: _cam(a, g, size) for (name, a), g in zip(taps.items(), grads, strict=True)}


@dataclass
class ClassEvidence:
    """Each image's most probable classes, and per feature layer what it saw and where each class's evidence lies."""

    classes: torch.Tensor  # (N, k) class indices, most probable first
    probs: torch.Tensor  # (N, k) their softmax posteriors
    activations: dict[str, torch.Tensor]  # layer -> (N, C, h, w), as `features_at` gives them
    maps: dict[str, torch.Tensor]  # layer -> (N, k, H, W) Grad-CAM in [0, 1] ((N, k, h, w) without upsampling)


def top_gradcams(
    model: VGG,
    x: torch.Tensor,
    layers: Sequence[str],
    k: int = 5,
    preprocessing: Preprocessing | None = None,
    upsample: bool = True,
) -> ClassEvidence:
    """The top-k classes of each image and their Grad-CAMs at `layers`: one forward pass and k backward passes."""
    x = preprocessing(x) if preprocessing is not None else x
    with _tapped(model, layers) as taps, torch.enable_grad():
        logits = model(x)  # (N, classes)
        probs, classes = logits.detach().softmax(1).topk(min(k, logits.shape[1]))
        per_class = []
        for r in range(classes.shape[1]):
            score = logits.gather(1, classes[:, r : r + 1]).sum()
            per_class.append(torch.autograd.grad(score, list(taps.values()), retain_graph=r + 1 < classes.shape[1]))
    size = x.shape[-2:] if upsample else None
    maps = {
        name: torch.stack([_cam(a, grads[i], size) for grads in per_class], dim=1)
        for i, (name, a) in enumerate(taps.items())
    }
    return ClassEvidence(classes, probs, {name: a.detach() for name, a in taps.items()}, maps)


def class_activation_map(
    model: VGG,
    x: torch.Tensor,
    target: Target = None,
    preprocessing: Preprocessing | None = None,
    upsample: bool = True,
) -> torch.Tensor:
    """CAM of a gap-head VGG: the target class's score map over the last feature map, (N, H, W) in [0, 1]."""
    if model.cfg.head != "gap":
        raise ValueError(f"CAM needs the gap head, this VGG has the {model.cfg.head} head; use gradcam")
    if preprocessing is not None:
        x = preprocessing(x)
    with torch.no_grad():
        scores = model.score_map(x)  # (N, classes, H/32, W/32)
        classes = _targets(target, scores.mean(dim=(2, 3)))
        maps = scores[torch.arange(len(x)), classes]  # (N, h, w)
        maps = maps - maps.amin(dim=(1, 2), keepdim=True)  # class scores are signed: min-max, as Zhou et al.
    return _normalised(maps, x.shape[-2:] if upsample else None)


@contextmanager
def _tapped(model: VGG, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, the outputs of the named feature layers as the forward pass computes them."""
    wanted = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
    unknown = [n for n in wanted if n not in model.feature_names]
    if unknown or not wanted:
        raise ValueError(
            f"Grad-CAM needs feature layers; unknown: {unknown or '(none given)'}; available: {', '.join(model.feature_names)}"
        )
    taps: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[..., torch.Tensor]:
        def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
            taps[name] = output
            return output.clone()  # a following in-place ReLU must not overwrite the tapped tensor

        return hook

    index = {n: i for i, n in enumerate(model.feature_names)}
    handles = [model.features[index[n]].register_forward_hook(keep(n)) for n in wanted]
    try:
        yield taps  # filled in the order the forward pass reaches the layers
    finally:
        for h in handles:
            h.remove()


def _cam(a: torch.Tensor, grad: torch.Tensor, size: torch.Size | None) -> torch.Tensor:
    """Grad-CAM from a layer's (N, C, h, w) activation and the class score's gradient there: (N, h', w')."""
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): alpha_k^c of the paper
    return _normalised((weights * a.detach()).sum(1).clamp(min=0), size)


def _targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image: the top class, one int for all, or one per image."""
    n, classes = logits.shape
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    t = t.expand(n) if t.numel() == 1 else t
    if t.numel() != n or (t < 0).any() or (t >= classes).any():
        raise ValueError(f"target must be one class index in [0, {classes}) or one per image ({n}), got {target!r}")
    return t


def _normalised(maps: torch.Tensor, size: torch.Size | None) -> torch.Tensor:
    """(N, h, w) non-negative maps -> resized to `size` (bilinear) and divided by each map's maximum."""
    maps = maps.detach().float()
    if size is not None:
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    top = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(top > 0, maps / top.clamp(min=1e-12), torch.zeros_like(maps))
