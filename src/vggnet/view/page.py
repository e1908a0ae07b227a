"""The viewer page: the data it shows (every number from `analysis.layer_table`) and the one HTML file.

The page carries its data as JSON, its pictures as data URIs and its CSS and script inline
(`page.html`, `page.css`, `page.js` beside this module), so it opens from disk with no server
and no network access.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from ..analysis import LayerInfo, layer_table, totals
from ..cam import class_activation_map, top_gradcams
from ..configs import ALIASES, ModelConfig, fraction, resolve
from ..data import open_image
from ..evaluate import class_names_of
from ..features import features_at
from ..imagenet import imagenet_classes, wnid_indices
from ..io import write_text
from ..lang import DEFAULT, Strings
from ..model import VGG
from ..weights import load_weights

if TYPE_CHECKING:
    from ..weights import WeightsMeta

TOP_CLASSES = 5
TOP_MAPS = 8  # strongest feature maps shown per conv layer and photo
MAP_SIDE = 112  # larger maps are averaged down to this side (conv1 at 224): a quarter of the bytes
JPEG_QUALITY = 90

PathLike = str | os.PathLike[str]


def write_view(
    out: PathLike,
    network: str | None = None,
    *,
    batch_norm: bool = False,
    head: str | None = None,
    weights: PathLike | None = None,
    images: Sequence[PathLike] = (),
    lang: str = DEFAULT,
) -> Path:
    """Write the viewer for `network` (default D) or a weights file, with what its layers see in `images`.

    `lang` picks the page's language (a file in `vggnet/lang`). Everything is checked and computed before
    the file is written: bad input leaves nothing behind.
    """
    data = view_data(network, batch_norm=batch_norm, head=head, weights=weights, images=images, lang=lang)
    return write_text(out, render(data))


def view_data(
    network: str | None = None,
    *,
    batch_norm: bool = False,
    head: str | None = None,
    weights: PathLike | None = None,
    images: Sequence[PathLike] = (),
    lang: str = DEFAULT,
) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (pictures as data URIs), with its strings in `lang`."""
    s = Strings(lang, "view")  # an unknown language is the first error
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if images and weights is None:
        raise ValueError("photos need weights (--weights): predictions, feature maps and Grad-CAM come from them")
    if network is not None:
        resolve(network)  # the cheap checks first: an unknown name, unreadable photos, then the weights
    photos = [_open_photo(p) for p in images]
    model, meta = _model(network, batch_norm, head, weights)
    cfg = model.cfg
    with torch.device("meta"):  # the architecture, classifier included even for features-only weights
        arch = VGG(cfg)
    rows = layer_table(arch, cfg.input_size)
    alias = next((a for a, letter in ALIASES.items() if letter == cfg.arch), None)
    data: dict[str, Any] = {
        "network": {
            "name": cfg.display_name(with_width=True),
            "title": s(
                "title",
                name=cfg.display_name(),
                width=s("width_note", width=fraction(cfg.width)) if cfg.width != 1 else "",
            ),
            "alias": alias and alias + ("_bn" if cfg.batch_norm else ""),
            "head": cfg.head,
            "classes": cfg.num_classes,
            "input": [cfg.in_channels, cfg.input_size, cfg.input_size],
            "weight_layers": sum(r.kind in ("Conv2d", "Linear") for r in rows),
        },
        "layers": layer_records(arch, rows, s),
        "totals": totals(rows),
        "weights": None,
        "photos": [],
        "lang": lang,
        "strings": s.table,
    }
    if meta is not None:
        data["weights"] = {"file": Path(weights).name, "source": meta.source, "classifier": meta.include_top}
    if photos:
        data["photos"] = photo_records(model, meta, photos)
    return data


def render(data: dict[str, Any]) -> str:
    """The page: the template with its CSS, script and data inlined."""
    here = resources.files(__package__)
    html, css, js = (here.joinpath(f"page.{ext}").read_text(encoding="utf-8") for ext in ("html", "css", "js"))
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c")  # no "</script>" can end the data block early
    title = _escape(data["network"]["title"])
    # the static text in the page's language; keys ending in _html are our own markup, the rest is escaped
    strings = data["strings"]
    html = re.sub(
        r"\{\{([a-z_0-9]+)\}\}", lambda m: strings[m[1]] if m[1].endswith("_html") else _escape(strings[m[1]]), html
    )
    for key, value in (("TITLE", title), ("CSS", css), ("JS", js), ("DATA", text)):  # the data last: it is not ours
        html = html.replace(f"__VGGNET_{key}__", value)
    return html


# -- the network ---------------------------------------------------------------------------------------


def _model(
    network: str | None, batch_norm: bool, head: str | None, weights: PathLike | None
) -> tuple[VGG, WeightsMeta | None]:
    """The model to show: built on the meta device from its name, or loaded from weights (and checked)."""
    if weights is None:
        letter, bn = resolve(network or "D")
        with torch.device("meta"):
            return VGG(ModelConfig(arch=letter, batch_norm=bn or batch_norm, head=head or "fc")), None
    try:
        model, meta = load_weights(weights)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as e:  # a foreign file can fail deep in torch, h5py or protobuf: one line, not a traceback
        first = (str(e).splitlines() or [""])[0]
        raise ValueError(f"{weights}: cannot load these weights ({type(e).__name__}: {first})") from e
    cfg = model.cfg
    if network is not None or batch_norm:
        letter, bn = resolve(network or cfg.arch)
        if (letter, bn or batch_norm) != (cfg.arch, cfg.batch_norm):
            asked = letter + ("_bn" if bn or batch_norm else "")
            raise ValueError(f"{weights} holds VGG {cfg.display_name()}, not the {asked} asked for")
    if head is not None and head != cfg.head:
        raise ValueError(f"{weights} holds a VGG with the {cfg.head} head, not the {head} head asked for")
    return model, meta


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def layer_records(model: VGG, rows: list[LayerInfo], s: Strings | None = None) -> list[dict[str, Any]]:
    """One record per row of `layer_table`, plus its Table 1 label, block and receptive-field offset.

    `first` is the input pixel (row or column) where unit 0's receptive field starts; unit i's field
    covers first + i * jump ... first + i * jump + rf - 1 and may reach into the zero padding (< 0).
    """
    modules = dict(zip(model.feature_names, model.features, strict=True))
    if model.cfg.head != "conv":
        modules["avgpool"] = modules["gap"] = model.avgpool
    modules.update(zip(model.classifier_names, model.classifier, strict=True))
    s = s or Strings(DEFAULT, "view")
    records: list[dict[str, Any]] = []
    first: int | None = 0
    jump: int | None = 1
    for r in rows:
        m = modules[r.name]
        pad = m.padding[0] if isinstance(m, nn.Conv2d) else 0
        first = None if first is None or jump is None or r.rf is None else first - pad * jump
        jump = r.jump
        records.append(
            {
                "name": r.name,
                "kind": r.kind,
                "label": table1_label(r.name, m, s),
                "block": _block(r.name),
                "shape": list(r.shape),
                "params": r.params,
                "macs": r.macs,
                "rf": r.rf,
                "jump": r.jump,
                "first": first,
                "memory": r.memory,
            }
        )
    return records


def table1_label(name: str, m: nn.Module, s: Strings | None = None) -> str:
    """A layer as the paper's Table 1 writes it: conv3-64, maxpool, FC-4096, ... (words in the strings' language)."""
    s = s or Strings(DEFAULT, "view")
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0]
        return s("label_fc_conv", n=m.out_channels, k=k) if name.startswith("fc") else f"conv{k}-{m.out_channels}"
    if isinstance(m, nn.Linear):
        return f"FC-{m.out_features}"
    if isinstance(m, nn.MaxPool2d):
        return s("label_maxpool")
    if isinstance(m, nn.LocalResponseNorm):
        return s("label_lrn", n=m.size)
    if isinstance(m, nn.Dropout):
        return s("label_dropout", p=f"{m.p:g}")
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return s("label_gap") if name == "gap" else s("label_avgpool")
    if isinstance(m, nn.BatchNorm2d):
        return s("label_bn")
    return type(m).__name__


def _block(name: str) -> str:
    """conv3_1, relu3_1, pool3 -> "3"; the pooling and classifier after the convs (relu6 too) -> "head"."""
    match = re.fullmatch(r"(?:conv|bn|relu)(\d+)_\d+|(?:pool|norm)(\d+)", name)
    return (match.group(1) or match.group(2)) if match else "head"


# -- photos -----------------------------------------------------------------------------------------------


def _open_photo(path: PathLike) -> tuple[str, Image.Image]:
    """(file name, RGB image), or a one-line error for a missing or unreadable file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = open_image(path)
    if image is None:
        reason = str(caught[0].message) if caught else f"unreadable image {path}"
        raise ValueError(reason.removeprefix("skipping "))
    return Path(path).name, image


def photo_records(model: VGG, meta: WeightsMeta, photos: list[tuple[str, Image.Image]]) -> list[dict[str, Any]]:
    """Per photo: the network's input, top-5, the strongest maps of each conv layer and Grad-CAM per class."""
    side = model.cfg.input_size
    crops = [ImageOps.fit(image, (side, side), Image.BILINEAR) for _, image in photos]  # shorter side, centre crop
    x = torch.stack([torch.from_numpy(np.asarray(c).copy()).permute(2, 0, 1) for c in crops]).float() / 255
    pre = meta.preprocessing
    convs = [n for n in model.feature_names if n.startswith("conv")]
    relus = ["relu" + n[4:] for n in convs]  # what the next layer sees: the rectified map
    evidence = None
    if meta.include_top:  # one forward pass gives the maps, the top classes and (k backward passes) their Grad-CAMs
        evidence = top_gradcams(model, x, relus, TOP_CLASSES, pre, upsample=False)
        acts = evidence.activations
    else:
        with torch.no_grad():
            acts = features_at(model, x, relus, pre)
    records = [
        {
            "name": name,
            "src": _data_uri(crop, "JPEG"),
            "size": list(image.size),
            "maps": {conv: strongest_maps(acts[relu][i]) for conv, relu in zip(convs, relus, strict=True)},
            "top": [],
            "gradcam": {},
            "cam": None,
        }
        for i, ((name, image), crop) in enumerate(zip(photos, crops, strict=True))
    ]
    if evidence is None:
        return records
    names = readable_names(class_names_of(meta))
    ranks = range(evidence.classes.shape[1])
    cams = None
    if model.cfg.head == "gap":
        cams = [class_activation_map(model, x, evidence.classes[:, k], pre, upsample=False) for k in ranks]
    for i, rec in enumerate(records):
        rec["top"] = [
            {"index": c, "label": names[c], "p": round(p, 6)}
            for c, p in zip(evidence.classes[i].tolist(), evidence.probs[i].tolist(), strict=True)
        ]
        rec["gradcam"] = {
            conv: [heat_png(evidence.maps[relu][i, k]) for k in ranks] for conv, relu in zip(convs, relus, strict=True)
        }
        rec["cam"] = cams and [heat_png(cams[k][i]) for k in ranks]
    return records


def readable_names(names: list[str]) -> list[str]:
    """Class names to show: a WordNet id (an Imagenette folder, n03445777) gets its ImageNet name before it."""
    indices = wnid_indices(names)
    if indices is None:
        return names
    return [f"{imagenet_classes()[i]} ({wnid})" for i, wnid in zip(indices, names, strict=True)]


def strongest_maps(act: torch.Tensor) -> list[dict[str, Any]]:
    """The TOP_MAPS channels of a (C, h, w) map with the highest mean activation, as grey PNGs (white = max)."""
    means = act.mean(dim=(1, 2))
    order = means.topk(min(TOP_MAPS, len(means))).indices
    maps = []
    for c in order.tolist():
        m = act[c]
        top = float(m.max())
        if m.shape[-1] > MAP_SIDE:
            m = F.avg_pool2d(m[None, None], math.ceil(m.shape[-1] / MAP_SIDE), ceil_mode=True)[0, 0]
        grey = (m / top * 255).round().clamp(0, 255) if top > 0 else torch.zeros_like(m)
        image = Image.fromarray(grey.to(torch.uint8).numpy(), "L")
        maps.append({"channel": c, "mean": _sig(float(means[c])), "max": _sig(top), "src": _data_uri(image, "PNG")})
    return maps


def heat_png(m: torch.Tensor) -> str:
    """A [0, 1] map as a see-through "hot" PNG: black-red-yellow-white, transparent where there is no evidence."""
    v = m.clamp(0, 1).numpy()
    rgba = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1), 0.8 * v], axis=-1)
    return _data_uri(Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA"), "PNG")


def _data_uri(image: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _sig(v: float) -> float:
    """Four significant digits: enough for a caption, and a smaller page."""
    return float(f"{v:.4g}")
