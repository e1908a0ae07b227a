"""A frozen front of the network: run as inference on the fast path, its outputs cached on disk when its input is fixed.

Layers fixed from conv1_1 up to some layer L (`vggnet train --freeze conv1_1-L`, or the layer a linear
probe reads) make everything up to L a constant function of the image. That prefix runs in eval mode
under `inference_mode`, BatchNorm folded, channels-last, and on a CPU as Winograd convs and the compiled
FC kernels (`optimize.py`, `cpu/`): Dropout inside it is off, as in any inference. When the images
reaching it are the same every epoch (a centre crop, no flip or colour shift), its outputs are computed
once and kept in `cache_root()/frozen/` ($VGGNET_FROZEN_CACHE moves it), keyed by the prefix's weights, the data files (paths, sizes,
modification times, labels) and the preprocessing; a later run or probe on the same data reads them back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .model import VGG

CACHE_VERSION = 1  # bump when what a cache file holds, or how a prefix computes it, changes


class SpatialMean(nn.Module):
    """The conv head's last step: class scores averaged over the score map, (N, C, h, w) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def stages(model: VGG) -> list[tuple[str, nn.Module]]:
    """The network's forward as named steps, input to output: features, then the head's steps.

    Names are the paper's (`features.layer_names`): an fc or gap head adds "avgpool" and "flatten" before
    its classifier; a conv head runs its classifier's convs over the feature map, then "mean".
    """
    steps = list(zip(model.feature_names, model.features, strict=True))
    head = list(zip(model.classifier_names, model.classifier, strict=True))
    if model.cfg.head == "conv":
        return steps + head + [("mean", SpatialMean())]
    return steps + [("avgpool", model.avgpool), ("flatten", nn.Flatten(1))] + head


def prefix_length(model: VGG, frozen: Iterable[str]) -> int:
    """How many leading `stages` lie before the first weight layer not in `frozen` (0: none is frozen from conv1_1).

    A Dropout just before that layer stays outside the prefix: it is part of the training of what follows.
    """
    frozen = set(frozen)
    steps = stages(model)
    weighted = [i for i, (name, _) in enumerate(steps) if name.startswith(("conv", "fc"))]
    first = next((i for i in weighted if steps[i][0] not in frozen), len(steps))
    while first > 0 and isinstance(steps[first - 1][1], nn.Dropout):
        first -= 1
    return first if any(i < first for i in weighted) else 0


def span(names: list[str]) -> str:
    """The weight layers among stage names, first-last: "conv1_1-fc7"."""
    weighted = [n for n in names if n.startswith(("conv", "fc"))]
    return f"{weighted[0]}-{weighted[-1]}"


def folds(model: VGG, n: int, fast: bool) -> bool:
    """Whether `Prefix(model, n, fast)` takes the fast path: not when it ends on a conv whose BatchNorm folding would pass."""
    return fast and not (model.cfg.batch_norm and stages(model)[n - 1][0].startswith("conv"))


class Prefix(nn.Module):
    """The first `n` stages of a VGG as an inference-only module; its outputs are ordinary tensors (no autograd).

    `fast`: a copy with BatchNorm folded, channels-last and, on a CPU, Winograd convs and the compiled FC
    kernels (outputs within about 1e-5 of their scale); otherwise the model's own modules, in eval mode.
    """

    def __init__(self, model: VGG, n: int, fast: bool = True) -> None:
        super().__init__()
        from .optimize import fold_batchnorm

        steps = stages(model)[:n]
        self.names = [name for name, _ in steps]
        device = next(model.parameters()).device
        fast = folds(model, n, fast)
        source = fold_batchnorm(model) if fast else model  # fold_batchnorm copies; the model is left as it is
        kept = [(name, m) for name, m in stages(source) if name in self.names]
        if fast:
            source.to(memory_format=torch.channels_last)
        convs = nn.Sequential(*[m for name, m in kept if name in source.feature_names])
        head = nn.Sequential(*[m for name, m in kept if name not in source.feature_names])
        if fast and device.type == "cpu":
            from .cpu import compiled
            from .cpu.fc_layers import float32_classifier
            from .cpu.winograd import winogradify

            convs = winogradify(convs)  # fuses a ReLU or pool into a conv only where both are inside the prefix
            if compiled.kernels() is not None and any(isinstance(m, nn.Linear) for m in head):
                head = float32_classifier(head)
        self.fast, self.device = fast, device
        self.convs, self.head = convs.eval().requires_grad_(False), head.eval().requires_grad_(False)

    @property
    def last(self) -> str:
        """The paper's name of the prefix's last step (its output)."""
        return self.names[-1]

    @property
    def span(self) -> str:
        """Its weight layers in the paper's names, first-last: "conv1_1-fc7"."""
        return span(self.names)

    def train(self, mode: bool = True) -> Prefix:
        return super().train(False)  # always inference (Dropout off, BatchNorm on its running statistics)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.convs[0] if len(self.convs) else None
        with torch.inference_mode(), torch.autocast(x.device.type, enabled=False):
            if self.fast and x.dim() == 4 and type(first).__name__ != "SmallConv2d":
                x = x.contiguous(memory_format=torch.channels_last)  # conv1_1's compiled kernel reads NCHW itself
            y = self.head(self.convs(x.float()))
        return y.clone()  # out of inference mode: the trained layers may save it for their backward pass


class Rest(nn.Module):
    """Stages `n` onward of a VGG: the part that trains; its parameters are the model's own (shared, not copied)."""

    def __init__(self, model: VGG, n: int) -> None:
        super().__init__()
        self.steps = nn.ModuleList([m for _, m in stages(model)[n:]])

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            f = step(f)
        return f


class Split(nn.Module):
    """The whole network as `Prefix` (inference, fast path) then `Rest` (trained): the same logits as the model's."""

    def __init__(self, prefix: Prefix, rest: Rest) -> None:
        super().__init__()
        self.prefix, self.rest = prefix, rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.prefix(x))


# -- outputs computed once ------------------------------------------------------------------------------


@dataclass
class Outputs:
    """A prefix's outputs for every item of a dataset, in dataset order; unreadable items hold zeros."""

    values: torch.Tensor  # (N, ...) float32
    readable: torch.Tensor  # (N,) bool
    labels: torch.Tensor  # (N,) int64


def data_files(dataset: Dataset) -> list[list[Any]] | None:
    """(path, label, size, modification time in ns) of each item of an image folder; None for other datasets."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return None
    files = []
    for path, label in samples:
        try:
            st = Path(path).stat()
            files.append([str(path), int(label), st.st_size, st.st_mtime_ns])
        except OSError:  # gone since the folder was scanned: it will read as unreadable, which the key records
            files.append([str(path), int(label), -1, -1])
    return files


def cache_key(prefix_state: dict[str, torch.Tensor], files: list[list[Any]], settings: dict[str, Any]) -> str:
    """sha256 of the prefix's weights, the data files and the preprocessing `settings` (anything JSON-serialisable)."""
    from .weights.integrity import digest

    h = hashlib.sha256()
    h.update(digest(prefix_state).encode())
    h.update(json.dumps({"files": files, "settings": settings, "version": CACHE_VERSION}, sort_keys=True).encode())
    return h.hexdigest()


def prefix_state(model: VGG, n: int) -> dict[str, torch.Tensor]:
    """The state of the first `n` stages of `model` (what a cache of their outputs depends on)."""
    state: dict[str, torch.Tensor] = {}
    for name, module in stages(model)[:n]:
        state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    return state


def compute_outputs(
    prefix: nn.Module, items: Dataset, batch_size: int = 32, workers: int = 0, progress: bool = False, desc: str = ""
) -> Outputs:
    """Run `prefix` (a `Prefix`, or a module with its `device`) over (input or None, label, index) items, a bar step per image."""
    from tqdm import tqdm

    device = prefix.device
    # its own generator: a loader draws a seed, which must not move the global RNG (dropout) whether or not a cache is read
    loader = DataLoader(items, batch_size, num_workers=workers, collate_fn=list, generator=torch.Generator())
    values: torch.Tensor | None = None
    n = len(items)
    readable = torch.zeros(n, dtype=torch.bool)
    labels = torch.zeros(n, dtype=torch.long)
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, file=sys.stderr, leave=False) as bar:
        for batch in loader:
            for _, y, i in batch:
                labels[i] = y
            good = [(x, i) for x, _, i in batch if x is not None]
            if good:
                y = prefix(torch.stack([x for x, _ in good]).to(device)).float().cpu()
                if values is None:
                    values = torch.zeros((n, *y.shape[1:]), dtype=torch.float32)
                index = torch.tensor([i for _, i in good])
                values[index], readable[index] = y, True
            bar.update(len(batch))
    if values is None:
        raise ValueError(f"no readable image among the {n} of the dataset")
    return Outputs(values, readable, labels)


def output_shape(model: VGG, n: int, side: int) -> tuple[int, ...]:
    """The shape of one item's output of the first `n` stages for a side x side input (shapes only, on the meta device)."""
    with torch.device("meta"):
        x = torch.zeros(1, 3, side, side)
        for _, step in stages(VGG(model.cfg).eval())[:n]:
            x = step(x)
    return tuple(x.shape[1:])


def read_cached(path: Path, labels: list[int], shape: tuple[int, ...]) -> Outputs:
    """A cache file's outputs, checked to be what the prefix gives on this dataset; a one-line ValueError otherwise.

    The file may be damaged, or written by someone else into a shared cache folder: before torch reads it, its
    records may declare no more than the outputs of these items take; then it must hold exactly the three
    tensors, of the items' count, output shape and dtypes, the dataset's labels, finite values where readable
    and zeros where not. (Values forged with all of that right cannot be told from computed ones.)
    """
    import zipfile

    from .limits import FROZEN_CACHE_BYTES
    from .weights.torchvision import torch_load

    n = len(labels)
    expected = n * (4 * math.prod(shape) + 1 + 8)  # values float32, readable bool, labels int64
    try:
        with zipfile.ZipFile(path) as z:  # what torch.save writes; the older format is never ours
            declared = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a cache file vggnet writes ({str(e)[:120]})") from None
    if declared > expected + (64 << 10):  # the tensors, and a pickle of a few hundred bytes
        raise ValueError(f"{path}: its records declare {declared} bytes; the outputs of {n} items take {expected}")
    saved = torch_load(path, FROZEN_CACHE_BYTES, "unreadable cache file")
    if not (isinstance(saved, dict) and set(saved) == {"values", "readable", "labels"}) or not all(
        isinstance(t, torch.Tensor) for t in saved.values()
    ):
        raise ValueError(f"{path}: not the values, readable and labels tensors of a cache file")
    v, r, y = saved["values"], saved["readable"], saved["labels"]
    if v.dtype != torch.float32 or tuple(v.shape) != (n, *shape):
        raise ValueError(f"{path}: values are {v.dtype} {tuple(v.shape)}, expected float32 {(n, *shape)}")
    if r.dtype != torch.bool or tuple(r.shape) != (n,) or not r.any():
        raise ValueError(f"{path}: readable is {r.dtype} {tuple(r.shape)}, expected a mask of {n} with one true")
    if y.dtype != torch.int64 or y.tolist() != labels:
        raise ValueError(f"{path}: labels are not the dataset's")
    if not torch.isfinite(v[r]).all() or v[~r].any():
        raise ValueError(f"{path}: values that are not finite, or not zero for an unreadable item")
    return Outputs(v, r, y)


def cache_path(key: str) -> Path:
    """Where the outputs of one key are kept: $VGGNET_FROZEN_CACHE/<key>.pt, else cache_root()/frozen/<key>.pt."""
    from .download import cache_root

    folder = os.environ.get("VGGNET_FROZEN_CACHE") or cache_root() / "frozen"
    return Path(folder).expanduser() / f"{key}.pt"


def cached_outputs(
    prefix: nn.Module | Callable[[], nn.Module],
    items: Dataset,
    base: Dataset,
    settings: dict[str, Any],
    *,
    state: dict[str, torch.Tensor],
    shape: tuple[int, ...],
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = False,
    desc: str = "",
) -> tuple[Outputs, str]:
    """`compute_outputs`, read from the disk cache when the same weights, files and settings were seen before.

    `prefix` may be a function that builds it, called only when the outputs are not on disk. `base` is the
    dataset under `items` (its file list keys the cache); a dataset without files (digits, CIFAR) is computed
    each time. `shape`: one item's output shape (`output_shape`), which a cache file must hold. A damaged file
    is reported in one line and computed again. Returns the outputs and what happened ("computed", "read PATH",
    "wrote PATH").
    """
    from .io import atomic_write, report
    from .limits import FROZEN_CACHE_BYTES

    def run() -> Outputs:
        module = prefix if isinstance(prefix, nn.Module) else prefix()
        return compute_outputs(module, items, batch_size, workers, progress, desc)

    files = data_files(base)
    if files is None:
        return run(), "computed (no file list to key a cache)"
    path = cache_path(cache_key(state, files, settings))
    if path.is_file():
        try:
            return read_cached(path, [f[1] for f in files], shape), f"read {path}"
        except (ValueError, OSError) as e:  # damaged or foreign: said, computed again and rewritten below
            report(f"frozen cache: {str(e).splitlines()[0] if str(e) else type(e).__name__} (computing it again)")
    out = run()
    size = out.values.numel() * out.values.element_size()
    if size > FROZEN_CACHE_BYTES.value():
        return out, f"computed (not cached: {size / 2**20:.0f} MiB is over the cache's limit {FROZEN_CACHE_BYTES.env})"
    path.parent.mkdir(parents=True, exist_ok=True)
    state_out = {"values": out.values, "readable": out.readable, "labels": out.labels}
    try:

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                torch.save(state_out, f)

        atomic_write(path, write)
    except OSError as e:  # a full or read-only cache folder costs the next run time, not this one its result
        return out, f"computed (not cached: {path}: {e.strerror or e})"
    return out, f"wrote {path} ({size / 2**20:.1f} MiB)"
