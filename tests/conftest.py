"""Shared test settings: small thread counts keep the suite fast on 2 cores."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

IMAGENETTE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "imagenette")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
