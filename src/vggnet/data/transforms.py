"""Section 3.1's training transforms and the per-epoch validation crop, seeded per image.

Isotropic rescale of the shorter side to S (fixed or jittered per image), one random crop, random
flip, AlexNet's PCA colour shift, and subtraction of the training set's mean RGB.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..io import report, reporting_warnings, silently
from .datasets import open_image
from .stats import RGBStats


def rescaled_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) of an image of `size` after an isotropic rescale of its shorter side to `shorter`."""
    w, h = size
    if min(w, h) == shorter:
        return w, h
    if w <= h:
        return shorter, max(shorter, round(h * shorter / w))
    return max(shorter, round(w * shorter / h)), shorter


def check_rescale(size: tuple[int, int], shorter: int) -> None:
    """Raise a ValueError when rescaling an image of `size` to `shorter` would pass Pillow's decompression-bomb limit.

    A sliver of an image (20000x1, a few bytes of PNG) rescaled to a shorter side of 256 would be 5 G pixels.
    """
    w, h = rescaled_size(size, shorter)
    limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None  # where Pillow refuses to decode
    if limit is not None and w * h > limit:
        raise ValueError(
            f"{size[0]}x{size[1]} pixels rescaled to a shorter side of {shorter} would be {w}x{h}, over the "
            f"decompression-bomb limit of {limit:,} pixels"
        )


def open_rescalable(path: str | os.PathLike[str], sides: Sequence[int]) -> Image.Image | None:
    """`open_image(path)`, or None (after one line on stderr) when it is unreadable or rescaling it to one of
    `sides` would pass the decompression-bomb limit (`check_rescale`): what predict and features skip."""
    image = reporting_warnings(lambda: open_image(path))
    try:
        for side in sides if image is not None else ():
            check_rescale(image.size, side)
    except ValueError as e:  # a sliver that would rescale into a bomb
        report(f"skipping unusable image {path}: {e}")
        return None
    return image


def rescale(image: Image.Image, shorter: int) -> Image.Image:
    """Isotropic rescale so the shorter side is `shorter` pixels (bilinear, antialiased); see `check_rescale`."""
    check_rescale(image.size, shorter)
    size = rescaled_size(image.size, shorter)
    return image if size == image.size else image.resize(size, Image.BILINEAR)


def crop_box(size: tuple[int, int], shorter: int, x0: int, y0: int, crop: int) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom) in source pixels of the crop x0, y0, crop x crop of `rescale`'s output."""
    w, h = size
    rw, rh = rescaled_size(size, shorter)
    sx, sy = w / rw, h / rh
    return x0 * sx, y0 * sy, min(w, (x0 + crop) * sx), min(h, (y0 + crop) * sy)  # min: float rounding at the edge


def rescaled_crop(image: Image.Image, shorter: int, x0: int, y0: int, crop: int) -> Image.Image:
    """The crop x0, y0, crop x crop of `rescale(image, shorter)`, computing only the crop's pixels.

    Pillow's resize takes a source box and maps output pixel x to source centre box0 + (x + 0.5) * scale,
    reading filter support outside the box, so resizing the crop's preimage to crop x crop gives the pixels
    the whole rescale would have given there (up to float rounding: at most 1 of 255, rarely), at a
    fraction of the work: a 224 crop of a 683x512 rescale resizes 50k pixels, not 350k.
    """
    if rescaled_size(image.size, shorter) == image.size:
        return image.crop((x0, y0, x0 + crop, y0 + crop))
    return image.resize((crop, crop), Image.BILINEAR, box=crop_box(image.size, shorter, x0, y0, crop))


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> (3, H, W) uint8 tensor (kept 8-bit until it reaches the device)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def pixel_offset(mean: Sequence[float], shift: np.ndarray | None = None) -> np.ndarray:
    """(3,) float32 added to every pixel: minus the mean RGB, plus a per-image colour shift."""
    offset = -np.asarray(mean, dtype=np.float32)
    return offset if shift is None else offset + shift.astype(np.float32)


def to_tensor_minus_mean(image: Image.Image, mean: Sequence[float], shift: np.ndarray | None = None) -> torch.Tensor:
    """8-bit RGB image -> float (3, H, W) in 0-255 minus the mean RGB (plus a per-image colour shift)."""
    return to_tensor_plus(image, pixel_offset(mean, shift))


def to_tensor_plus(image: Image.Image, offset: np.ndarray) -> torch.Tensor:
    """8-bit RGB image -> float (3, H, W) in 0-255 plus a (3,) float32 offset."""
    a = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(a + offset).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class Draw:
    """One image's augmentation: rescale to S, the crop at x0, y0 of the rescaled image, mirror, pixel offset.

    Drawn once per image from its size and generator, applied by the per-image PIL path (`apply`) or by the
    batched path (`vggnet.data.batched`), so both give the same crops, flips and colour shifts.
    """

    scale: int  # S, the rescaled shorter side
    x0: int
    y0: int
    crop: int
    flip: bool
    offset: np.ndarray  # (3,) float32: minus the mean RGB, plus the PCA colour shift

    def box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The crop's preimage in an image of `size` (width, height)."""
        return crop_box(size, self.scale, self.x0, self.y0, self.crop)

    def apply(self, image: Image.Image) -> torch.Tensor:
        """The per-image path: float (3, crop, crop) from a PIL image."""
        image = rescaled_crop(image, self.scale, self.x0, self.y0, self.crop)
        if self.flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor_plus(image, self.offset)


@dataclass
class TrainTransform:
    """Section 3.1: rescale to S ~ U[Smin, Smax], random crop, random flip, PCA colour shift, minus mean RGB."""

    scale: tuple[int, int]  # (Smin, Smax); equal for a fixed S
    crop: int
    stats: RGBStats
    color_shift: float = 0.1  # std of the coefficients alpha_i
    flip: bool = True

    def draw(self, size: tuple[int, int], rng: np.random.Generator) -> Draw:
        """The random numbers of one image of `size`, in a fixed order: S, x0, y0, flip, alpha."""
        s = int(rng.integers(self.scale[0], self.scale[1] + 1))
        w, h = rescaled_size(size, s)
        if min(w, h) < self.crop:
            raise ValueError(f"crop {self.crop} is larger than the rescaled image ({w}x{h})")
        x0, y0 = int(rng.integers(0, w - self.crop + 1)), int(rng.integers(0, h - self.crop + 1))
        flip = bool(self.flip and rng.random() < 0.5)
        shift = None
        if self.color_shift > 0:
            # AlexNet: add sum_i alpha_i * sqrt(lambda_i) * p_i, alpha_i ~ N(0, sigma). The shift is in pixel
            # units, so each component is scaled by its standard deviation sqrt(lambda_i), not lambda_i.
            alpha = rng.normal(0.0, self.color_shift, 3)
            shift = np.asarray(self.stats.eigvec) @ (alpha * np.sqrt(self.stats.eigval))
        return Draw(s, x0, y0, self.crop, flip, pixel_offset(self.stats.mean, shift))

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        return self.draw(image.size, rng).apply(image)


@dataclass
class EvalTransform:
    """Rescale the shorter side to Q, take the centre crop, subtract the mean RGB (per-epoch validation)."""

    size: int
    crop: int
    mean: Sequence[float]

    def draw(self, size: tuple[int, int], rng: np.random.Generator | None = None) -> Draw:
        """The centre crop of an image of `size` (nothing random)."""
        w, h = rescaled_size(size, self.size)
        x0, y0 = (w - self.crop) // 2, (h - self.crop) // 2
        return Draw(self.size, x0, y0, self.crop, False, pixel_offset(self.mean))

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        return self.draw(image.size).apply(image)


Item = tuple[torch.Tensor | None, int, int]  # (image tensor or None if unreadable, label, index)


class Transformed(torch.utils.data.Dataset):
    """Applies a transform to a dataset's images; unreadable items come out as (None, label, index).

    The random numbers of item i in epoch e come from a generator seeded with (seed, e, i), so an
    epoch's augmentation does not depend on worker count, process count or where a run resumed.
    """

    def __init__(
        self,
        base: torch.utils.data.Dataset,
        transform: Callable[[Image.Image, np.random.Generator], torch.Tensor],
        seed: int = 0,
    ) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Item:
        image, label = silently(lambda: self.base[index])  # the training loop reports each unreadable file once
        if image is None:
            return None, label, index
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.transform(image, rng), label, index


class TensorItems(torch.utils.data.Dataset):
    """Items computed beforehand (a frozen prefix's outputs): (values[i] or None where unreadable, label, index)."""

    def __init__(self, values: torch.Tensor, readable: torch.Tensor, labels: torch.Tensor) -> None:
        self.values, self.readable, self.labels = values, readable, labels

    def set_epoch(self, epoch: int) -> None:
        pass  # nothing random: the same values every epoch

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> Item:
        label = int(self.labels[index])
        return (self.values[index] if self.readable[index] else None), label, index


def collate_skipping(items: list[Item]) -> tuple[torch.Tensor | None, torch.Tensor, list[int]]:
    """Stack the readable items: (images (N, 3, H, W) or None, labels (N,), indices of skipped items)."""
    good = [(x, y) for x, y, _ in items if x is not None]
    skipped = [i for x, _, i in items if x is None]
    labels = torch.tensor([y for _, y in good], dtype=torch.long)
    return (torch.stack([x for x, _ in good]) if good else None), labels, skipped
