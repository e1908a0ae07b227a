"""Resume checkpoints: where a run stands, every RNG state, written atomically and read without pickles."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # optimiser steps done in that epoch
    global_step: int = 0
    stopped: bool = False  # the schedule ran out of LR decreases
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics record per finished epoch


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG state of this process as plain lists and tensors (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's generators (model init and dropout draw from them)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through a temporary file and a rename: a kill leaves the previous checkpoint intact."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> dict[str, Any]:
    """A resume checkpoint, loaded without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no resume checkpoint")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: unreadable checkpoint ({str(e).splitlines()[0]})") from None
