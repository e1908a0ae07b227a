"""What a compressed weights file holds, and how it becomes a model again.

- Low rank: an FC layer W (out, in) stored as two, V^T (r, in) without bias then U S (out, r) with W's
  bias (truncated SVD, as Fast R-CNN does for its FC layers). The pair is a `LowRankLinear` at the
  layer's place, so its keys read `classifier.0.0.weight`, `classifier.0.1.weight`, `classifier.0.1.bias`;
  the rank is read back from the shapes.
- int8: every conv and FC weight stored as int8 with one float32 scale per output channel
  (`KEY.int8_scale`, symmetric: w = q x scale), dequantised to float32 when the file is read. It makes
  the file 4x smaller, not the arithmetic faster (for that: `vggnet.optimize.quantize_int8`).
"""

from __future__ import annotations

import torch
from torch import nn

INT8_SCALE = ".int8_scale"  # suffix of the per-output-channel scale stored beside an int8 weight
QUANTIZE_ROWS = 256  # output channels quantised at a time


class LowRankLinear(nn.Sequential):
    """A Linear layer factorised through rank r: Linear(in, r, bias=False) then Linear(r, out)."""

    def __init__(self, in_features: int, rank: int, out_features: int) -> None:
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features))

    @property
    def rank(self) -> int:
        return self[0].out_features


def has_low_rank(model: nn.Module) -> bool:
    """Whether any classifier layer of `model` is factorised."""
    return any(isinstance(m, LowRankLinear) for m in model.modules())


def low_rank_ranks(state: dict[str, torch.Tensor]) -> dict[int, int]:
    """{classifier index: rank} of the factorised layers in a state dict (from `classifier.I.0.weight`)."""
    ranks = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 4 and parts[0] == "classifier" and parts[2] == "0" and parts[3] == "weight":
            ranks[int(parts[1])] = value.shape[0]
    return ranks


def make_low_rank(model: nn.Module, ranks: dict[int, int]) -> nn.Module:
    """Replace `model.classifier[i]` (a Linear) by a LowRankLinear of rank `ranks[i]`, in place; weights not set."""
    for index, rank in ranks.items():
        layer = model.classifier[index]
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"classifier.{index} is a {type(layer).__name__}; only Linear layers are factorised")
        model.classifier[index] = LowRankLinear(layer.in_features, rank, layer.out_features)
    return model


def quantize_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Conv and FC weights (float, 2-D or more) as int8 plus per-output-channel scales; the rest unchanged.

    A block of output channels at a time, so the float temporaries stay small beside a large weight.
    """
    out = {}
    for key, value in state.items():
        if not value.is_floating_point() or value.dim() < 2:
            out[key] = value
            continue
        q, scale = torch.empty(value.shape, dtype=torch.int8), torch.empty(len(value))
        view = (-1,) + (1,) * (value.dim() - 1)
        for start in range(0, len(value), QUANTIZE_ROWS):
            w = value[start : start + QUANTIZE_ROWS].detach().float()
            top = w.abs().reshape(len(w), -1).amax(dim=1)  # (rows,)
            part = torch.where(top > 0, top / 127.0, torch.ones_like(top))
            q[start : start + QUANTIZE_ROWS] = torch.round(w / part.view(view)).clamp_(-127, 127)
            scale[start : start + QUANTIZE_ROWS] = part
        out[key], out[key + INT8_SCALE] = q, scale
    return out


def dequantize_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo `quantize_state`: int8 weights times their scales, as float32; a state without them is returned as is."""
    if not any(k.endswith(INT8_SCALE) for k in state):
        return state
    out = {k: v for k, v in state.items() if not k.endswith(INT8_SCALE)}
    for key in [k for k in state if k.endswith(INT8_SCALE)]:
        weight = key[: -len(INT8_SCALE)]
        q = state[weight]
        out[weight] = q.float() * state[key].float().view((-1,) + (1,) * (q.dim() - 1))
    return out


def stored_bytes(state: dict[str, torch.Tensor], int8: bool = False) -> int:
    """Bytes of a state dict's tensors as a weights file stores them (the header's few kB aside)."""
    total = 0
    for value in state.values():
        if int8 and value.is_floating_point() and value.dim() >= 2:
            total += value.numel() + 4 * value.shape[0]  # int8 values, one float32 scale per output channel
        else:
            total += value.numel() * value.element_size()
    return total
