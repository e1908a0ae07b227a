"""The batched input path (`--decode cpu|gpu`): JPEG bytes from the loader, decoded and transformed a batch at a time.

Loader processes read each file's bytes and draw its augmentation from the JPEG header's size with the
generator the per-image path uses (seeded by seed, epoch, index), so crops, flips and colour shifts are the
same. A batch is then decoded by torchvision's `decode_jpeg` (nvJPEG on a GPU, libjpeg-turbo on the CPU)
and cropped, rescaled and mirrored by `resample.resize_boxes`, Pillow's resize done in int32, before the
colour offset is added: on the CPU the output equals the PIL path's bit for bit. Files that are not
RGB or greyscale JPEGs (PNG, CMYK, in-memory datasets) are decoded by PIL per image in the loader.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from ..io import reporting_warnings, silently
from .datasets import ImageFolder, item_name, to_rgb
from .resample import resize, resize_boxes
from .transforms import (
    Draw,
    EvalTransform,
    TensorItems,
    TrainTransform,
    Transformed,
    collate_skipping,
    rescaled_size,
    to_uint8_tensor,
)

# (JPEG bytes (N,) or decoded RGB (3, H, W) uint8, or None if unreadable; label; index; the image's draw)
Raw = tuple[torch.Tensor | None, int, int, Draw | None]
Batch = tuple[torch.Tensor | None, torch.Tensor, list[int]]  # as collate_skipping: images, labels, skipped indices
Rescaled = tuple[dict[int, torch.Tensor] | None, int, int]  # evaluation: {Q: uint8 (3, H, W)}, label, index

JPEG_MAGIC = b"\xff\xd8\xff"


def decode_device(decode: str, device: torch.device) -> torch.device | None:
    """Where `--decode` decodes: None for the per-image PIL path, the CPU, or the job's CUDA device."""
    if decode == "pil":
        return None
    if decode == "cpu":
        return torch.device("cpu")
    if decode == "gpu":
        if device.type != "cuda":
            why = "this machine has no CUDA GPU" if not torch.cuda.is_available() else f"the job runs on {device}"
            raise ValueError(f"--decode gpu decodes on the job's CUDA device, but {why}; use --decode cpu or pil")
        return device
    raise ValueError(f"--decode {decode!r}: accepted pil, cpu, gpu")


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of an RGB or greyscale JPEG; None for anything PIL should decode."""
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            return im.size if im.format in ("JPEG", "MPO") and im.mode in ("RGB", "L") else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def read_raw(base: Dataset, index: int) -> tuple[torch.Tensor | None, int, tuple[int, int] | None]:
    """(JPEG bytes or PIL-decoded uint8 (3, H, W) or None, label, (width, height)) of one dataset item."""
    if isinstance(base, ImageFolder):
        path, label = base.samples[index]
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
            return None, label, None
        size = jpeg_size(data)
        if size is not None:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), label, size
    image, label = base[index]  # PIL: other formats and in-memory datasets
    if image is None:
        return None, label, None
    return to_uint8_tensor(image), label, image.size


class BatchedImages(Dataset):
    """A dataset's items for batched decoding; `collate` (in the loader) or `finish` (on the GPU) makes the batch.

    With `transform` (TrainTransform or EvalTransform) a batch is crops as the per-image path gives them:
    (images (N, 3, crop, crop) float, labels, skipped indices). With `scales` instead it is, per item, the
    whole image rescaled to every test scale (evaluation). `loud`: unreadable files reported as warnings.
    `adapt`: applied to every batch of crops (a fine-tune's channel order and scale, train.finetune.InputAdapter).
    """

    def __init__(
        self,
        base: Dataset,
        transform: TrainTransform | EvalTransform | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        scales: Sequence[int] = (),
        loud: bool = False,
        adapt: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if (transform is None) == (not scales):
            raise ValueError("BatchedImages takes either a transform (crops) or scales (whole images)")
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0
        self.device, self.scales, self.loud, self.adapt = torch.device(device), list(scales), loud, adapt

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def _quietly(self, call: Callable[[], Any]) -> Any:
        return reporting_warnings(call) if self.loud else silently(call)  # training reports skipped files itself

    def __getitem__(self, index: int) -> Raw:
        payload, label, size = self._quietly(lambda: read_raw(self.base, index))
        if payload is None or self.transform is None:
            return payload, label, index, None
        rng = np.random.default_rng([self.seed, self.epoch, index])  # as Transformed: same seed, same crop
        return payload, label, index, self.transform.draw(size, rng)

    def collate(self, items: list[Raw]) -> Any:
        """In a loader process: the finished batch when decoding on the CPU, else the raw items for `finish`."""
        return self.finish(items) if self.device.type == "cpu" else items

    def finish(self, items: list[Raw]) -> Batch | list[Rescaled]:
        """Decode the batch on this dataset's device, then crop (a Batch) or rescale to every scale."""
        images = self._quietly(
            lambda: decode([p for p, *_ in items], self.device, [item_name(self.base, i) for _, _, i, _ in items])
        )
        if self.scales:
            return [
                (None if im is None else rescaled(im, self.scales), y, i)
                for im, (_, y, i, _) in zip(images, items, strict=True)
            ]
        good = [(im, y, draw) for im, (_, y, _, draw) in zip(images, items, strict=True) if im is not None]
        skipped = [i for im, (_, _, i, _) in zip(images, items, strict=True) if im is None]
        labels = torch.tensor([y for _, y, _ in good], dtype=torch.long)
        if not good:
            return None, labels, skipped
        x = crops([im for im, _, _ in good], [d for _, _, d in good])
        return (x if self.adapt is None else self.adapt(x)), labels, skipped


def decode(
    payloads: Sequence[torch.Tensor | None], device: torch.device, names: Sequence[str]
) -> list[torch.Tensor | None]:
    """Uint8 (3, H, W) images on `device`: JPEG bytes decoded together, decoded images moved; None stays None.

    A JPEG that the decoder refuses is tried once more with PIL; one that PIL refuses too is None, with a
    warning naming it.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[torch.Tensor | None] = [p.to(device) if p is not None and p.dim() == 3 else None for p in payloads]
    jpegs = [i for i, p in enumerate(payloads) if p is not None and p.dim() == 1]
    if not jpegs:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec; still supported

        def one(i: int) -> torch.Tensor | None:
            try:
                return decode_jpeg(payloads[i], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                return None

        decoded: list[torch.Tensor | None]
        try:
            # On a GPU one call decodes the whole batch; it fails as a whole, so a bad file is then found alone.
            decoded = list(decode_jpeg([payloads[i] for i in jpegs], mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            decoded = [one(i) for i in jpegs]
    for i, image in zip(jpegs, decoded, strict=True):
        out[i] = image if image is not None else pil_decode(payloads[i], names[i], device)
    return out


def pil_decode(data: torch.Tensor, name: str, device: torch.device) -> torch.Tensor | None:
    """PIL's decoding of JPEG bytes the batched decoder refused; None (with a warning) if PIL refuses them too."""
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            im.load()
            return to_uint8_tensor(to_rgb(im)).to(device)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        warnings.warn(f"skipping unreadable image {name}: {e}", stacklevel=2)
        return None


def crops(images: Sequence[torch.Tensor], draws: Sequence[Draw]) -> torch.Tensor:
    """Each image's draw applied as the per-image path does: float (B, 3, crop, crop), 0-255 plus offset."""
    side = draws[0].crop
    boxes = [d.box((im.shape[2], im.shape[1])) for im, d in zip(images, draws, strict=True)]
    x = resize_boxes(images, boxes, (side, side), [d.flip for d in draws]).float()  # (B, 3, crop, crop)
    offset = torch.from_numpy(np.stack([d.offset for d in draws])).to(x.device)  # (B, 3) float32
    return x.add_(offset[:, :, None, None])


def rescaled(image: torch.Tensor, scales: Sequence[int]) -> dict[int, torch.Tensor]:
    """The whole image with its shorter side rescaled to each Q, as `transforms.rescale` does: {Q: uint8 (3, H, W)}."""
    h, w = image.shape[1:]
    return {q: resize(image, rescaled_size((w, h), q)) for q in scales}


class BatchLoader:
    """Raw batches from loader processes, finished in this process (CUDA cannot be forked), one batch ahead.

    On a GPU the next batch is decoded and transformed on a side stream while the current one trains, so
    the decoder's copies and kernels do not wait behind the training step's.
    """

    def __init__(self, loader: DataLoader, dataset: BatchedImages) -> None:
        self.loader, self.dataset = loader, dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        cuda = self.dataset.device.type == "cuda"
        side = torch.cuda.Stream(self.dataset.device) if cuda else None
        pending = None
        for items in self.loader:
            with torch.cuda.stream(side) if cuda else contextlib.nullcontext():
                batch = self.dataset.finish(items)
            if pending is not None:
                yield handed_over(pending, side)
            pending = batch
        if pending is not None:
            yield handed_over(pending, side)


def handed_over(batch: Any, side: torch.cuda.Stream | None) -> Any:
    """`batch`, made on the side stream, safe to use on the current stream (ordered, and its memory kept alive)."""
    if side is None:
        return batch
    current = torch.cuda.current_stream(side.device)
    current.wait_stream(side)

    def keep(x: Any) -> None:
        if isinstance(x, torch.Tensor) and x.is_cuda:
            x.record_stream(current)  # the allocator must not reuse it until the current stream is done with it
        elif isinstance(x, (list, tuple)):
            for item in x:
                keep(item)
        elif isinstance(x, dict):
            for item in x.values():
                keep(item)

    keep(batch)
    return batch


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Iterable[int] | None = None,
    workers: int = 0,
    pin_memory: bool = False,
    generator: torch.Generator | None = None,
) -> Iterable[Any]:
    """Batches of a Transformed, TensorItems or BatchedImages dataset (or a Subset of one), every path behind one call."""
    inner = dataset.dataset if isinstance(dataset, Subset) else dataset
    if not isinstance(inner, BatchedImages):
        kinds = (Transformed, TensorItems)
        assert isinstance(inner, kinds), (
            f"batch_loader takes Transformed, TensorItems or BatchedImages, not {type(inner)}"
        )
        workers = 0 if isinstance(inner, TensorItems) else workers  # tensors in memory: no process to start
        return DataLoader(
            dataset, batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_skipping,
            pin_memory=pin_memory, generator=generator,
        )  # fmt: skip
    on_cpu = inner.device.type == "cpu"
    loader = DataLoader(
        dataset, batch_size, sampler=sampler, num_workers=workers, collate_fn=inner.collate,
        pin_memory=pin_memory and on_cpu, generator=generator,
    )  # fmt: skip
    return loader if on_cpu else BatchLoader(loader, inner)
