"""Shared test settings: small thread counts keep the suite fast on 2 cores."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# /work/shared/data/imagenette: beside the checkout, or beside a folder holding it (worktrees under /work/wt).
IMAGENETTE = next(
    (
        os.path.join(p, "shared", "data", "imagenette")
        for p in Path(__file__).resolve().parents
        if os.path.isdir(os.path.join(p, "shared", "data", "imagenette"))
    ),
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "imagenette"),
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
