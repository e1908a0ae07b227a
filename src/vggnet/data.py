"""Images in, tensors out: reading files safely, image folders, preprocessing conventions.

The training transforms, datasets and statistics of section 3.1 build on these helpers.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# ImageNet statistics used by torchvision's weights (RGB, 0-1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The original Caffe release and Keras: BGR order, 0-255 scale, per-channel means (B, G, R).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass
class Preprocessing:
    """How a network expects its input: channel order, pixel scale, mean and std.

    Applied to a float batch in RGB order and 0-1 range: reorder, multiply by `scale`,
    subtract `mean`, divide by `std` (mean and std are in the network's order and scale).
    """

    color: str = "RGB"  # "RGB" or "BGR"
    scale: float = 1.0  # 1.0 for 0-1 input, 255.0 for 0-255 input
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.color not in ("RGB", "BGR"):
            raise ValueError(f"preprocessing color must be RGB or BGR, got {self.color!r}")
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> the network's input."""
        if self.color == "BGR":
            x = x.flip(-3)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x * self.scale - mean) / std

    @classmethod
    def torchvision(cls) -> Preprocessing:
        return cls("RGB", 1.0, IMAGENET_MEAN, IMAGENET_STD)

    @classmethod
    def caffe(cls) -> Preprocessing:
        return cls("BGR", 255.0, CAFFE_MEAN_BGR, (1.0, 1.0, 1.0))


def open_image(path: str | os.PathLike[str]) -> Image.Image | None:
    """Open any common image as 8-bit RGB; None (after a warning naming the file) if unreadable.

    Greyscale, palette, CMYK, RGBA (composited on white) and 16-bit images are converted.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
        return None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit greyscale: rescale to 8 bits
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert("RGB")
    return im.convert("RGB")


def scan_image_folder(root: str | os.PathLike[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """List (path, class index) pairs of a folder with one sub-folder per class.

    Raises a one-line error for a missing folder, no class folders, an empty class
    folder or no images at all.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected ROOT/<class>/<image>)")
    samples: list[tuple[str, int]] = []
    for index, name in enumerate(classes):
        files = sorted(str(p) for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"{root / name}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        samples.extend((f, index) for f in files)
    return samples, classes


def report(message: str) -> None:
    """One line to stderr, for things the user should see even in quiet mode."""
    print(message, file=sys.stderr)


class ImageFolder(torch.utils.data.Dataset):
    """One sub-folder per class; items are (8-bit RGB PIL image or None if unreadable, label)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root)
        self.samples, self.classes = scan_image_folder(root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image | None, int]:
        path, label = self.samples[index]
        return open_image(path), label


class Digits(torch.utils.data.Dataset):
    """scikit-learn's real 8x8 handwritten digits (1,797 images), upscaled to `size`, RGB.

    The split is fixed (stratified, seed 0): 1,437 train and 360 validation images.
    """

    classes = [str(d) for d in range(10)]

    def __init__(self, split: str = "train", size: int = 32) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if split not in ("train", "val"):
            raise ValueError(f"digits split must be 'train' or 'val', got {split!r}")
        digits = load_digits()
        index = np.arange(len(digits.target))
        train, val = train_test_split(index, test_size=0.2, random_state=0, stratify=digits.target)
        self.index = train if split == "train" else val
        self.images = (digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0-16 -> 0-255
        self.targets = digits.target
        self.size = size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        j = self.index[i]
        im = Image.fromarray(self.images[j]).resize((self.size, self.size), Image.BILINEAR)
        return im.convert("RGB"), int(self.targets[j])


def open_dataset(spec: str, split: str = "train", size: int = 32) -> torch.utils.data.Dataset:
    """A dataset of (PIL RGB image, label) items with a `.classes` list.

    `spec` is "digits" (built in; `size` is its side in pixels) or an image folder:
    ROOT/<split>/<class>/... when ROOT/<split> exists, else ROOT/<class>/...
    """
    if spec == "digits":
        return Digits(split, size)
    root = Path(spec)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset folder (or use the built-in 'digits')")
    return ImageFolder(root / split if (root / split).is_dir() else root)
