"""A linear probe: a frozen network's features at one named layer, and a linear classifier fitted on them.

The fastest baseline on a new dataset: every training image goes once through the network (rescaled
to the weights' training scale S, centre crop of their input size, their own preprocessing), a conv
tap is global-average-pooled to one value per channel, and a multinomial logistic regression
(scikit-learn, on standardised features) is fitted on the training split and tested on the validation
split, reported like `vggnet evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data import item_name, open_dataset, rescale, to_uint8_tensor
from .devices import pick_device
from .evaluate.networks import train_scale
from .evaluate.protocol import grid_positions
from .features import features_at, layer_names
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


def probe_features(
    model: VGG,
    pre: Preprocessing,
    dataset: Dataset,
    layer: str,
    scale: int,
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features (N, D), labels (N,), unreadable items) of a dataset at `layer`; conv taps are averaged over space."""
    from tqdm import tqdm

    device = next(model.parameters()).device
    loader = DataLoader(_Crops(dataset, scale, model.cfg.input_size), batch_size, num_workers=workers, collate_fn=list)
    feats, labels, skipped = [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"features {layer}", unit="batch", disable=not progress, file=sys.stderr):
            skipped += [item_name(dataset, i) for x, _, i in batch if x is None]
            good = [(x, y) for x, y, _ in batch if x is not None]
            if not good:
                continue
            x = torch.stack([x for x, _ in good]).to(device).float() / 255.0
            f = features_at(model, x, [layer], preprocessing=pre)[layer]
            f = f.mean(dim=(2, 3)) if f.dim() == 4 else f  # (N, C): one value per channel of a conv tap
            feats.append(f.float().cpu().numpy())
            labels += [y for _, y in good]
    if not labels:
        raise ValueError(f"no readable image among the {len(dataset)} of the dataset")
    return np.concatenate(feats), np.asarray(labels), skipped


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
    device: str = "cpu",
    max_iter: int = 2000,
    progress: bool = True,
) -> ProbeResult:
    """Fit a logistic regression on the frozen network's `layer` features of `data`'s training split; test on val.

    `datasets`: (train, val) to use instead of opening `data` (which then only names them). `scale`: the
    shorter side before the centre crop (default: the weights' training S, else 256/224 of their input size).
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
        model, meta.preprocessing, train_set, layer, scale, batch_size, workers, progress
    )
    x_val, y_val, skipped_val = probe_features(
        model, meta.preprocessing, val_set, layer, scale, batch_size, workers, progress
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
