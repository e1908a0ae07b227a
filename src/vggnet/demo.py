"""The main job on built-in data, run by `make demo` and `vggnet demo`."""

from __future__ import annotations

import time

import torch

from .analysis import format_table2, table2
from .configs import CONFIGS
from .model import VGG, count_parameters


def run_demo(quick: bool = False) -> int:
    """Print Table 2, then run a forward pass of every configuration (with and without BN)."""
    print("Table 2 of the paper, measured from the models:")
    print(format_table2(table2()))
    print()
    size = 64 if quick else 224
    x = torch.randn(1, 3, size, size)
    print(f"Forward pass of every configuration at {size}x{size}:")
    with torch.inference_mode():
        for letter in CONFIGS:
            for bn in (False, True):
                model = VGG(config=letter, batch_norm=bn).eval()
                start = time.perf_counter()
                logits = model(x)
                ms = 1000 * (time.perf_counter() - start)
                name = letter + ("_bn" if bn else "")
                print(
                    f"  {name:<9} {count_parameters(model):>13,} params -> logits {tuple(logits.shape)} in {ms:6.0f} ms"
                )
    return 0
