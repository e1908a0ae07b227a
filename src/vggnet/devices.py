"""Which device a job runs on: one rule for training, evaluation and prediction."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """ "auto" -> this process's GPU when CUDA is available, else the CPU; "cuda" -> cuda:<local_rank>.

    Anything else as torch spells it (cpu, cuda:1, mps); an unknown name or a missing GPU is a one-line error.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; try auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine")
    return device
