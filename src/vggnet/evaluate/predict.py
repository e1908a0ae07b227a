"""Predicting single images: the top classes (ensemble posteriors averaged) and the dense score map as a heat map."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..configs import EvalConfig
from ..data import open_rescalable, rescale, to_uint8_tensor
from ..devices import pick_device
from ..io import atomic_write
from ..weights import WeightsMeta
from .networks import Network, ensemble_posteriors, load_networks, read_networks


def imagenet_classes() -> list[str]:
    """ImageNet's 1000 class names in index order (shipped with the package)."""
    text = resources.files("vggnet").joinpath("resources/imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


def class_names_of(meta: WeightsMeta) -> list[str]:
    """The weights' own class names; ImageNet's for 1000 classes; else "class 0", "class 1", ..."""
    if meta.class_names:
        return list(meta.class_names)
    if meta.model.num_classes == 1000:
        return imagenet_classes()
    return [f"class {i}" for i in range(meta.model.num_classes)]


@dataclass
class Prediction:
    """The top classes of one image, best first, and the heat map written for it (if any)."""

    path: str
    top: list[tuple[str, float]]  # (label, posterior)
    heatmap: str | None = None


def class_map(net: Network, img: Image.Image, index: int, q: int) -> torch.Tensor:
    """(h, w) posterior of class `index` at each position of the dense score map at scale Q."""
    x = net.meta.preprocessing(to_uint8_tensor(rescale(img, q))[None].float() / 255.0)
    scores = net.model.score_map(x.to(next(net.model.parameters()).device))  # (1, classes, h, w)
    return scores.float().softmax(dim=1)[0, index].cpu()


def heatmap_overlay(img: Image.Image, heat: torch.Tensor, q: int, window: int, alpha: float = 0.5) -> Image.Image:
    """Overlay an (h, w) map on the image: cell (i, j) sits at the centre of its window (32 px stride at Q).

    The map is stretched to its own range (min -> blue, max -> red).
    """
    from ..colormap import jet

    scaled = rescale(img, q)
    wq, hq = scaled.size
    h, w = heat.shape
    span_h, span_w = 32 * (h - 1) + 1, 32 * (w - 1) + 1
    m = F.interpolate(heat[None, None].float(), size=(span_h, span_w), mode="bilinear", align_corners=True)
    top = left = window // 2
    pad = (left, max(0, wq - left - span_w), top, max(0, hq - top - span_h))
    m = F.pad(m, pad, mode="replicate")[0, 0, :hq, :wq]
    m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)
    colour = jet(m.numpy())  # (hq, wq, 3) in [0, 1]
    base = np.asarray(scaled, dtype=np.float64) / 255.0
    blended = Image.fromarray(np.uint8(255 * ((1 - alpha) * base + alpha * colour)))
    return blended.resize(img.size, Image.BILINEAR)


def _heatmap_path(template: str, image: str, many: bool) -> Path:
    t = Path(template)
    return t.with_name(f"{t.stem}_{Path(image).stem}{t.suffix or '.png'}") if many else t


def predict(
    images: Sequence[str | os.PathLike[str]],
    weights_or_runs: Sequence[str | os.PathLike[str]],
    cfg: EvalConfig | None = None,
    top: int = 5,
    heatmap: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> tuple[list[Prediction], list[str]]:
    """Top classes of each image (ensemble posteriors averaged) and the unreadable paths, which are skipped.

    With `heatmap`, the first network's dense score map of the top class at its largest scale is drawn
    over each image (the path gains _<image name> when there are several images). `progress`: a bar with
    a time estimate on stderr when there are several images (`vggnet predict` shows it unless --quiet).
    """
    cfg = cfg or EvalConfig()
    cfg.check()
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    plan = read_networks(weights_or_runs, cfg.scales, cfg.verify)
    networks = load_networks(plan, pick_device(cfg.device), cfg.fast, cfg.verify, cfg.backend)
    names = class_names_of(networks[0].meta)
    all_scales = sorted({q for n in networks for q in n.scales})
    predictions, skipped = [], []
    bar = tqdm(images, desc="predict", unit="img", disable=not progress or len(images) < 2, file=sys.stderr)
    with torch.inference_mode():
        for path in bar:
            img = open_rescalable(path, all_scales)
            if img is None:
                skipped.append(str(path))
                continue
            scaled = {q: [to_uint8_tensor(rescale(img, q))] for q in all_scales}
            probs = ensemble_posteriors(networks, scaled, cfg)[0]
            values, indices = probs.topk(min(top, probs.numel()))
            pred = Prediction(str(path), [(names[i], float(v)) for v, i in zip(values, indices.tolist(), strict=True)])
            if heatmap is not None:
                net, q = networks[0], max(networks[0].scales)
                window = 32 if net.meta.model.head == "gap" else 32 * net.model.grid
                overlay = heatmap_overlay(img, class_map(net, img, int(indices[0]), q), q, window)
                out = _heatmap_path(str(heatmap), str(path), len(images) > 1)
                atomic_write(out, lambda tmp, o=overlay: o.save(tmp, format="PNG"))
                pred.heatmap = str(out)
            predictions.append(pred)
    return predictions, skipped
