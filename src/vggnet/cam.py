"""Where in the image the evidence for a class lies: Grad-CAM at any conv layer, CAM for the gap head.

Grad-CAM (Selvaraju et al., ICCV 2017) weights each channel k of a conv layer's rectified output A_k
by the spatial mean of d score_c / d A_k, sums over channels and keeps the positive part; it needs
only a differentiable path to the class score, so it works for every head. A conv layer is named the
paper's way (conv5_3) and its map is taken after its BN and ReLU, as the in-place blob of that name
in the original Caffe model. CAM (Zhou et al., CVPR 2016) is the gap head's own: its class score at
every cell of the last feature map, which `VGG.score_map` computes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .colormap import jet
from .model import VGG
from .weights import Preprocessing

Target = int | Sequence[int] | torch.Tensor | None
CAM_METHODS = ("dense", "gradcam", "cam")  # dense: the class score map of section 3.2 (`vggnet predict`'s default)


def conv_layers(model: VGG) -> list[str]:
    """The paper's names of the conv layers Grad-CAM accepts: conv1_1 ... conv5_3 for VGG16."""
    return [n for n in model.feature_names if n.startswith("conv")]


def check_conv_layer(model: VGG, layer: str) -> str:
    """`layer` if it names a conv layer of `model`, else a one-line error listing the accepted names."""
    convs = conv_layers(model)
    if layer not in convs:
        kind = "is not a conv layer" if layer in model.feature_names + model.classifier_names else "is no layer"
        raise ValueError(f"Grad-CAM layer {layer!r} {kind} of this VGG; accepted: {', '.join(convs)}")
    return layer


def gradcam(
    model: VGG,
    x: torch.Tensor,
    layer: str | None = None,
    target: Target = None,
    preprocessing: Preprocessing | None = None,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM of `target` (default: each image's top class) at a conv layer (default: the last one).

    `x` is the network's input, or 0-1 RGB when `preprocessing` is given. Returns (N, H, W) in [0, 1],
    image-sized (the layer's own (N, h, w) with `upsample=False`). Call `model.eval()` first.
    """
    layer = check_conv_layer(model, layer or conv_layers(model)[-1])
    if preprocessing is not None:
        x = preprocessing(x)
    model.check_input(x)
    tap = model.feature_names.index(layer.replace("conv", "relu"))  # after the conv's BN and ReLU
    with torch.enable_grad():
        h = x.detach().requires_grad_(True)  # a graph even when every weight is frozen
        for i, module in enumerate(model.features):
            h = module(h)
            if i == tap:
                a = h
                h = h.clone()  # the tapped activation stays as it is whatever follows in place
        logits = model.forward_head(h)  # (N, classes)
        classes = _targets(target, logits)
        score = logits.gather(1, classes[:, None]).sum()
        (grad,) = torch.autograd.grad(score, a)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): the paper's alpha_k^c
    maps = (weights * a.detach()).sum(dim=1).clamp(min=0)  # (N, h, w)
    return _normalised(maps, x.shape[-2:] if upsample else None)


def class_activation_map(
    model: VGG,
    x: torch.Tensor,
    target: Target = None,
    preprocessing: Preprocessing | None = None,
    upsample: bool = True,
) -> torch.Tensor:
    """CAM of a gap-head VGG: the target class's score over the last feature map, (N, H, W) in [0, 1]."""
    if model.cfg.head != "gap":
        raise ValueError(f"CAM needs the gap head; this VGG has the {model.cfg.head} head (use Grad-CAM)")
    if preprocessing is not None:
        x = preprocessing(x)
    with torch.no_grad():
        scores = model.score_map(x)  # (N, classes, H/32, W/32)
        classes = _targets(target, scores.mean(dim=(2, 3)))
        maps = scores[torch.arange(len(x)), classes]  # (N, h, w)
        maps = maps - maps.amin(dim=(1, 2), keepdim=True)  # class scores are signed: shifted to start at 0
    return _normalised(maps, x.shape[-2:] if upsample else None)


def _targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image: the top class, one index for all, or one per image."""
    n, classes = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    t = t.expand(n) if t.numel() == 1 else t
    if t.numel() != n or bool((t < 0).any()) or bool((t >= classes).any()):
        raise ValueError(f"target must be a class index in [0, {classes}) or one per image ({n}), got {target!r}")
    return t


def _normalised(maps: torch.Tensor, size: torch.Size | None) -> torch.Tensor:
    """(N, h, w) non-negative maps, resized to `size` (bilinear) and divided by each map's maximum."""
    maps = maps.detach().float()
    if size is not None:
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        maps = maps.clamp(min=0)
    top = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(top > 0, maps / top.clamp(min=1e-12), torch.zeros_like(maps))


def overlay(image: Image.Image, heat: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """An (H, W) map in [0, 1] drawn over the image in the jet colours (blue 0 -> red 1), resized to fit."""
    m = F.interpolate(heat[None, None].float(), size=image.size[::-1], mode="bilinear", align_corners=False)[0, 0]
    base = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    colour = jet(m.clamp(0, 1).numpy())  # (H, W, 3) in [0, 1]
    return Image.fromarray(np.uint8(255 * ((1 - alpha) * base + alpha * colour)))
