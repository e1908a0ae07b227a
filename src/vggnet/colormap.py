"""Colour maps in numpy, so drawing a heat map over an image needs no plotting library."""

from __future__ import annotations

import numpy as np

# MATLAB's "jet" as matplotlib defines it: per channel, (position, value) anchors joined by straight lines.
JET_ANCHORS = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),  # red
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),  # green
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),  # blue
)


def jet(x: np.ndarray, levels: int = 256) -> np.ndarray:
    """RGB in [0, 1] of values in [0, 1], shape (..., 3): dark blue, cyan, yellow, dark red.

    Quantised to `levels` colours the way matplotlib's colormaps["jet"] is, so the two agree.
    """
    x = np.asarray(x, dtype=np.float64)
    table = np.stack([levels_between(anchors, levels) for anchors in JET_ANCHORS], axis=-1)  # (levels, 3)
    index = np.clip(np.floor(x * levels), 0, levels - 1).astype(np.int64)  # 1.0 falls in the top bin
    return table[index]


def levels_between(anchors: tuple[tuple[float, float], ...], levels: int) -> np.ndarray:
    """`levels` evenly spaced values along straight lines between (position, value) anchors at 0 ... 1.

    The arithmetic is matplotlib's (positions scaled to level numbers first), so the colours agree to the bit.
    """
    at = np.array([a for a, _ in anchors]) * (levels - 1)
    value = np.array([v for _, v in anchors])
    grid = (levels - 1) * np.linspace(0, 1, levels)
    i = np.searchsorted(at, grid)[1:-1]
    t = (grid[1:-1] - at[i - 1]) / (at[i] - at[i - 1])
    return np.clip(np.concatenate([value[:1], t * (value[i] - value[i - 1]) + value[i - 1], value[-1:]]), 0, 1)
