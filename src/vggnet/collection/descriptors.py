"""The classic retrieval descriptors of a VGG's activations: fc7, GAP, MAC, R-MAC, GeM; L2; PCA whitening.

Conv descriptors pool one map (N, C, H, W) to (N, C): GAP averages it, MAC takes its maximum (Tolias et
al., ICLR 2016), GeM the generalised mean (mean of x^p)^(1/p) (Radenovic et al., TPAMI 2018; p = 1 is GAP,
p -> inf is MAC), and R-MAC sums the L2-normalised MACs of square regions at L = 3 scales (Tolias et al.).
Every descriptor leaves here L2-normalised, so an inner product is a cosine similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

DESCRIPTORS = ("fc7", "gap", "mac", "rmac", "gem")
POOLED = ("gap", "mac", "rmac", "gem")  # pool a conv map; fc7 reads a vector of the classifier
EPS = 1e-6  # GeM's floor before the power, and the smallest norm divided by


def l2n(x: torch.Tensor) -> torch.Tensor:
    """Rows of (N, D) scaled to unit L2 norm (a zero row stays zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(EPS)


def gap(f: torch.Tensor) -> torch.Tensor:
    """Global average pooling: (N, C, H, W) -> (N, C)."""
    return f.mean(dim=(2, 3))


def mac(f: torch.Tensor) -> torch.Tensor:
    """Maximum activation of convolutions: (N, C, H, W) -> (N, C)."""
    return f.amax(dim=(2, 3))


def gem(f: torch.Tensor, p: float = 3.0) -> torch.Tensor:
    """Generalised mean (mean over H, W of max(f, EPS)^p)^(1/p): (N, C, H, W) -> (N, C)."""
    return f.clamp_min(EPS).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


# Tolias et al.: consecutive regions along the longer side overlap by about 40%; 2 to 7 regions at l = 1.
RMAC_OVERLAP = 0.4
RMAC_LONG_STEPS = range(2, 8)


def rmac_regions(h: int, w: int, levels: int = 3) -> list[tuple[int, int, int]]:
    """The R-MAC regions (top, left, side) of an h x w map, for l = 1..levels.

    At level l the squares have side floor(2 min(h, w) / (l + 1)); l of them fit along the shorter side and
    l + m - 1 along the longer, where m (2 to 7) brings the overlap of the l = 1 squares closest to 40%
    (m = 1 for a square map). Starts are evenly spaced from 0 to (length - side), rounded down.
    """
    short, long_ = min(h, w), max(h, w)
    extra = 0
    if long_ > short:
        # step between l = 1 squares for m of them: (long - short) / (m - 1); overlap = 1 - step / short
        extra = min(RMAC_LONG_STEPS, key=lambda m: abs(1 - (long_ - short) / (m - 1) / short - RMAC_OVERLAP)) - 1
    regions = []
    for level in range(1, levels + 1):
        side = max(1, math.floor(2 * short / (level + 1)))
        n_h = level + (extra if h > w else 0)
        n_w = level + (extra if w > h else 0)
        for top in _starts(h, side, n_h):
            for left in _starts(w, side, n_w):
                regions.append((top, left, side))
    return regions


def _starts(length: int, side: int, count: int) -> list[int]:
    if count == 1:
        return [0]
    return [math.floor(i * (length - side) / (count - 1)) for i in range(count)]


def rmac(f: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """R-MAC: the sum over `rmac_regions` of each region's L2-normalised MAC: (N, C, H, W) -> (N, C)."""
    total = torch.zeros(f.shape[:2], dtype=f.dtype, device=f.device)
    for top, left, side in rmac_regions(f.shape[2], f.shape[3], levels):
        total += l2n(mac(f[:, :, top : top + side, left : left + side]))
    return total


def pool(f: torch.Tensor, descriptor: str, p: float = 3.0) -> torch.Tensor:
    """One descriptor of a tap's output: a conv map (N, C, H, W) pooled, or a vector (N, D) (fc7) as it is.

    Not yet normalised: `l2n` after averaging over scales.
    """
    if descriptor == "fc7":
        return f.flatten(1) if f.dim() == 2 else f.mean(dim=(2, 3))  # a conv head's fc7 is a (N, D, h, w) map
    if f.dim() != 4:
        raise ValueError(f"descriptor {descriptor} pools a conv layer's (N, C, H, W) map, got shape {tuple(f.shape)}")
    if descriptor == "gap":
        return gap(f)
    if descriptor == "mac":
        return mac(f)
    if descriptor == "gem":
        return gem(f, p)
    if descriptor == "rmac":
        return rmac(f)
    raise ValueError(f"unknown descriptor {descriptor!r}; accepted: {', '.join(DESCRIPTORS)}")


# -- PCA whitening ------------------------------------------------------------------------------------


@dataclass
class Whitening:
    """PCA whitening learned on a set of descriptors: y = l2n(P (x - mean)), P (d, D) = diag(1/sqrt(lambda)) U^T."""

    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (d, D)
    eigenvalues: np.ndarray  # (d,), largest first

    @property
    def dim(self) -> int:
        return int(self.projection.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(N, D) descriptors -> (N, d) whitened and L2-normalised, float32."""
        y = (np.asarray(x, np.float64) - self.mean) @ self.projection.T
        norms = np.maximum(np.linalg.norm(y, axis=1, keepdims=True), EPS)
        return (y / norms).astype(np.float32)


# Eigenvalues below this fraction of the largest are noise directions (fewer photos than dimensions):
# dividing by their square root would blow the noise up, so they are dropped.
WHITEN_RELATIVE_FLOOR = 1e-6


def fit_whitening(x: np.ndarray, dim: int | None = None) -> Whitening:
    """PCA whitening of (N, D) descriptors, keeping the `dim` (default: every usable) leading directions."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"whitening needs at least 2 descriptors, got {x.shape[0] if x.ndim == 2 else x.shape}")
    mean = x.mean(axis=0)
    cov = (x - mean).T @ (x - mean) / x.shape[0]
    values, vectors = np.linalg.eigh(cov)  # ascending
    values, vectors = values[::-1], vectors[:, ::-1]
    usable = int((values > values[0] * WHITEN_RELATIVE_FLOOR).sum())
    if dim is not None and not 1 <= dim <= x.shape[1]:
        raise ValueError(f"whitening dimension {dim} is not between 1 and the descriptors' {x.shape[1]}")
    keep = min(usable, dim or usable)
    projection = vectors[:, :keep].T / np.sqrt(values[:keep])[:, None]
    return Whitening(mean, projection, values[:keep].copy())
