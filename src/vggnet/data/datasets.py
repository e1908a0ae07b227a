"""Datasets: image folders, CIFAR python batches and the built-in digits.

Every dataset yields (8-bit RGB PIL image, or None if the file is unreadable, label) and has a
`classes` list. The data is a folder the user has, scikit-learn's digits, or a dataset named in the
catalogue and fetched once (data/fetch.py).
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .fetch import dataset_folder

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


# -- CIFAR-10/100 python batches --------------------------------------------------------------

# File names of the two python-batch layouts: (training batches, validation batch, metadata, label key, names key).
CIFAR_LAYOUTS = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta", "labels", "label_names"),
    "cifar100": (["train"], "test", "meta", "fine_labels", "fine_label_names"),
}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        import codecs

        core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
        allowed = {
            ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
            ("numpy.core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return allowed[(module, name)]


def read_cifar_batch(path: str | os.PathLike[str]) -> dict[str, Any]:
    """One CIFAR python-batch file as a dict with str keys (no arbitrary code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CIFAR batch file")
    try:
        with open(path, "rb") as f:
            raw = _ArraysOnlyUnpickler(f, encoding="bytes").load()  # the originals are Python 2 pickles
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a CIFAR python batch ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a CIFAR python batch (holds a {type(raw).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def find_cifar(root: str | os.PathLike[str]) -> tuple[str, Path] | None:
    """("cifar10" | "cifar100", folder) when `root` (or its standard sub-folder) holds python batches."""
    root = Path(root)
    for kind, (_, val, meta, _, _) in CIFAR_LAYOUTS.items():
        for folder in (root, root / CIFAR_FOLDERS[kind]):
            if (folder / meta).is_file() and (folder / val).is_file():
                return kind, folder
    return None


class Cifar(torch.utils.data.Dataset):
    """CIFAR-10 or CIFAR-100 (fine labels) from the python-batch files; "val" is the test batch."""

    def __init__(self, root: str | os.PathLike[str], kind: str = "cifar10", split: str = "train") -> None:
        if kind not in CIFAR_LAYOUTS:
            raise ValueError(f"unknown CIFAR kind {kind!r}; accepted: {', '.join(CIFAR_LAYOUTS)}")
        if split not in ("train", "val"):
            raise ValueError(f"CIFAR split must be 'train' or 'val', got {split!r}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such CIFAR folder")
        if (root / CIFAR_FOLDERS[kind]).is_dir() and not (root / CIFAR_LAYOUTS[kind][2]).is_file():
            root = root / CIFAR_FOLDERS[kind]
        train_files, val_file, meta_file, label_key, names_key = CIFAR_LAYOUTS[kind]
        self.root = str(root)
        self.classes = [
            n.decode() if isinstance(n, bytes) else str(n) for n in read_cifar_batch(root / meta_file)[names_key]
        ]
        images, labels = [], []
        for name in train_files if split == "train" else [val_file]:
            batch = read_cifar_batch(root / name)
            if "data" not in batch or label_key not in batch:
                raise ValueError(f"{root / name}: CIFAR batch without 'data' or {label_key!r}")
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[label_key]):
                raise ValueError(f"{root / name}: expected (N, 3072) pixels and N labels, got {data.shape}")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3) RGB
            labels.extend(int(v) for v in batch[label_key])
        self.images = np.concatenate(images)
        self.targets = labels
        if max(labels, default=0) >= len(self.classes):
            raise ValueError(f"{root}: label {max(labels)} for only {len(self.classes)} class names")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i]), self.targets[i]


def open_dataset(
    spec: str, split: str = "train", size: int = 32, fallback: str | None = None
) -> torch.utils.data.Dataset:
    """A dataset of (PIL RGB image or None if unreadable, label) items with a `.classes` list.

    `spec` is "digits" (built in; `size` is its side in pixels), "cifar10:PATH" / "cifar100:PATH"
    (python batches; a folder holding them is also recognised without the prefix), a dataset name
    (`imagenette`, `imagenette-160`, `cifar10`, `cifar100`: downloaded once, data/fetch.py) or an image
    folder: ROOT/<split>/<class>/... when ROOT/<split> exists, else ROOT/<fallback>/... when that
    exists (training validates on ROOT/train without a val/), else ROOT/<class>/...
    """
    if spec == "digits":
        return Digits(split, size)
    kind, _, path = spec.partition(":")
    if kind in CIFAR_LAYOUTS and path:
        return Cifar(path, kind, split)
    root = dataset_folder(spec)  # a folder, or a dataset name (imagenette, cifar10, ...) fetched once
    found = find_cifar(root)
    if found is not None:
        return Cifar(found[1], found[0], split)
    for folder in (split, fallback):
        if folder and (root / folder).is_dir():
            return ImageFolder(root / folder)
    return ImageFolder(root)


def item_name(dataset: torch.utils.data.Dataset, index: int) -> str:
    """The file behind item `index` (image folders), else "dataset[index]"."""
    samples = getattr(dataset, "samples", None)
    return samples[index][0] if samples is not None else f"{type(dataset).__name__}[{index}]"
