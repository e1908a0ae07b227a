"""The testing protocol of section 3.2: dense and multi-crop evaluation, flips, scales, ensembles.

- `protocol`: posteriors of images at one test scale (center, dense, multicrop), the paper's ladder
- `networks`: runs and weights files, their training and test scales; averaging over scales and ensembles
- `loop`: `evaluate`, a dataset through one network or an ensemble, top-1/top-5 error
- `report`: the paper-shaped table, JSON and the confusion matrix of a `Result`
- `predict`: top classes of single images and the dense score map drawn as a heat map
"""

from __future__ import annotations

import warnings
from typing import Any

from .loop import Result, evaluate
from .networks import (
    Network,
    ensemble_posteriors,
    for_evaluation,
    load_networks,
    network_posteriors,
    read_networks,
    resolve_scales,
    train_scale,
)
from .predict import Prediction, class_map, class_names_of, heatmap_overlay, imagenet_classes, predict
from .protocol import center, crops, dense, grid_positions, method_posteriors, multicrop, softmax_posteriors
from .report import method_label, results_table, save_result, scale_report

_RENAMED = {"markdown_table": "results_table", "write_report": "save_result"}


def __getattr__(name: str) -> Any:
    """The names these functions had before (vggnet.tables.markdown_table is another function)."""
    if name in _RENAMED:
        warnings.warn(f"vggnet.evaluate.{name} is now {_RENAMED[name]}", DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Network",
    "Prediction",
    "Result",
    "center",
    "class_map",
    "class_names_of",
    "crops",
    "dense",
    "ensemble_posteriors",
    "evaluate",
    "for_evaluation",
    "grid_positions",
    "heatmap_overlay",
    "imagenet_classes",
    "load_networks",
    "method_label",
    "method_posteriors",
    "multicrop",
    "network_posteriors",
    "predict",
    "read_networks",
    "resolve_scales",
    "results_table",
    "save_result",
    "scale_report",
    "softmax_posteriors",
    "train_scale",
]
