"""Evaluating a dataset: every image rescaled to every test scale, through one network or an ensemble."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..configs import EvalConfig
from ..data import BatchedImages, batch_loader, decode_device, item_name, open_dataset, rescale, to_uint8_tensor
from ..devices import pick_device
from ..imagenet import imagenet_classes, is_imagenet_labelled, looks_like_wnids, wnid_indices
from ..io import report, reporting_warnings
from ..metrics import confusion_matrix, per_class_accuracy, topk_error
from .networks import (
    Network,
    Plan,
    check_activations,
    check_classes,
    ensemble_posteriors,
    load_networks,
    read_networks,
    train_scale,
)


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
        img, label = reporting_warnings(lambda: self.dataset[j])
        if img is None:
            return None, label, j
        try:
            return {q: to_uint8_tensor(rescale(img, q)) for q in self.scales}, label, j
        except ValueError as e:  # a sliver that would rescale into a bomb
            report(f"skipping unusable image {item_name(self.dataset, j)}: {e}")
            return None, label, j


def _fits(networks: Sequence[Network], images: dict[int, torch.Tensor], flip: bool, dataset: Any, j: int) -> bool:
    """Whether the dense net's activations for an item's rescaled images stay within the budget; a line if not."""
    try:
        check_activations(networks, {q: (t.shape[-1], t.shape[-2]) for q, t in images.items()}, 2 if flip else 1)
    except ValueError as e:  # a thin image rescales into a very wide input
        report(f"skipping unusable image {item_name(dataset, j)}: {e}")
        return False
    return True


def _spread(n: int, limit: int) -> list[int]:
    """`limit` indices evenly spread over range(n) (all of them when limit is 0 or at least n)."""
    if limit == 0 or limit >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def imagenet_labels(plan: Plan, classes: list[str]) -> list[int] | None:
    """ImageNet indices of the data's class folders when they are wnids and every network is a 1000-class ImageNet net.

    None when the classes are matched by index as usual; a one-line error for wnid folders ImageNet lacks.
    """
    if not looks_like_wnids(classes) or not all(
        is_imagenet_labelled(m.model.num_classes, m.class_names) for _, m, _ in plan
    ):
        return None
    indices = wnid_indices(classes)
    if indices is None:
        unknown = next(c for c in classes if wnid_indices([c]) is None)
        raise ValueError(
            f"class folder {unknown!r} is no ImageNet-1k WordNet id; 1000-class weights know n01440764 ... n15075141"
        )
    return indices


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
    cfg.check()
    device = pick_device(cfg.device)
    decoder = decode_device(cfg.decode, device)  # None: PIL per image
    plan = read_networks(weights_or_runs, cfg.scales, cfg.verify)
    if isinstance(data_spec, (str, os.PathLike)):
        # The digits are drawn at the largest training scale, so every test scale rescales the same images;
        # image folders ignore the size.
        dataset = open_dataset(data_spec, cfg.split, size=max(train_scale(meta)[1] for _, meta, _ in plan))
    else:
        dataset, data_spec = data_spec, type(data_spec).__name__
    classes = list(dataset.classes)
    to_imagenet = imagenet_labels(plan, classes)  # wnid folders -> ImageNet indices, for 1000-class weights
    if to_imagenet is None:
        check_classes(plan, len(classes), f"data {data_spec!r} ({cfg.split})")
    networks = load_networks(plan, device, cfg.fast, cfg.verify, cfg.backend)
    for net in networks:
        if to_imagenet is None and net.meta.class_names and list(net.meta.class_names) != classes:
            report(f"warning: {net.source}: class names differ from the data's; classes are matched by index")
    all_scales = sorted({q for net in networks for q in net.scales})
    indices = _spread(len(dataset), cfg.limit)
    if decoder is None:
        loader = torch.utils.data.DataLoader(
            _Rescaled(dataset, indices, all_scales), batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=list
        )
    else:  # the same items, JPEGs decoded and rescaled in batches
        batched = BatchedImages(dataset, scales=all_scales, device=decoder, loud=True)
        loader = batch_loader(torch.utils.data.Subset(batched, indices), cfg.batch_size, workers=cfg.workers)
    probs, labels, skipped = [], [], []
    start = time.perf_counter()
    bar = tqdm(total=len(indices), unit="img", desc=f"evaluate {cfg.method}", disable=not progress, file=sys.stderr)
    # On a CPU the bar advances at least every few seconds: dense evaluation (seconds an image at full size) takes
    # one image at a time, the single-crop methods up to 8 (a batch of 8 still shares each FC weight read, which
    # batch 1 does not); other devices take the loader's whole batch, which they need to be kept busy.
    step = cfg.batch_size if device.type != "cpu" else 1 if "dense" in cfg.method else min(cfg.batch_size, 8)
    with torch.inference_mode():
        for batch in loader:
            readable = []
            for img, label, j in batch:
                if img is not None and ("dense" not in cfg.method or _fits(networks, img, cfg.flip, dataset, j)):
                    readable.append((img, label, j))
                else:
                    skipped.append(item_name(dataset, j))
                    bar.update(1)
            for k in range(0, len(readable), step):
                chunk = readable[k : k + step]
                images = {q: [item[0][q] for item in chunk] for q in all_scales}
                probs.append(ensemble_posteriors(networks, images, cfg))
                labels += [to_imagenet[item[1]] if to_imagenet is not None else item[1] for item in chunk]
                bar.update(len(chunk))
    bar.close()
    if not labels:
        raise ValueError(f"{data_spec}: no readable images to evaluate ({len(skipped)} unreadable)")
    p, y = torch.cat(probs), torch.tensor(labels)
    conf = confusion_matrix(p, y)
    per_class = per_class_accuracy(conf)
    if to_imagenet is not None:  # report the folder's classes: a 1000 x 1000 matrix would be mostly empty
        names = imagenet_classes()
        classes = [f"{w} {names[i]}" for w, i in zip(classes, to_imagenet, strict=True)]
        per_class, conf = [per_class[i] for i in to_imagenet], conf[to_imagenet][:, to_imagenet]
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
        per_class_accuracy=per_class,
        confusion=conf.tolist(),
        seconds=time.perf_counter() - start,
        probs=p,
        labels=y,
    )
