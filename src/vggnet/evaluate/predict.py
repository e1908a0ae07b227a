"""Predicting single images: the top classes (ensemble posteriors averaged) and a heat map of why.

The heat map is the dense class score map of section 3.2 by default, or Grad-CAM at a conv layer, or
the gap head's CAM (both from `vggnet.cam`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from ..cam import class_activation_map, gradcam
from ..colormap import jet
from ..configs import EvalConfig
from ..data import open_rescalable, rescale, rescaled_size, to_uint8_tensor
from ..devices import pick_device
from ..imagenet import imagenet_classes, imagenet_wnids, is_imagenet_labelled
from ..io import atomic_write, report
from ..model import VGG
from ..weights import WeightsMeta
from .networks import Network, check_activations, ensemble_posteriors, load_networks, read_networks
from .protocol import protocol_text


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
    folder_class: str | None = None  # "n01440764 tench": the ImageNet class the image's folder is named for
    folder_rank: int | None = None  # that class's rank among all (1: the top class)
    protocol: str = ""  # what produced the posteriors: "dense, Q=256, flip" (`protocol.protocol_text`)


def class_map(net: Network, img: Image.Image, index: int, q: int) -> torch.Tensor:
    """(h, w) posterior of class `index` at each position of the dense score map at scale Q."""
    x = net.meta.preprocessing(to_uint8_tensor(rescale(img, q))[None].float() / 255.0)
    scores = net.model.score_map(x.to(next(net.model.parameters()).device))  # (1, classes, h, w)
    return scores.float().softmax(dim=1)[0, index].cpu()


CAM_METHODS = ("dense", "gradcam", "cam")  # dense: the class score map of section 3.2


def check_conv_layer(model: VGG, layer: str) -> str:
    """`layer` if it names a conv layer of `model` (Grad-CAM reads its output), else a one-line error."""
    convs = [n for n in model.feature_names if n.startswith("conv")]
    if layer not in convs:
        kind = "is not a conv layer" if layer in model.feature_names + model.classifier_names else "is no layer"
        raise ValueError(f"Grad-CAM layer {layer!r} {kind} of this VGG; accepted: {', '.join(convs)}")
    return layer


# The heat map is coloured in floats at most at this many pixels, then resized as 8-bit RGB and blended:
# a map at a 12000x12000 photo's own size would take gigabytes of float64 for what a 2048x2048 one shows.
HEAT_PIXELS = 2048 * 2048


def overlay(image: Image.Image, heat: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """An (H, W) map in [0, 1] drawn over the image in the jet colours (blue 0 -> red 1), resized to fit."""
    w, h = image.size
    shrink = max(1.0, (w * h / HEAT_PIXELS) ** 0.5)
    size = (max(1, round(h / shrink)), max(1, round(w / shrink)))  # (H, W), at most about HEAT_PIXELS
    m = F.interpolate(heat[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    colour = Image.fromarray(np.uint8(255 * jet(m.clamp(0, 1).numpy()) + 0.5))  # (H', W', 3) jet colours
    if colour.size != image.size:
        colour = colour.resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), colour, alpha)


def why_map(net: Network, img: Image.Image, index: int, q: int, cam: str, layer: str | None) -> torch.Tensor:
    """(H, W) Grad-CAM (at conv `layer`'s output) or CAM of class `index` for the image rescaled to Q, in [0, 1]."""
    with torch.inference_mode(False):  # Grad-CAM differentiates; predict runs in inference mode
        x = to_uint8_tensor(rescale(img, q))[None].float() / 255.0
        x = x.to(next(net.model.parameters()).device)
        if cam == "gradcam":
            return gradcam(net.model, x, layer, index, net.meta.preprocessing)[0].cpu()
        return class_activation_map(net.model, x, index, net.meta.preprocessing)[0].cpu()


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


LEGEND_SIDE = 0.06  # the legend strip's height as a fraction of the picture's longer side (at least 18 px)


def with_legend(drawn: Image.Image, title: str, low: str, high: str) -> Image.Image:
    """The heat map with a strip below it: `title` (the map and its class) on the left, the jet colour scale
    from `low` (blue) to `high` (red) on the right."""
    from PIL import ImageDraw, ImageFont

    w, h = drawn.size
    strip = max(18, round(LEGEND_SIDE * max(w, h)))
    out = Image.new("RGB", (w, h + strip), "white")
    out.paste(drawn.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(6, strip * 2 // 5))
    pad = max(1, strip // 10)
    bar_w, bar_h = max(8, w // 3 - 2 * pad), max(2, strip // 3)
    x0 = w - pad - bar_w
    ramp = np.uint8(255 * jet(np.linspace(0.0, 1.0, bar_w)) + 0.5)  # (bar_w, 3): low -> high, left to right
    out.paste(Image.fromarray(np.ascontiguousarray(np.broadcast_to(ramp, (bar_h, bar_w, 3)))), (x0, h + pad))
    labels_y = h + 2 * pad + bar_h
    draw.text((x0, labels_y), low, fill="black", font=font)
    draw.text((max(x0, w - pad - draw.textlength(high, font=font)), labels_y), high, fill="black", font=font)
    draw.text((pad, h + pad), _fitted(draw, title, font, x0 - 3 * pad), fill="black", font=font)
    return out


def _fitted(draw, text: str, font, room: float) -> str:
    """`text`, cut short with "..." until it fits `room` pixels (a narrow picture's legend)."""
    if draw.textlength(text, font=font) <= room:
        return text
    while len(text) > 1 and draw.textlength(text + "...", font=font) > room:
        text = text[:-1]
    return text + "..."


def heatmap_paths(template: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Where each image's heat map goes: `template` for one image, else <stem>_<image name><suffix>, with the
    image's position appended where names repeat (c1/x.jpg and c2/x.jpg). A one-line error, before any work,
    when two maps would still share a path or a map would overwrite one of the images."""
    t = Path(template)
    stems = [Path(p).stem for p in images]
    paths = [
        t.with_name(f"{t.stem}_{stem}{f'_{i}' if stems.count(stem) > 1 else ''}{t.suffix or '.png'}")
        for i, stem in enumerate(stems, 1)
    ] if len(images) > 1 else [t]  # fmt: skip
    inputs = {Path(p).resolve() for p in images}
    for i, out in enumerate(paths):
        if out in paths[:i]:
            first = images[paths.index(out)]
            raise ValueError(f"--heatmap {template}: the heat maps of {first} and {images[i]} would both be {out}")
        if out.resolve() in inputs:
            raise ValueError(f"--heatmap {template}: the heat map of {images[i]} would overwrite the image {out}")
    return paths


def predict(
    images: Sequence[str | os.PathLike[str]],
    weights_or_runs: Sequence[str | os.PathLike[str]],
    cfg: EvalConfig | None = None,
    top: int = 5,
    heatmap: str | os.PathLike[str] | None = None,
    cam: str = "dense",
    layer: str | None = None,
    progress: bool = False,
) -> tuple[list[Prediction], list[str]]:
    """Top classes of each image (ensemble posteriors averaged) and the unreadable paths, which are skipped.

    With `heatmap`, the first network's map of the top class at its largest scale is drawn over each image
    (the path gains _<image name> when there are several images): `cam` "dense" (the class score map),
    "gradcam" (at conv `layer`, default the last) or "cam" (gap head), with a legend strip below it
    (`with_legend`). Each prediction names its protocol. `progress`: a bar with a time estimate on stderr
    when there are several images (`vggnet predict` shows it unless --quiet).
    """
    cfg = cfg or EvalConfig()
    cfg.check()
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    if cam not in CAM_METHODS:
        raise ValueError(f"--cam {cam!r}: accepted {', '.join(CAM_METHODS)}")
    if cam != "dense" and heatmap is None:
        raise ValueError(f"--cam {cam} draws a heat map; give --heatmap PATH")
    if layer is not None and cam != "gradcam":
        raise ValueError("--layer chooses Grad-CAM's conv layer; use it with --cam gradcam")
    outs = heatmap_paths(heatmap, images) if heatmap is not None else []
    plan = read_networks(weights_or_runs, cfg.scales, cfg.verify)
    networks = load_networks(plan, pick_device(cfg.device), cfg.fast, cfg.verify, cfg.backend)
    # Grad-CAM differentiates: --fast's Winograd layers hold inference-only tensors and another runtime's
    # net has no gradients, so it gets a plain torch copy
    plain = cam != "dense" and (cfg.fast or cfg.backend != "torch")
    explained = load_networks(plan[:1], pick_device(cfg.device), verify=cfg.verify)[0] if plain else networks[0]
    first = explained.model
    if cam == "gradcam":
        layer = check_conv_layer(first, layer or [n for n in first.feature_names if n.startswith("conv")][-1])
    if cam == "cam" and first.cfg.head != "gap":
        raise ValueError(f"--cam cam needs a gap-head network; {networks[0].source} has the {first.cfg.head} head")
    names = class_names_of(networks[0].meta)
    wnids = imagenet_wnids() if is_imagenet_labelled(len(names), networks[0].meta.class_names) else []
    all_scales = sorted({q for n in networks for q in n.scales})
    protocol = protocol_text(cfg, all_scales, networks[0].meta.model.input_size)
    predictions, skipped = [], []
    bar = tqdm(images, desc="predict", unit="img", disable=not progress or len(images) < 2, file=sys.stderr)
    with torch.inference_mode():
        for i, path in enumerate(bar):
            img = open_rescalable(path, all_scales)
            try:  # before any forward pass: a thin image rescales into a very wide input
                if img is not None:
                    sizes = {q: rescaled_size(img.size, q) for q in all_scales}
                    if "dense" in cfg.method:
                        check_activations(networks, sizes, 2 if cfg.flip else 1)
                    if heatmap is not None:
                        check_activations([explained], sizes, backward=cam == "gradcam")
            except ValueError as e:
                report(f"skipping unusable image {path}: {e}")
                img = None
            if img is None:
                skipped.append(str(path))
                continue
            scaled = {q: [to_uint8_tensor(rescale(img, q))] for q in all_scales}
            probs = ensemble_posteriors(networks, scaled, cfg)[0]
            values, indices = probs.topk(min(top, probs.numel()))
            top_classes = [(names[i], float(v)) for v, i in zip(values, indices.tolist(), strict=True)]
            pred = Prediction(str(path), top_classes, protocol=protocol)
            folder = Path(path).parent.name
            if folder in wnids:  # an ILSVRC-style folder: say where its own class ranks
                k = wnids.index(folder)
                pred.folder_class, pred.folder_rank = f"{folder} {names[k]}", int((probs > probs[k]).sum()) + 1
            if heatmap is not None:
                net, q = networks[0], max(networks[0].scales)
                label = top_classes[0][0]
                if cam == "dense":
                    window = 32 if net.meta.model.head == "gap" else 32 * net.model.grid
                    heat = class_map(net, img, int(indices[0]), q)
                    drawn = heatmap_overlay(img, heat, q, window)
                    how, low, high = f"posterior per position, dense at Q={q}", f"{heat.min():.1%}", f"{heat.max():.1%}"
                else:
                    drawn = overlay(img, why_map(explained, img, int(indices[0]), q, cam, layer))
                    how, low, high = (f"Grad-CAM at {layer}" if cam == "gradcam" else "CAM") + f", Q={q}", "0", "most"
                drawn = with_legend(drawn, f"{label}: {how}", low, high)
                info = PngInfo()  # the legend's facts, for a program reading the file
                for key, value in (("class", label), ("map", how), ("colour scale", f"jet: blue {low} to red {high}")):
                    info.add_itxt(key, value)
                out = outs[i]
                atomic_write(out, lambda tmp, o=drawn, n=info: o.save(tmp, format="PNG", pnginfo=n))
                pred.heatmap = str(out)
            predictions.append(pred)
    return predictions, skipped
