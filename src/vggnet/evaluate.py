"""The testing protocol of section 3.2: dense and multi-crop evaluation, flips, scales, ensembles.

A ladder of small functions, each giving softmax posteriors (N, classes) for images already
rescaled to one test scale Q:

- `center`:    one centred crop of the input size (torchvision's single-crop baseline)
- `dense`:     the whole image through the fully convolutional net, class score map averaged
- `multicrop`: crops of the input size on a grid x grid regular grid, corners included

each optionally averaged with its mirror image. `network_posteriors` averages a method over the
test scales of one network, `ensemble_posteriors` over several networks, `evaluate` runs a
dataset through that and measures top-1/top-5 error. `predict` labels single images and draws
the dense class score map as a heat map.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .configs import EVAL_METHODS, EvalConfig
from .data import open_dataset, open_image
from .io import atomic_write, optional, report
from .model import VGG
from .weights import Preprocessing, WeightsMeta, load_weights, read_meta

WEIGHTS_FILE = "model.safetensors"  # the best weights inside a training run folder
MAX_CONFUSION_CLASSES = 100  # a confusion matrix PNG beyond this is unreadable

# -- networks: runs, weights files, their training and test scales -------------------------------


def weights_file(path: str | os.PathLike[str]) -> Path:
    """The weights file of a run folder (RUN/model.safetensors) or the file itself."""
    p = Path(path)
    if p.is_dir():
        if not (p / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{p}: run folder without {WEIGHTS_FILE}")
        return p / WEIGHTS_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such run folder or weights file")
    return p


def train_scale(meta: WeightsMeta) -> tuple[int, int]:
    """Training scale (Smin, Smax) stored with a run; without it, 256/224 of the input size (torchvision)."""
    scale = meta.extra.get("scale")
    if scale is None:
        s = round(meta.model.input_size * 256 / 224)
        return s, s
    values = [scale] if isinstance(scale, (int, float)) else list(scale)
    if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"training scale {scale!r} in the weights' metadata is not S or [Smin, Smax]")
    return int(values[0]), int(values[-1])


def resolve_scales(spec: str, train: tuple[int, int], input_size: int, source: str = "model") -> list[int]:
    """Test scales Q from "paper", "single", "multi" or "256,384,512" (see EvalConfig.scales)."""
    smin, smax = train
    jittered, mid = smin != smax, (smin + smax) // 2
    word = spec.strip().lower()
    if word == "paper":
        qs = [smin, mid, smax] if jittered else [smin]
    elif word == "single":
        qs = [mid]
    elif word == "multi":
        # {S-32, S, S+32} at a 224 input; S-32 is raised to the input size when below it.
        delta = max(1, round(32 * input_size / 224))
        qs = [smin, mid, smax] if jittered else [max(input_size, smin - delta), smin, smin + delta]
    else:
        try:
            qs = [int(v) for v in word.split(",") if v.strip()]
        except ValueError:
            qs = []
        if not qs:
            raise ValueError(f"scales {spec!r}: expected paper, single, multi or integers such as 256,384,512")
    too_small = [q for q in qs if q < input_size]
    if too_small:
        raise ValueError(f"{source}: test scale Q={too_small[0]} is smaller than the network's input size {input_size}")
    return list(dict.fromkeys(qs))


@dataclass
class Network:
    """One network of an evaluation: where it came from, the model, its metadata and test scales."""

    source: str
    model: VGG
    meta: WeightsMeta
    scales: list[int]

    @property
    def name(self) -> str:
        """The paper's letter, with _bn and a width note: "D", "A_bn (width 1/16)"."""
        cfg = self.meta.model
        name = cfg.config + ("_bn" if cfg.batch_norm else "")
        if cfg.width != 1:
            name += f" (width {_fraction(cfg.width)})"
        return name


Plan = list[tuple[Path, WeightsMeta, list[int]]]  # (weights file, metadata, test scales) per network


def read_networks(weights_or_runs: Sequence[str | os.PathLike[str]], scales: str = "paper") -> Plan:
    """Metadata and test scales of each network, checked before any tensor is read."""
    if not weights_or_runs:
        raise ValueError("no weights given: pass a run folder or a weights file (several for an ensemble)")
    files = [weights_file(p) for p in weights_or_runs]
    plan = []
    for f in files:
        meta = read_meta(f)
        plan.append((f, meta, resolve_scales(scales, train_scale(meta), meta.model.input_size, str(f))))
    check_classes(plan, plan[0][1].model.num_classes, f"{files[0]}")
    return plan


def check_classes(plan: Plan, num_classes: int, against: str) -> None:
    """Raise a one-line error naming the weights whose class count differs from `num_classes`."""
    for f, meta, _ in plan:
        if meta.model.num_classes != num_classes:
            raise ValueError(f"{f}: weights have {meta.model.num_classes} classes but {against} has {num_classes}")


def for_evaluation(model: VGG) -> VGG:
    """The network as testing runs it: an fc head recast as convolutions (section 3.2), channels-last, eval mode.

    Same outputs up to float rounding; conv weights and NHWC activations spare the convolution library a
    layout conversion per call.
    """
    if model.cfg.head == "fc":
        model = model.to_head("conv")
    return model.eval().to(memory_format=torch.channels_last)


def load_networks(plan: Plan, device: str | torch.device = "cpu", fast: bool = False) -> list[Network]:
    """Load every planned network onto `device`, prepared by `for_evaluation`.

    `fast` folds BatchNorm into the convs and, on the CPU, runs the 3x3 convs where it pays as Winograd
    layers (`vggnet.winograd`); other devices keep their own convolution library.
    """
    from .optimize import fold_batchnorm
    from .winograd import winogradify

    networks = []
    for f, _, scales in plan:
        model, meta = load_weights(f)
        model = for_evaluation(fold_batchnorm(model) if fast else model).to(device)
        if fast and torch.device(device).type == "cpu":
            model.features = winogradify(model.features)
        networks.append(Network(str(f), model, meta, scales))
    return networks


def pick_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; try auto, cpu or cuda") from None


# -- images at a test scale ----------------------------------------------------------------------


def rescale(img: Image.Image, q: int) -> Image.Image:
    """Isotropic rescale so the shorter side is Q (section 3.2), bilinear."""
    w, h = img.size
    if min(w, h) == q:
        return img
    size = (q, max(1, round(h * q / w))) if w <= h else (max(1, round(w * q / h)), q)
    return img.resize(size, Image.BILINEAR)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> (3, H, W) uint8 tensor (kept 8-bit until it reaches the device)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def crop_offset(length: int, size: int, fraction: float) -> int:
    """Offset of a crop of `size` at `fraction` (0: first, 0.5: centre, 1: last) along `length`."""
    return int((length - size) * fraction + 0.5)


def grid_positions(height: int, width: int, size: int, n: int = 5) -> list[tuple[int, int]]:
    """(top, left) of n x n crops of side `size` on a regular grid, corners included, row by row.

    n = 1 is the centre crop.
    """
    if n < 1:
        raise ValueError(f"crop grid must be at least 1x1, got {n}")
    if min(height, width) < size:
        raise ValueError(f"image {height}x{width} is smaller than the {size}x{size} crop")
    fractions = [i / (n - 1) for i in range(n)] if n > 1 else [0.5]
    return [(crop_offset(height, size, fy), crop_offset(width, size, fx)) for fy in fractions for fx in fractions]


# -- the ladder: posteriors (N, classes) of images at one scale ----------------------------------


def softmax_posteriors(
    model: VGG, pre: Preprocessing, x: torch.Tensor, flip: bool = False, dense: bool = False
) -> torch.Tensor:
    """Posteriors of a uint8 batch (N, 3, H, W); the mirror's averaged in with `flip`; dense: score map mean."""
    device = next(model.parameters()).device
    x = pre(x.to(device).float() / 255.0)
    n = x.shape[0]
    if flip:
        x = torch.cat([x, x.flip(-1)])
    x = x.contiguous(memory_format=torch.channels_last)
    # Dense: the class score map (N, classes, h, w) is averaged spatially before the softmax (section 3.2).
    logits = model.score_map(x).mean(dim=(2, 3)) if dense else model(x)
    p = logits.float().softmax(dim=1)
    if flip:
        p = (p[:n] + p[n:]) / 2
    return p.cpu()


def crops(
    model: VGG, images: Sequence[torch.Tensor], pre: Preprocessing, grid: int, flip: bool = False, batch_size: int = 32
) -> torch.Tensor:
    """Mean posterior over grid x grid crops of the network's input size per image; batched across images."""
    size = model.cfg.input_size
    jobs = [
        (i, t, lft) for i, im in enumerate(images) for t, lft in grid_positions(im.shape[1], im.shape[2], size, grid)
    ]
    per = max(1, batch_size // 2 if flip else batch_size)
    total: torch.Tensor | None = None
    for start in range(0, len(jobs), per):
        part = jobs[start : start + per]
        x = torch.stack([images[i][:, t : t + size, lft : lft + size] for i, t, lft in part])
        p = softmax_posteriors(model, pre, x, flip)
        total = torch.zeros(len(images), p.shape[1]) if total is None else total
        total.index_add_(0, torch.tensor([i for i, _, _ in part]), p)
    assert total is not None
    return total / (grid * grid)


def center(
    model: VGG, images: Sequence[torch.Tensor], pre: Preprocessing, flip: bool = False, batch_size: int = 32
) -> torch.Tensor:
    """One centre crop of the input size per image (resize + centre crop, torchvision's baseline)."""
    return crops(model, images, pre, 1, flip, batch_size)


def multicrop(
    model: VGG,
    images: Sequence[torch.Tensor],
    pre: Preprocessing,
    flip: bool = False,
    batch_size: int = 32,
    grid: int = 5,
) -> torch.Tensor:
    """Crops on a 5x5 regular grid, with flips 50 per scale (section 3.2); posteriors averaged."""
    return crops(model, images, pre, grid, flip, batch_size)


def dense(
    model: VGG, images: Sequence[torch.Tensor], pre: Preprocessing, flip: bool = False, batch_size: int = 32
) -> torch.Tensor:
    """The uncropped images through the fully convolutional net, score maps averaged (section 3.2).

    Images of equal size share a forward pass; each holds as many pixels as `batch_size` crops.
    """
    size = model.cfg.input_size
    budget = batch_size * size * size // (2 if flip else 1)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        groups[tuple(im.shape)].append(i)
    out: torch.Tensor | None = None
    for shape, members in groups.items():
        per = max(1, budget // (shape[1] * shape[2]))
        for start in range(0, len(members), per):
            idx = members[start : start + per]
            p = softmax_posteriors(model, pre, torch.stack([images[i] for i in idx]), flip, dense=True)
            out = torch.zeros(len(images), p.shape[1]) if out is None else out
            out[idx] = p
    assert out is not None
    return out


def method_posteriors(model: VGG, images: Sequence[torch.Tensor], pre: Preprocessing, cfg: EvalConfig) -> torch.Tensor:
    """Posteriors of cfg.method at one scale; dense+multicrop averages the two (section 3.2, Table 5)."""
    if cfg.method == "center":
        return center(model, images, pre, cfg.flip, cfg.batch_size)
    if cfg.method == "dense":
        return dense(model, images, pre, cfg.flip, cfg.batch_size)
    if cfg.method == "multicrop":
        return multicrop(model, images, pre, cfg.flip, cfg.batch_size, cfg.grid)
    if cfg.method == "dense+multicrop":
        d = dense(model, images, pre, cfg.flip, cfg.batch_size)
        return (d + multicrop(model, images, pre, cfg.flip, cfg.batch_size, cfg.grid)) / 2
    raise ValueError(f"unknown method {cfg.method!r}; accepted: {', '.join(EVAL_METHODS)}")


def network_posteriors(net: Network, images: dict[int, list[torch.Tensor]], cfg: EvalConfig) -> torch.Tensor:
    """One network's posteriors averaged over its test scales; `images` maps Q to the rescaled images."""
    per_scale = [method_posteriors(net.model, images[q], net.meta.preprocessing, cfg) for q in net.scales]
    return torch.stack(per_scale).mean(dim=0)


def ensemble_posteriors(
    networks: Sequence[Network], images: dict[int, list[torch.Tensor]], cfg: EvalConfig
) -> torch.Tensor:
    """Posteriors averaged over the networks of an ensemble (section 4.4, Table 6)."""
    return torch.stack([network_posteriors(n, images, cfg) for n in networks]).mean(dim=0)


def check_config(cfg: EvalConfig) -> None:
    """Raise a one-line error for an unknown method or a non-positive grid, batch size or limit."""
    if cfg.method not in EVAL_METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; accepted: {', '.join(EVAL_METHODS)}")
    if cfg.grid < 1 or cfg.batch_size < 1 or cfg.limit < 0 or cfg.workers < 0:
        raise ValueError("grid and batch_size must be at least 1; limit and workers at least 0")


# -- metrics ------------------------------------------------------------------------------------------


def topk_error(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage of images whose true class is not among the k highest posteriors (k capped at classes)."""
    top = probs.topk(min(k, probs.shape[1]), dim=1).indices
    hit = (top == labels[:, None]).any(dim=1)
    return 100.0 * (1.0 - hit.float().mean().item())


def confusion_matrix(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(classes, classes) counts: row = true class, column = top-1 prediction."""
    c = probs.shape[1]
    pred = probs.argmax(dim=1)
    return torch.bincount(labels * c + pred, minlength=c * c).view(c, c)


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Top-1 accuracy (%) of each class; None for a class without images."""
    rows = confusion.sum(dim=1)
    return [None if n == 0 else 100.0 * float(confusion[i, i]) / float(n) for i, n in enumerate(rows.tolist())]


# -- evaluation of a dataset ------------------------------------------------------------------------


@dataclass
class Result:
    """What `evaluate` measured; `to_dict` gives everything except the raw posteriors."""

    networks: list[str]  # weights files
    configs: list[str]  # "D", "A_bn (width 1/16)", ...
    train_scales: list[tuple[int, int]]  # (Smin, Smax) per network
    scales: list[list[int]]  # test scales Q per network
    method: str
    flip: bool
    grid: int
    data: str
    split: str
    class_names: list[str]
    images: int  # evaluated (readable) images
    skipped: list[str]  # unreadable images, by path
    top1_error: float  # %
    top5_error: float  # %
    per_class_accuracy: list[float | None]  # %, class index order
    confusion: list[list[int]]  # row = true class, column = prediction
    seconds: float
    probs: torch.Tensor | None = field(default=None, repr=False)  # (images, classes) posteriors
    labels: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("probs", "labels")}
        d["train_scales"] = [list(s) for s in self.train_scales]
        return d

    @property
    def tag(self) -> str:
        """A file name stem naming the evaluation: method, scales, flip ("dense_q256-384-512_flip")."""
        qs = sorted({q for s in self.scales for q in s})
        return f"{self.method.replace('+', '-')}_q{'-'.join(map(str, qs))}" + ("_flip" if self.flip else "")


class _Rescaled(torch.utils.data.Dataset):
    """Items of a dataset rescaled to every test scale: ({Q: (3, H, W) uint8}, label, index); None if unreadable."""

    def __init__(self, dataset: torch.utils.data.Dataset, indices: list[int], scales: list[int]) -> None:
        self.dataset, self.indices, self.scales = dataset, indices, scales

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[dict[int, torch.Tensor] | None, int, int]:
        j = self.indices[i]
        img, label = _reporting_warnings(lambda: self.dataset[j])
        if img is None:
            return None, label, j
        return {q: to_tensor(rescale(img, q)) for q in self.scales}, label, j


def _reporting_warnings(load: Callable[[], Any]) -> Any:
    """Call `load`, turning its warnings (an unreadable image, by path) into one plain stderr line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = load()
    for w in caught:
        report(str(w.message))
    return value


def _spread(n: int, limit: int) -> list[int]:
    """`limit` indices evenly spread over range(n) (all of them when limit is 0 or at least n)."""
    if limit == 0 or limit >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def _item_path(dataset: torch.utils.data.Dataset, index: int) -> str:
    samples = getattr(dataset, "samples", None)
    return str(samples[index][0]) if samples is not None else f"item {index}"


def evaluate(
    weights_or_runs: Sequence[str | os.PathLike[str]],
    data_spec: str | torch.utils.data.Dataset,
    cfg: EvalConfig | None = None,
    progress: bool = True,
) -> Result:
    """Test one network or an ensemble (posteriors averaged) on a dataset with the protocol in `cfg`.

    `weights_or_runs`: run folders (RUN/model.safetensors) or weights files; `data_spec`: "digits", an image
    folder, or a dataset of (PIL image or None, label) items with a `classes` list (cfg.split is then unused).
    """
    cfg = cfg or EvalConfig()
    check_config(cfg)
    device = pick_device(cfg.device)
    plan = read_networks(weights_or_runs, cfg.scales)
    if isinstance(data_spec, (str, os.PathLike)):
        # The digits are drawn at the largest training scale, so every test scale rescales the same images;
        # image folders ignore the size.
        dataset = open_dataset(data_spec, cfg.split, size=max(train_scale(meta)[1] for _, meta, _ in plan))
    else:
        dataset, data_spec = data_spec, type(data_spec).__name__
    classes = list(dataset.classes)
    check_classes(plan, len(classes), f"data {data_spec!r} ({cfg.split})")
    networks = load_networks(plan, device, cfg.fast)
    for net in networks:
        if net.meta.class_names and list(net.meta.class_names) != classes:
            report(f"warning: {net.source}: class names differ from the data's; classes are matched by index")
    all_scales = sorted({q for net in networks for q in net.scales})
    indices = _spread(len(dataset), cfg.limit)
    loader = torch.utils.data.DataLoader(
        _Rescaled(dataset, indices, all_scales), batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=list
    )
    probs, labels, skipped = [], [], []
    start = time.perf_counter()
    bar = tqdm(total=len(indices), unit="img", desc=f"evaluate {cfg.method}", disable=not progress, file=sys.stderr)
    with torch.inference_mode():
        for batch in loader:
            readable = [item for item in batch if item[0] is not None]
            skipped += [_item_path(dataset, j) for img, _, j in batch if img is None]
            if readable:
                images = {q: [item[0][q] for item in readable] for q in all_scales}
                probs.append(ensemble_posteriors(networks, images, cfg))
                labels += [item[1] for item in readable]
            bar.update(len(batch))
    bar.close()
    if not labels:
        raise ValueError(f"{data_spec}: no readable images to evaluate ({len(skipped)} unreadable)")
    p, y = torch.cat(probs), torch.tensor(labels)
    conf = confusion_matrix(p, y)
    return Result(
        networks=[n.source for n in networks],
        configs=[n.name for n in networks],
        train_scales=[train_scale(n.meta) for n in networks],
        scales=[n.scales for n in networks],
        method=cfg.method,
        flip=cfg.flip,
        grid=cfg.grid,
        data=str(data_spec),
        split=cfg.split,
        class_names=classes,
        images=len(labels),
        skipped=skipped,
        top1_error=topk_error(p, y, 1),
        top5_error=topk_error(p, y, 5),
        per_class_accuracy=per_class_accuracy(conf),
        confusion=conf.tolist(),
        seconds=time.perf_counter() - start,
        probs=p,
        labels=y,
    )


# -- reports: a Markdown table shaped like the paper's Tables 3-6, JSON, a confusion matrix -------------


def _fraction(width: float) -> str:
    inverse = 1 / width
    return f"1/{round(inverse)}" if abs(inverse - round(inverse)) < 1e-6 else f"{width:g}"


def _scale_text(s: tuple[int, int]) -> str:
    return str(s[0]) if s[0] == s[1] else f"[{s[0]}, {s[1]}]"


def _joined(values: list[str]) -> str:
    return values[0] if len(set(values)) == 1 else " / ".join(values)


def method_label(result: Result) -> str:
    """The evaluation method in words: "dense, flip", "multi-crop 5x5, flip (50/scale)", ..."""
    crops_per_scale = result.grid**2 * (2 if result.flip else 1)
    names = {
        "center": "centre crop",
        "dense": "dense",
        "multicrop": f"multi-crop {result.grid}x{result.grid} ({crops_per_scale}/scale)",
        "dense+multicrop": f"multi-crop {result.grid}x{result.grid} & dense",
    }
    return names[result.method] + (", flip" if result.flip else "")


def markdown_table(results: Sequence[Result]) -> str:
    """One row per result, in the shape of the paper's Tables 3-6 (errors in %)."""
    lines = [
        "| ConvNet | train S | test Q | method | images | top-1 err (%) | top-5 err (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        convnet = " + ".join(r.configs)
        train = _joined([_scale_text(s) for s in r.train_scales])
        test = _joined([",".join(map(str, q)) for q in r.scales])
        lines.append(
            f"| {convnet} | {train} | {test} | {method_label(r)} | {r.images} | {r.top1_error:.1f} | {r.top5_error:.1f} |"
        )
    return "\n".join(lines)


def write_report(result: Result, out_dir: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Write NAME.json, NAME.md and (up to 100 classes) NAME_confusion.png; NAME defaults to `result.tag`."""
    out, name = Path(out_dir), name or result.tag
    written = [out / f"{name}.json", out / f"{name}.md"]
    atomic_write(written[0], lambda tmp: Path(tmp).write_text(json.dumps(result.to_dict(), indent=1) + "\n"))
    rows = [
        f"| {n} | {a:.1f} |" if a is not None else f"| {n} | - |"
        for n, a in zip(result.class_names, result.per_class_accuracy, strict=True)
    ]
    text = (
        f"# {' + '.join(result.configs)} on {result.data} ({result.split})\n\n{markdown_table([result])}\n\n"
        f"{result.images} images, {len(result.skipped)} unreadable skipped, {result.seconds:.1f} s.\n\n"
        "| class | top-1 accuracy (%) |\n|---|---|\n" + "\n".join(rows) + "\n"
    )
    atomic_write(written[1], lambda tmp: Path(tmp).write_text(text))
    if len(result.class_names) <= MAX_CONFUSION_CLASSES and optional(
        "matplotlib", "plots", "confusion matrix PNG not drawn"
    ):
        from .plots import confusion_figure

        written.append(out / f"{name}_confusion.png")
        confusion_figure(result, written[-1], method_label(result))
    return written


def scale_report(
    weights_or_runs: Sequence[str | os.PathLike[str]],
    data_spec: str = "digits",
    cfg: EvalConfig | None = None,
    progress: bool = True,
) -> tuple[list[Result], str]:
    """Dense error at a single scale beside multi-scale (Table 3 vs Table 4); returns results and a table."""
    base = dataclasses.replace(cfg or EvalConfig(), method="dense")
    results = [
        evaluate(weights_or_runs, data_spec, dataclasses.replace(base, scales=s), progress) for s in ("single", "multi")
    ]
    return results, markdown_table(results)


# -- predict: top-5 labels of single images and the dense class score map as a heat map --------------


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
    x = net.meta.preprocessing(to_tensor(rescale(img, q))[None].float() / 255.0)
    scores = net.model.score_map(x.to(next(net.model.parameters()).device))  # (1, classes, h, w)
    return scores.float().softmax(dim=1)[0, index].cpu()


def heatmap_overlay(img: Image.Image, heat: torch.Tensor, q: int, window: int, alpha: float = 0.5) -> Image.Image:
    """Overlay an (h, w) map on the image: cell (i, j) sits at the centre of its window (32 px stride at Q).

    The map is stretched to its own range (min -> blue, max -> red).
    """
    from .colormap import jet

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
) -> tuple[list[Prediction], list[str]]:
    """Top classes of each image (ensemble posteriors averaged) and the unreadable paths, which are skipped.

    With `heatmap`, the first network's dense score map of the top class at its largest scale is drawn
    over each image (the path gains _<image name> when there are several images).
    """
    cfg = cfg or EvalConfig()
    check_config(cfg)
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    networks = load_networks(read_networks(weights_or_runs, cfg.scales), pick_device(cfg.device), cfg.fast)
    names = class_names_of(networks[0].meta)
    all_scales = sorted({q for n in networks for q in n.scales})
    predictions, skipped = [], []
    with torch.inference_mode():
        for path in images:
            img = _reporting_warnings(lambda p=path: open_image(p))
            if img is None:
                skipped.append(str(path))
                continue
            probs = ensemble_posteriors(networks, {q: [to_tensor(rescale(img, q))] for q in all_scales}, cfg)[0]
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
