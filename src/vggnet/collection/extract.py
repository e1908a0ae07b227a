"""`embed`: one descriptor per photo of a collection, streamed into fixed-size shards on disk.

Loader processes decode and rescale the photos while the network runs on the batch before; each finished
shard is written at once (descriptors, then its index), so memory holds one shard whatever the collection's
size, a kill loses at most the shard in progress, and the same command run again goes on where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from ..analysis import activation_bytes
from ..configs import option
from ..data import rescale, to_uint8_tensor
from ..data.datasets import to_rgb
from ..devices import pick_device
from ..evaluate.networks import train_scale
from ..features import block_outputs, features_at, layer_names
from ..limits import ACTIVATION_BYTES
from ..model import VGG
from ..weights import Preprocessing, file_sha256, load_weights, resolve_weights
from . import store
from .descriptors import DESCRIPTORS, POOLED, l2n, pool
from .photos import Photos, list_photos, parse_part, part_from_environment, shard_count, shards_of_part

FC_LAYERS = ("fc6", "relu6", "fc7", "relu7")  # the classifier vectors `--descriptor fc7` may read


@dataclass
class EmbedConfig:
    """How to describe each photo of a collection (docs/collections.md)."""

    descriptor: str = option("gem", "fc7 | gap | mac | rmac (Tolias et al., 3 levels) | gem (generalised mean)")
    layer: str = option(
        "", "tap by the paper's name; empty: fc7 for --descriptor fc7, else the last conv ReLU (relu5_3)"
    )
    gem_p: float = option(3.0, "GeM's power p (1: average pooling; large: max pooling)")
    size: int = option(
        0, "each photo's shorter side is rescaled to this, then centre-cropped square; 0: the weights' S"
    )
    scales: tuple[float, ...] = option((1.0,), "multi-scale: the descriptor averaged over these factors of --size")
    shard_size: int = option(1000, "photos per shard file (a kill loses at most one shard's work)")
    shard: str = option(
        "", "i/N: this process takes part i of N (0-based); empty: RANK/WORLD_SIZE under torchrun, else all"
    )
    batch: int = option(32, "photos per forward pass")
    workers: int = option(2, "photo decoding processes (0: in the main process)")
    device: str = option("auto", "auto (cuda when available) | cpu | cuda | cuda:N | mps")
    fast: bool = option(False, "on a CPU: the 3x3 convs as Winograd layers, BatchNorm folded (as predict --fast)")
    verify: bool = option(True, "check the weights' content hashes on load (docs/weights.md)")

    def check(self) -> None:
        """One-line errors for values out of range."""
        if self.descriptor not in DESCRIPTORS:
            raise ValueError(f"--descriptor {self.descriptor!r}: accepted {', '.join(DESCRIPTORS)}")
        if self.gem_p <= 0 or self.size < 0 or self.shard_size < 1 or self.batch < 1 or self.workers < 0:
            raise ValueError(
                "--gem-p must be positive, --size at least 0, --shard-size and --batch at least 1, --workers at least 0"
            )
        if not self.scales or any(not 0 < s <= 4 for s in self.scales):
            raise ValueError(
                f"--scales {','.join(map(str, self.scales))}: factors of --size in (0, 4], e.g. 1,0.707,0.5"
            )
        if self.shard:
            parse_part(self.shard)


def descriptor_layer(model: VGG, cfg: EmbedConfig, source: str) -> str:
    """The tap a descriptor reads: --layer, or its default; a one-line error when the weights lack it."""
    names = layer_names(model)
    layer = cfg.layer or ("fc7" if cfg.descriptor == "fc7" else block_outputs(model)[-1])
    if layer not in names:
        why = f"{model.cfg.head} head" if layer.startswith(("fc", "relu6", "relu7")) else "no such layer"
        raise ValueError(
            f"--layer {layer}: the weights {source} have no layer {layer} ({why}); accepted: {', '.join(names)}"
        )
    if cfg.descriptor == "fc7" and layer not in FC_LAYERS:
        raise ValueError(f"--descriptor fc7 reads a classifier vector ({', '.join(FC_LAYERS)}), not {layer}")
    if cfg.descriptor in POOLED and layer not in model.feature_names:
        raise ValueError(f"--descriptor {cfg.descriptor} pools a conv layer's map, not {layer}; use --descriptor fc7")
    return layer


# -- decoding in the loader processes -----------------------------------------------------------------------


def load_photo(path: Path, size: int) -> torch.Tensor:
    """A photo as (3, size, size) uint8: shorter side rescaled to `size` (bilinear), centre crop.

    JPEGs are decoded at the smallest DCT scale still at least `size` (Pillow's draft), the rest in full.
    Raises OSError or ValueError for a file that is not a usable image.
    """
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        im.load()
        rgb = to_rgb(im)
    x = to_uint8_tensor(rescale(rgb, size))  # (3, H, W), min(H, W) = size
    top, left = (x.shape[1] - size) // 2, (x.shape[2] - size) // 2
    return x[:, top : top + size, left : left + size]


class _Photos(Dataset):
    """Planned photos by global index: (index, (3, size, size) uint8 or None, why it is unreadable)."""

    def __init__(self, photos: Photos, indices: Sequence[int], size: int) -> None:
        self.photos, self.indices, self.size = photos, list(indices), size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        index = self.indices[i]
        try:
            return index, load_photo(self.photos.full(self.photos.paths[index]), self.size), ""
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            return index, None, str(e).splitlines()[0] if str(e) else type(e).__name__


def _collate(items: list[tuple[int, torch.Tensor | None, str]]) -> tuple[list[int], torch.Tensor | None, list[str]]:
    good = [x for _, x, _ in items if x is not None]
    return [i for i, _, _ in items], torch.stack(good) if good else None, [why for _, _, why in items]


# -- the network ------------------------------------------------------------------------------------------


@dataclass
class Describer:
    """A network prepared to turn 0-1 RGB batches into L2-normalised descriptors, and what it was made from."""

    model: VGG
    preprocessing: Preprocessing
    layer: str
    cfg: EmbedConfig
    size: int
    settings: dict[str, Any]

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, size, size) uint8 -> (N, dim) float32, averaged over the scales (then L2-normalised again)."""
        device = next(self.model.parameters()).device
        x = x.to(device).float() / 255.0
        total = None
        for s in self.cfg.scales:
            side = max(8, round(self.size * s))
            xs = x if side == x.shape[-1] else F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
            xs = xs.contiguous(memory_format=torch.channels_last)
            f = features_at(self.model, xs, [self.layer], preprocessing=self.preprocessing)[self.layer]
            d = l2n(pool(f.float(), self.cfg.descriptor, self.cfg.gem_p))
            total = d if total is None else total + d
        return l2n(total / len(self.cfg.scales)).cpu()


def describer(weights: str | os.PathLike[str], cfg: EmbedConfig) -> Describer:
    """Load the weights and prepare them for `cfg` (a one-line error when they lack the layer asked for)."""
    cfg.check()
    path = resolve_weights(weights)
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))  # under torchrun: this rank's GPU
    model, meta = load_weights(path, device=device, verify=cfg.verify)
    layer = descriptor_layer(model, cfg, str(weights))
    size = cfg.size or train_scale(meta)[0]
    _check_activations(model, max(8, round(size * max(cfg.scales))))
    model = _prepared(model, layer, cfg.fast)
    settings = {
        "weights": str(path),
        "weights_sha256": meta.tensors_sha256 or file_sha256(path),
        "config": meta.model.display_name(with_width=True),
        "layer": layer,
        "descriptor": cfg.descriptor,
        "gem_p": cfg.gem_p if cfg.descriptor == "gem" else None,
        "size": size,
        "scales": list(cfg.scales),
    }
    return Describer(model, meta.preprocessing, layer, cfg, size, settings)


def _check_activations(model: VGG, side: int) -> None:
    """A one-line error when one photo at `side` x `side` would pass the activation budget (a huge --size)."""
    if side < 32:  # below any head's input: a few pixels, nothing to bound
        return
    with torch.device("meta"):  # shapes only; a gap head accepts any size
        shapes = VGG(dataclasses.replace(model.cfg, head="gap"))
    ACTIVATION_BYTES.check(
        activation_bytes(shapes, side, side), f"--size: one photo at {side}x{side}, its activations need"
    )


def _prepared(model: VGG, layer: str, fast: bool) -> VGG:
    """Eval mode, channels-last; with `fast` on a CPU, BN folded and the convs up to the tap as Winograd layers."""
    model = model.eval().to(memory_format=torch.channels_last)
    if not fast:
        return model
    from ..cpu.winograd import winogradify
    from ..optimize import fold_batchnorm

    model = fold_batchnorm(model)
    if next(model.parameters()).device.type != "cpu":
        return model
    if layer in model.feature_names:  # only the stack up to the tap: a pool fused after it would change the map
        depth = model.feature_names.index(layer) + 1
        model.features = winogradify(torch.nn.Sequential(*list(model.features)[:depth]))
        model.feature_names = model.feature_names[:depth]
    else:
        model.features = winogradify(model.features)
    return model


def settings_from(manifest: dict[str, Any], device: str = "auto", fast: bool = False) -> EmbedConfig:
    """The EmbedConfig a collection was made with (to describe a query the same way)."""
    s = manifest["settings"]
    return EmbedConfig(
        descriptor=s["descriptor"], layer=s["layer"], gem_p=s["gem_p"] or 3.0, size=s["size"],
        scales=tuple(s["scales"]), device=device, fast=fast,
    )  # fmt: skip


# -- the job ------------------------------------------------------------------------------------------------


@dataclass
class EmbedResult:
    """What one `embed` run did."""

    folder: Path
    photos: int  # planned, whole collection
    shards: int  # whole collection
    part: tuple[int, int]
    done_before: int  # shards of this part already on disk
    written: int  # shards written by this run
    embedded: int  # photos described by this run
    unreadable: list[str]  # by this run
    seconds: float
    complete: bool  # every shard of the collection is on disk


def embed(
    source: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    out: str | os.PathLike[str],
    cfg: EmbedConfig | None = None,
    progress: bool = True,
) -> EmbedResult:
    """Describe every photo of `source` (a folder, recursively, or a file list) into shards under `out`.

    Resumes: shards already in `out` are skipped (they must come from the same photos and settings).
    """
    from tqdm import tqdm

    cfg = cfg or EmbedConfig()
    cfg.check()
    start = time.perf_counter()
    photos = list_photos(source)
    part = parse_part(cfg.shard) if cfg.shard else part_from_environment()
    net = describer(weights, cfg)
    dim = int(net(torch.zeros(1, 3, net.size, net.size, dtype=torch.uint8)).shape[1])
    emb = store.begin(out, photos, store.manifest_for(photos, cfg.shard_size, net.settings, dim))
    shards = shard_count(len(photos.paths), cfg.shard_size)
    mine = shards_of_part(shards, part)
    todo = [k for k in mine if not store.shard_done(emb, k)]
    bounds = {k: (k * cfg.shard_size, min(len(photos.paths), (k + 1) * cfg.shard_size)) for k in todo}
    indices = [i for k in todo for i in range(*bounds[k])]
    loader = DataLoader(
        _Photos(photos, indices, net.size), batch_size=cfg.batch, num_workers=cfg.workers, collate_fn=_collate,
        prefetch_factor=4 if cfg.workers else None, persistent_workers=False,
    )  # fmt: skip
    bar = tqdm(total=len(indices), desc="embed", unit="img", disable=not progress, file=sys.stderr, smoothing=0.1)
    unreadable: list[str] = []
    pending: list[np.ndarray] = []  # descriptors of the shard in progress
    rows: list[int | None] = []
    written = kept = 0  # shards written; readable photos of the shard in progress
    for batch_indices, x, whys in loader:
        described = net(x).numpy() if x is not None else np.zeros((0, dim), np.float32)
        j = 0
        for index, why in zip(batch_indices, whys, strict=True):
            k = index // cfg.shard_size
            if why:
                bar.write(f"skipping unreadable image {photos.full(photos.paths[index])}: {why}", file=sys.stderr)
                unreadable.append(photos.paths[index])
                rows.append(None)
            else:
                rows.append(kept)
                pending.append(described[j])
                j, kept = j + 1, kept + 1
            if index == bounds[k][1] - 1:  # the shard's last photo: write it, start the next
                array = np.stack(pending) if pending else np.zeros((0, dim), np.float32)
                store.write_shard(emb, k, array, photos.paths[bounds[k][0] : bounds[k][1]], rows)
                pending, rows, written, kept = [], [], written + 1, 0
        bar.update(len(batch_indices))
    bar.close()
    return EmbedResult(
        folder=emb, photos=len(photos.paths), shards=shards, part=part, done_before=len(mine) - len(todo),
        written=written, embedded=len(indices) - len(unreadable), unreadable=unreadable,
        seconds=time.perf_counter() - start, complete=all(store.shard_done(emb, k) for k in range(shards)),
    )  # fmt: skip
