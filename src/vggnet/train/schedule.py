"""The optimiser and learning-rate schedule of section 3.1: SGD with momentum, LR / 10 on a plateau."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..configs import TrainConfig


@dataclass
class PlateauSchedule:
    """Divide the LR by 10 when validation top-1 error has not improved for `patience` epochs.

    At most `max_decreases` decreases; a plateau after the last one stops training.
    """

    lr: float
    factor: float = 0.1
    patience: int = 5
    max_decreases: int = 3
    best: float = math.inf
    bad_epochs: int = 0
    decreases: int = 0

    def step(self, error: float) -> str:
        """Record one epoch's validation error: "improved", "wait", "decrease" or "stop"."""
        if error < self.best:
            self.best, self.bad_epochs = error, 0
            return "improved"
        self.bad_epochs += 1
        if self.bad_epochs <= self.patience:
            return "wait"
        if self.decreases >= self.max_decreases:
            return "stop"
        self.lr, self.decreases, self.bad_epochs = self.lr * self.factor, self.decreases + 1, 0
        return "decrease"


def sgd(
    model: nn.Module, cfg: TrainConfig, device: torch.device, groups: list[dict[str, Any]] | None = None
) -> torch.optim.SGD:
    """The paper's optimiser (section 3.1): SGD with momentum and weight decay, over all parameters or `groups`.

    A group's "lr_scale" (fine-tuning: pretrained layers slower than a new head) multiplies the schedule's LR.
    """
    return torch.optim.SGD(
        groups if groups is not None else model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        fused=device.type in ("cpu", "cuda") or None,  # one kernel for all parameters
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group the schedule's learning rate, times the group's "lr_scale" (1 if none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
