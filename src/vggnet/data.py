"""Images in, tensors out: datasets, the paper's training transforms and the training-set statistics.

Datasets (image folders, CIFAR python batches, built-in digits) yield (8-bit RGB PIL image or
None if unreadable, label). Section 3.1's augmentation: isotropic rescale of the shorter side
to S (fixed or jittered), one random crop, random flip, AlexNet's PCA colour shift, and
subtraction of the training set's mean RGB.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .io import write_text

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


def open_dataset(spec: str, split: str = "train", size: int = 32) -> torch.utils.data.Dataset:
    """A dataset of (PIL RGB image or None if unreadable, label) items with a `.classes` list.

    `spec` is "digits" (built in; `size` is its side in pixels), "cifar10:PATH" / "cifar100:PATH"
    (python batches; a folder holding them is also recognised without the prefix) or an image
    folder: ROOT/<split>/<class>/... when ROOT/<split> exists, else ROOT/<class>/...
    """
    if spec == "digits":
        return Digits(split, size)
    kind, _, path = spec.partition(":")
    if kind in CIFAR_LAYOUTS and path:
        return Cifar(path, kind, split)
    root = Path(spec)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset folder (or use the built-in 'digits')")
    found = find_cifar(root)
    if found is not None:
        return Cifar(found[1], found[0], split)
    return ImageFolder(root / split if (root / split).is_dir() else root)


def item_name(dataset: torch.utils.data.Dataset, index: int) -> str:
    """The file behind item `index` (image folders), else "dataset[index]"."""
    samples = getattr(dataset, "samples", None)
    return samples[index][0] if samples is not None else f"{type(dataset).__name__}[{index}]"


# -- training-set statistics (section 3.1) -------------------------------------------------------


@dataclass
class RGBStats:
    """Mean RGB and the eigen-decomposition of the RGB covariance of a training set (0-255 scale)."""

    mean: list[float]  # (3,) subtracted from every pixel (section 3.1)
    eigval: list[float]  # (3,) eigenvalues of the 3x3 covariance, descending (units: pixel value squared)
    eigvec: list[list[float]]  # (3, 3), column j is the eigenvector of eigval[j]
    images: int = 0  # how many images were sampled
    pixels: int = 0

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RGBStats:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such statistics file (write one with `vggnet stats DATA --out FILE`)")
        try:
            raw = json.loads(path.read_text())
            stats = cls(**raw)
            ok = len(stats.mean) == 3 and len(stats.eigval) == 3 and np.asarray(stats.eigvec).shape == (3, 3)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a statistics file ({e})") from None
        if not ok:
            raise ValueError(f"{path}: statistics need 3 means, 3 eigenvalues and a 3x3 eigenvector matrix")
        return stats


class _Moments(torch.utils.data.Dataset):
    """Per-image pixel count, RGB sums and sums of RGB outer products (float64), for RGBStats."""

    def __init__(self, base: torch.utils.data.Dataset, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unreadable files are reported by the training loop
            image, _ = self.base[self.indices[i]]
        if image is None:
            return None
        x = np.asarray(image, dtype=np.float64).reshape(-1, 3)  # (pixels, 3)
        return len(x), x.sum(0), x.T @ x


def _as_list(items: list[Any]) -> list[Any]:
    return items


def compute_stats(
    dataset: torch.utils.data.Dataset, samples: int = 10000, seed: int = 0, workers: int = 0, progress: bool = False
) -> RGBStats:
    """Mean RGB and RGB-covariance eigen-decomposition over up to `samples` images drawn without replacement."""
    from tqdm import tqdm

    n = len(dataset)
    if n == 0:
        raise ValueError("cannot compute statistics of a dataset with no images")
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(n, size=min(samples, n), replace=False)) if samples < n else np.arange(n)
    loader = torch.utils.data.DataLoader(
        _Moments(dataset, indices.tolist()), batch_size=16, num_workers=workers, collate_fn=_as_list
    )
    count, total, outer, images = 0, np.zeros(3), np.zeros((3, 3)), 0
    for batch in tqdm(loader, desc="statistics", unit="batch", disable=not progress, file=sys.stderr):
        for item in batch:
            if item is not None:
                count, total, outer, images = count + item[0], total + item[1], outer + item[2], images + 1
    if count == 0:
        raise ValueError("no readable image among the sampled ones; cannot compute statistics")
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
    return RGBStats(mean.tolist(), eigval.tolist(), eigvec.tolist(), images, int(count))


# -- transforms (section 3.1) -------------------------------------------------------------------------


def rescaled_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) of an image of `size` after an isotropic rescale of its shorter side to `shorter`."""
    w, h = size
    if min(w, h) == shorter:
        return w, h
    if w <= h:
        return shorter, max(shorter, round(h * shorter / w))
    return max(shorter, round(w * shorter / h)), shorter


def rescale(image: Image.Image, shorter: int) -> Image.Image:
    """Isotropic rescale so the shorter side is `shorter` pixels (bilinear, antialiased)."""
    size = rescaled_size(image.size, shorter)
    return image if size == image.size else image.resize(size, Image.BILINEAR)


def rescaled_crop(image: Image.Image, shorter: int, x0: int, y0: int, crop: int) -> Image.Image:
    """The crop x0, y0, crop x crop of `rescale(image, shorter)`, computing only the crop's pixels.

    Pillow's resize takes a source box and maps output pixel x to source centre box0 + (x + 0.5) * scale,
    reading filter support outside the box, so resizing the crop's preimage to crop x crop gives the pixels
    the whole rescale would have given there (up to float rounding: at most 1 of 255, rarely), at a
    fraction of the work: a 224 crop of a 683x512 rescale resizes 50k pixels, not 350k.
    """
    w, h = image.size
    rw, rh = rescaled_size(image.size, shorter)
    if (rw, rh) == (w, h):
        return image.crop((x0, y0, x0 + crop, y0 + crop))
    sx, sy = w / rw, h / rh
    box = (x0 * sx, y0 * sy, min(w, (x0 + crop) * sx), min(h, (y0 + crop) * sy))  # min: float rounding at the edge
    return image.resize((crop, crop), Image.BILINEAR, box=box)


def to_tensor_minus_mean(image: Image.Image, mean: Sequence[float], shift: np.ndarray | None = None) -> torch.Tensor:
    """8-bit RGB image -> float (3, H, W) in 0-255 minus the mean RGB (plus a per-image colour shift)."""
    a = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    offset = -np.asarray(mean, dtype=np.float32)
    if shift is not None:
        offset = offset + shift.astype(np.float32)
    return torch.from_numpy(a + offset).permute(2, 0, 1).contiguous()


@dataclass
class TrainTransform:
    """Section 3.1: rescale to S ~ U[Smin, Smax], random crop, random flip, PCA colour shift, minus mean RGB."""

    scale: tuple[int, int]  # (Smin, Smax); equal for a fixed S
    crop: int
    stats: RGBStats
    color_shift: float = 0.1  # std of the coefficients alpha_i
    flip: bool = True

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        s = int(rng.integers(self.scale[0], self.scale[1] + 1))
        w, h = rescaled_size(image.size, s)
        if min(w, h) < self.crop:
            raise ValueError(f"crop {self.crop} is larger than the rescaled image ({w}x{h})")
        x0, y0 = int(rng.integers(0, w - self.crop + 1)), int(rng.integers(0, h - self.crop + 1))
        image = rescaled_crop(image, s, x0, y0, self.crop)
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        shift = None
        if self.color_shift > 0:
            # AlexNet: add sum_i alpha_i * sqrt(lambda_i) * p_i, alpha_i ~ N(0, sigma). The shift is in pixel
            # units, so each component is scaled by its standard deviation sqrt(lambda_i), not lambda_i.
            alpha = rng.normal(0.0, self.color_shift, 3)
            shift = np.asarray(self.stats.eigvec) @ (alpha * np.sqrt(self.stats.eigval))
        return to_tensor_minus_mean(image, self.stats.mean, shift)


@dataclass
class EvalTransform:
    """Rescale the shorter side to Q, take the centre crop, subtract the mean RGB (per-epoch validation)."""

    size: int
    crop: int
    mean: Sequence[float]

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        w, h = rescaled_size(image.size, self.size)
        x0, y0 = (w - self.crop) // 2, (h - self.crop) // 2
        return to_tensor_minus_mean(rescaled_crop(image, self.size, x0, y0, self.crop), self.mean)


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the training loop reports each unreadable file once
            image, label = self.base[index]
        if image is None:
            return None, label, index
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.transform(image, rng), label, index


def collate_skipping(items: list[Item]) -> tuple[torch.Tensor | None, torch.Tensor, list[int]]:
    """Stack the readable items: (images (N, 3, H, W) or None, labels (N,), indices of skipped items)."""
    good = [(x, y) for x, y, _ in items if x is not None]
    skipped = [i for x, _, i in items if x is None]
    labels = torch.tensor([y for _, y in good], dtype=torch.long)
    return (torch.stack([x for x, _ in good]) if good else None), labels, skipped
