"""Training-set statistics of section 3.1: the mean RGB and the eigen-decomposition of the RGB covariance."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import silently, write_text


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
        image, _ = silently(lambda: self.base[self.indices[i]])  # the training loop reports unreadable files
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
