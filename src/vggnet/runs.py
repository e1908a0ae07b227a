"""A training run's folder: what it holds, and finding its weights and metrics.

config.json        the resolved TrainConfig
stats.json         mean RGB and RGB-covariance eigen-decomposition of the training set
metrics.jsonl      one JSON line per epoch (loss, top-1/top-5 errors, LR, images/s, seconds, skipped files)
metrics.png        loss, errors and LR against epoch (with vggnet[plots])
model.safetensors  the best weights (lowest validation top-1 error), project format
last.pt            the resume checkpoint: model (a fine-tune: less the frozen tensors of init.json's file), optimiser,
                   schedule, scaler, RNG states, position in the epoch
previous.pt        the checkpoint last.pt replaced, resumed from when last.pt is damaged
last.pt.damaged    a last.pt that failed its check, set aside by that resume
init.json          with --init-from: the weights' path, source, SHA-256, input preprocessing and the new layers
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIG, STATS, METRICS, PLOT, WEIGHTS, CHECKPOINT = (
    "config.json",
    "stats.json",
    "metrics.jsonl",
    "metrics.png",
    "model.safetensors",
    "last.pt",
)
PREVIOUS, DAMAGED = "previous.pt", "last.pt.damaged"
INIT = "init.json"


def weights_file(path: str | os.PathLike[str]) -> Path:
    """The weights file of a run folder (RUN/model.safetensors) or the file itself."""
    p = Path(path)
    if p.is_dir():
        if not (p / WEIGHTS).is_file():
            raise FileNotFoundError(f"{p}: run folder without {WEIGHTS}")
        return p / WEIGHTS
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such run folder or weights file")
    return p


def read_history(run: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every finished epoch's metrics record of a run, in order."""
    path = Path(run) / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (has the run finished an epoch?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def best_record(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The metrics line of a run's best epoch (lowest validation top-1 error)."""
    return min(read_history(run), key=lambda h: h["val_top1"])
