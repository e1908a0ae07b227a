"""Budgets on what a file or an image may make us allocate, checked where the size is first read.

Files from strangers are hostile: a few kilobytes can declare gigabytes (an HDF5 dataset never
written, a zip record that inflates, a 100x1 image whose rescale feeds the network a 25600x256
input). Each limit is a named constant with its reason; the environment variable named beside it
raises (or lowers) it, and the refusal says so. Nothing here imports the rest of vggnet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GIB = 1 << 30


@dataclass(frozen=True)
class Limit:
    """A budget in bytes, overridable by an environment variable (a byte count)."""

    env: str  # VGGNET_MAX_...: the variable that sets it
    default: int
    what: str  # what it bounds, for the refusal: "the tensors a weights file declares"

    def value(self) -> int:
        """The budget now: the environment variable's byte count if set, else the default."""
        text = os.environ.get(self.env, "").strip()
        if not text:
            return self.default
        try:
            value = int(float(text))
        except ValueError:
            raise ValueError(f"{self.env}={text!r}: expected a number of bytes, e.g. {4 * GIB}") from None
        if value <= 0:
            raise ValueError(f"{self.env}={text!r}: expected a positive number of bytes")
        return value

    def check(self, amount: int, where: str) -> None:
        """Raise a one-line ValueError when `amount` bytes pass the budget; `where` leads up to the amount.

        `WEIGHTS_BYTES.check(n, "w.h5: its datasets declare")` -> "w.h5: its datasets declare 64.0 GiB, over ..."
        """
        limit = self.value()
        if amount > limit:
            raise ValueError(
                f"{where} {size_text(amount)}, over the limit of {size_text(limit)} on {self.what} "
                f"(set {self.env} to a larger byte count to allow it)"
            )


def size_text(n: int) -> str:
    """Bytes as people read a budget: GiB from 1 GiB up, else MiB."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / (1 << 20):.1f} MiB"


# VGG19, the largest configuration, holds 143.7 M parameters: 575 MB in float32, as every public
# file stores them. Reading a file holds its arrays and their float32 copies at once, so the budget
# stays near the largest real file: a file declaring more is not a VGG, or is a bomb.
WEIGHTS_BYTES = Limit("VGGNET_MAX_WEIGHTS_BYTES", GIB, "the tensors a weights file declares")

# A resume checkpoint holds the weights, the optimizer's buffers (SGD momentum: as many again; Adam:
# twice) and the random states: VGG19 with Adam is 1.7 GB.
CHECKPOINT_BYTES = Limit("VGGNET_MAX_CHECKPOINT_BYTES", 4 * GIB, "the tensors a checkpoint declares")

# A forward pass holds a layer's input and output at once, a backward pass every layer's output
# (analysis.activation_bytes). In VGG16 a 4:3 photo at the paper's largest scale (683x512 at Q=512)
# needs 0.17 GiB forward (twice that with flips), 0.76 GiB for Grad-CAM's backward pass; a
# 100x1 sliver rescaled to Q=256 is a 25600x256 input: 3.1 GiB forward.
ACTIVATION_BYTES = Limit("VGGNET_MAX_ACTIVATION_BYTES", 2 * GIB, "the activations of one image")

# A frozen prefix's outputs kept on disk (`vggnet.frozen`): fc7 features are 16 KiB an image, a conv
# prefix's maps up to 400 KiB (pool4 of VGG16). Outputs beyond this stay in memory for the one run; a
# cache file declaring more is refused on reading.
FROZEN_CACHE_BYTES = Limit("VGGNET_MAX_FROZEN_CACHE_BYTES", 4 * GIB, "the cached outputs of frozen layers")
