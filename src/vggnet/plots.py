"""Figures of training and evaluation: the per-epoch curves of a run and the confusion matrix.

Drawing needs matplotlib (`pip install 'vggnet[plots]'`); everything else in vggnet works without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .io import atomic_write
from .metrics import reported_ks


def plot_metrics(history: list[dict[str, Any]], path: Path, num_classes: int = 1000) -> Figure:
    """Loss, top-1/top-5 error and LR against epoch, three panels in one PNG; returns the figure.

    Top-5 is drawn only with more than five classes (with five or fewer it is 0% whatever the net does).
    """
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    errors = [(f"top{k}", "-" if k == 1 else "--") for k in reported_ks(num_classes, (1, 5))]
    for split in ("train", "val"):
        axes[0].plot(epochs, [h[f"{split}_loss"] for h in history], marker=".", label=split)
        for k, style in errors:
            axes[1].plot(epochs, [h[f"{split}_{k}"] for h in history], style, marker=".", label=f"{split} {k}")
    axes[2].plot(epochs, [h["lr"] for h in history], marker=".")
    axes[2].set_yscale("log")
    for ax, title in zip(axes, ("loss", "error (%)", "learning rate"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    return fig


def confusion_figure(result: Any, path: str | os.PathLike[str], method: str) -> None:
    """Write an evaluation Result's confusion matrix (rows: true class, columns: prediction, row-normalised) as a PNG."""
    conf = np.asarray(result.confusion, dtype=np.float64)
    rates = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    c = len(result.class_names)
    side = min(16.0, 3.0 + 0.16 * c)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, label="fraction of the true class")
    if c <= 40:
        ax.set_xticks(range(c), result.class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(c), result.class_names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{' + '.join(result.configs)}, {method}: top-1 error {result.top1_error:.1f}%")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
