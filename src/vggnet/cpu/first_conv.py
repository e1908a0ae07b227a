"""VGG's conv1_1 as a compiled direct convolution: the layer that sees the RGB image (3 input channels).

Winograd saves nothing on 3 input channels, and oneDNN's conv pads them out to a vector; the compiled
kernel (csrc/conv_small.cpp) spends 27 broadcasts and 27 K/16 FMAs per output pixel and fuses the ReLU.
The fast fp32 path and the int8 path both run their first conv through it where the kernels are built;
elsewhere the layer is torch's own conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import compiled

MAX_CHANNELS = 8  # input channels up to which the direct kernel is used (RGB, grey, RGBA)


def vgg_3x3(conv: nn.Module) -> bool:
    """Whether `conv` is a VGG conv: 3x3, stride 1, padding 1, groups 1, dilation 1 (what the kernels compute)."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.groups == 1
        and conv.dilation == (1, 1)
    )


def vgg_pool(m: nn.Module) -> bool:
    """Whether `m` is VGG's max pool: 2x2, stride 2, no padding, dilation 1, rounding down (what the kernels fuse)."""
    if not isinstance(m, nn.MaxPool2d) or m.ceil_mode:
        return False
    pairs = [v if isinstance(v, tuple) else (v, v) for v in (m.kernel_size, m.stride, m.padding, m.dilation)]
    return pairs == [(2, 2), (2, 2), (0, 0), (1, 1)]


def fits(conv: nn.Module) -> bool:
    """Whether the kernel computes `conv`: a VGG 3x3 conv with few input channels and K a multiple of 16."""
    return vgg_3x3(conv) and conv.in_channels <= MAX_CHANNELS and conv.out_channels % 16 == 0


def takes(conv: nn.Module) -> bool:
    """Whether `conv` becomes a SmallConv2d here: it fits the kernel, and the compiled kernels are built."""
    return fits(conv) and compiled.kernels() is not None


class SmallConv2d(nn.Module):
    """A 3x3, stride-1, padding-1 conv (+ ReLU) with few input channels, as the compiled direct kernel.

    fp32, inference only; input NCHW in any memory layout, output in channels-last memory. Off the CPU,
    for other dtypes, or without the compiled kernels it is torch's conv (+ ReLU).
    """

    def __init__(self, conv: nn.Conv2d, relu: bool = False) -> None:
        super().__init__()
        if not fits(conv):
            raise ValueError(
                f"SmallConv2d needs a 3x3 conv, stride 1, padding 1, at most {MAX_CHANNELS} inputs and a multiple "
                f"of 16 outputs: {conv}"
            )
        self.in_channels, self.out_channels, self.relu = conv.in_channels, conv.out_channels, relu
        self.register_buffer("weight", conv.weight.detach().clone())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.clone().float())
        self.register_buffer("packed", conv.weight.detach().permute(2, 3, 1, 0).float().contiguous())  # (3, 3, C, K)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, direct 3x3, relu={self.relu}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"SmallConv2d expects {self.in_channels} input channels, got {x.shape[1]}")
        if x.device.type == "cpu" and x.dtype == torch.float32 and compiled.kernels() is not None:
            return compiled.kernels().conv3x3_small(x, self.packed, self.bias, self.relu)  # any layout in, NHWC out
        y = F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=1)
        return y.relu_() if self.relu else y
