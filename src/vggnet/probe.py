"""A linear probe: a frozen network's features at one named layer, and a linear classifier fitted on them.

The fastest baseline on a new dataset: every training image goes once through the network (rescaled
to the weights' training scale S, centre crop of their input size, their own preprocessing), a conv
tap is global-average-pooled to one value per channel, and a multinomial logistic regression
(scikit-learn, on standardised features) is fitted on the training split and tested on the validation
split, reported like `vggnet evaluate`. The features are kept on disk (`vggnet.frozen`), so a second probe
of the same weights and images (another C, another layer's classifier) skips the network; `fast` runs
the network up to the layer on the fast path (BatchNorm folded, Winograd convs on a CPU).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .data import item_name, open_dataset, rescale, to_uint8_tensor
from .devices import pick_device
from .evaluate.networks import train_scale
from .evaluate.protocol import grid_positions
from .features import layer_names
from .frozen import Prefix, cached_outputs, compute_outputs, folds, output_shape, prefix_state, stages
from .io import silently, write_text
from .metrics import confusion_matrix, error_cells, error_columns, per_class_accuracy, topk_error
from .model import VGG
from .tables import markdown_table, per_class_table
from .train.finetune import check_class_sizes
from .weights import Preprocessing, load_weights, resolve_weights


@dataclass
class ProbeResult:
    """What `linear_probe` measured; `to_dict` gives everything but the raw scores."""

    weights: str
    config: str  # "D", "A_bn (width 1/16)"
    layer: str
    dim: int  # features per image
    data: str
    class_names: list[str]
    train_images: int
    images: int  # validation images scored
    skipped: list[str]  # unreadable images, by path
    top1_error: float  # %
    top5_error: float  # %
    per_class_accuracy: list[float | None]  # %, class index order
    confusion: list[list[int]]  # row = true class, column = prediction
    c: float  # inverse L2 strength of the logistic regression
    scale: int  # the shorter side images were rescaled to before the centre crop
    seconds: float
    scores: torch.Tensor | None = field(default=None, repr=False)  # (images, classes) probabilities
    labels: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("scores", "labels")}


class _Crops(Dataset):
    """A dataset's images rescaled to `scale` and centre-cropped to `crop`: ((3, crop, crop) uint8 or None, label, index)."""

    def __init__(self, base: Dataset, scale: int, crop: int) -> None:
        self.base, self.scale, self.crop = base, scale, crop

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, int]:
        image, label = silently(lambda: self.base[i])
        if image is None:
            return None, label, i
        x = to_uint8_tensor(rescale(image, self.scale))  # (3, H, W), shorter side = scale
        ((top, left),) = grid_positions(x.shape[1], x.shape[2], self.crop, 1)  # the centre crop `evaluate` takes
        return x[:, top : top + self.crop, left : left + self.crop], label, i


class _Tap(nn.Module):
    """0-255 uint8 crops -> the weights' preprocessing -> the frozen network up to a layer -> one value per channel."""

    def __init__(self, prefix: Prefix, pre: Preprocessing) -> None:
        super().__init__()
        self.prefix, self.pre, self.device = prefix, pre, prefix.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.prefix(self.pre(x.float() / 255.0))
        return f.mean(dim=(2, 3)) if f.dim() == 4 else f  # (N, C): a conv tap averaged over space


def probe_features(
    model: VGG,
    pre: Preprocessing,
    dataset: Dataset,
    layer: str,
    scale: int,
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = False,
    *,
    fast: bool = False,
    cache: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features (N, D), labels (N,), unreadable items) of a dataset at `layer`; conv taps are averaged over space.

    `fast`: the network up to `layer` on the fast path (`frozen.Prefix`); `cache`: features kept on disk,
    keyed by the weights, the files and these settings (`frozen.cached_outputs`), read back by the next probe.
    """
    names = [name for name, _ in stages(model)]
    if layer not in names:
        raise ValueError(f"--layer {layer!r} is no layer of this network; accepted: {', '.join(names)}")
    n = names.index(layer) + 1
    items = _Crops(dataset, scale, model.cfg.input_size)
    settings = {"layer": layer, "scale": scale, "crop": model.cfg.input_size, "preprocessing": dataclasses.asdict(pre)}
    args = dict(batch_size=batch_size, workers=workers, progress=progress, desc=f"features {layer}")
    tap = lambda: _Tap(Prefix(model, n, fast=fast), pre)  # noqa: E731  # built only when not read from disk
    if cache:
        state, shape = prefix_state(model, n), output_shape(model, n, model.cfg.input_size)[:1]  # (C,): _Tap averages
        settings["fast"] = folds(model, n, fast)
        out, _ = cached_outputs(tap, items, dataset, settings, state=state, shape=shape, **args)
    else:
        out = compute_outputs(tap(), items, **args)
    skipped = [item_name(dataset, i) for i in (~out.readable).nonzero().flatten().tolist()]
    return out.values[out.readable].numpy(), out.labels[out.readable].numpy(), skipped


def linear_probe(
    weights: str | os.PathLike[str],
    data: str,
    layer: str = "fc7",
    *,
    datasets: tuple[Dataset, Dataset] | None = None,
    c: float = 1.0,
    scale: int | None = None,
    batch_size: int = 32,
    workers: int = 0,
    device: str = "auto",
    max_iter: int = 2000,
    progress: bool = True,
    fast: bool = False,
    cache: bool = True,
) -> ProbeResult:
    """Fit a logistic regression on the frozen network's `layer` features of `data`'s training split; test on val.

    `datasets`: (train, val) to use instead of opening `data` (which then only names them). `scale`: the
    shorter side before the centre crop (default: the weights' training S, else 256/224 of their input size).
    `fast` and `cache`: as `probe_features`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if c <= 0 or batch_size < 1 or workers < 0:
        raise ValueError(
            f"c must be positive, batch_size at least 1 and workers at least 0; got {c}, {batch_size}, {workers}"
        )
    path = resolve_weights(weights)
    model, meta = load_weights(path, device=pick_device(device))
    names = layer_names(model)
    if layer not in names:
        raise ValueError(f"--layer {layer!r} is no layer of these weights ({path}); accepted: {', '.join(names)}")
    scale = scale or train_scale(meta)[0]
    if scale < model.cfg.input_size:
        raise ValueError(f"--scale {scale} is smaller than the network's input size {model.cfg.input_size}")
    if datasets is None and Path(data, "train").is_dir() and not Path(data, "val").is_dir():
        raise ValueError(f"{data}: no val/ folder beside train/; a probe is tested on photos it was not fitted on")
    train_set, val_set = datasets or (open_dataset(data, "train"), open_dataset(data, "val"))
    if list(train_set.classes) != list(val_set.classes):
        raise ValueError(f"{data}: the validation classes differ from the training classes")
    check_class_sizes(train_set, data)
    start = time.perf_counter()
    model.eval()
    x_train, y_train, skipped = probe_features(
        model, meta.preprocessing, train_set, layer, scale, batch_size, workers, progress, fast=fast, cache=cache
    )
    x_val, y_val, skipped_val = probe_features(
        model, meta.preprocessing, val_set, layer, scale, batch_size, workers, progress, fast=fast, cache=cache
    )
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    classifier.fit(x_train, y_train)
    classes = list(train_set.classes)
    scores = torch.zeros(len(y_val), len(classes), dtype=torch.float64)
    scores[:, torch.as_tensor(classifier.classes_)] = torch.from_numpy(classifier.predict_proba(x_val)).double()
    labels = torch.from_numpy(y_val).long()
    conf = confusion_matrix(scores, labels)
    return ProbeResult(
        weights=str(path),
        config=model.cfg.display_name(with_width=True),
        layer=layer,
        dim=x_train.shape[1],
        data=str(data),
        class_names=classes,
        train_images=len(y_train),
        images=len(y_val),
        skipped=skipped + skipped_val,
        top1_error=topk_error(scores, labels, 1),
        top5_error=topk_error(scores, labels, 5),
        per_class_accuracy=per_class_accuracy(conf),
        confusion=conf.tolist(),
        c=c,
        scale=scale,
        seconds=time.perf_counter() - start,
        scores=scores.float(),
        labels=labels,
    )


def probe_table(results: list[ProbeResult]) -> str:
    """One row per probe, in the shape of `vggnet evaluate`'s table (errors in %; top-5 only with more than 5 classes)."""
    columns = error_columns(len(r.class_names) for r in results)
    header = ["ConvNet", "layer", "features", "test Q", "train images", "images"]
    header += [f"top-{k} err (%)" for k in columns]
    rows = [
        [r.config, r.layer, r.dim, r.scale, r.train_images, r.images,
         *error_cells({1: r.top1_error, 5: r.top5_error}, len(r.class_names), columns)]
        for r in results
    ]  # fmt: skip
    return markdown_table(header, rows)


def save_probe(result: ProbeResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write probe_<layer>.json and probe_<layer>.md (the table and per-class accuracy) into `out_dir`."""
    out, name = Path(out_dir), f"probe_{result.layer}"
    text = (
        f"# Linear probe of {result.config} at {result.layer} on {result.data}\n\n{probe_table([result])}\n\n"
        f"Logistic regression (C = {result.c:g}) on standardised features; {len(result.skipped)} unreadable "
        f"images skipped; {result.seconds:.1f} s.\n\n"
        + per_class_table(result.class_names, result.per_class_accuracy)
        + "\n"
    )
    return [
        write_text(out / f"{name}.json", json.dumps(result.to_dict(), indent=1) + "\n"),
        write_text(out / f"{name}.md", text),
    ]
