"""vggnet.cpu.first_conv: conv1_1 as the compiled direct conv equals torch's conv, and its output buffers come back."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vggnet.cpu import compiled
from vggnet.cpu.first_conv import SmallConv2d, takes


def reference(conv: nn.Conv2d, x: torch.Tensor, relu: bool) -> torch.Tensor:
    y = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    return y.relu() if relu else y


@pytest.mark.parametrize(
    "c, k, h, w, relu",
    [
        (3, 64, 17, 23, True),  # rows of 6 pixels, edges and a tail of 5
        (3, 64, 8, 6, False),  # exactly one block of 6 per row
        (3, 64, 5, 7, True),  # one block and a tail of one pixel
        (1, 16, 4, 5, True),  # narrower than a block: pixel by pixel
        (4, 80, 9, 13, False),  # 64 output channels in a block (avx512), 16 in the tail
        (3, 48, 1, 1, True),  # a single pixel: every neighbour is padding
    ],
)
def test_equals_the_direct_conv(isa, c, k, h, w, relu):
    torch.manual_seed(c * k + h * w)
    conv = nn.Conv2d(c, k, 3, padding=1)
    x = torch.randn(2, c, h, w).contiguous(memory_format=torch.channels_last)
    y = SmallConv2d(conv, relu=relu)(x)
    ref = reference(conv, x, relu)
    assert y.shape == (2, k, h, w) and y.is_contiguous(memory_format=torch.channels_last)
    assert ((y.double() - ref).abs().max() / ref.abs().max()).item() < 1e-6  # fp32 rounding of 27 products


def test_a_held_output_is_not_overwritten_and_a_freed_one_comes_back(isa):
    conv = nn.Conv2d(3, 64, 3, padding=1)
    layer = SmallConv2d(conv, relu=True)
    a, b = (torch.randn(1, 3, 32, 32).contiguous(memory_format=torch.channels_last) for _ in range(2))
    ya = layer(a)
    yb = layer(b)  # ya is still held: yb must get a block of its own
    assert ya.data_ptr() != yb.data_ptr()
    assert torch.allclose(ya.double(), reference(conv, a, True), atol=1e-5)
    address = yb.data_ptr()
    del yb
    assert layer(b).data_ptr() == address  # the freed block of the same size is reused


def test_takes_only_small_3x3_convs():
    assert takes(nn.Conv2d(3, 64, 3, padding=1)) == (compiled.kernels() is not None)
    assert not takes(nn.Conv2d(16, 64, 3, padding=1))  # Winograd's layer
    assert not takes(nn.Conv2d(3, 60, 3, padding=1))  # K not a multiple of 16
    assert not takes(nn.Conv2d(3, 64, 3, padding=1, stride=2))
    assert not takes(nn.Conv2d(3, 64, 5, padding=2))


def test_other_inputs_take_torchs_conv():
    conv = nn.Conv2d(3, 16, 3, padding=1)
    layer = SmallConv2d(conv, relu=True)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)  # not fp32: torch's conv
    assert torch.allclose(layer(x), reference(conv, x, True))
    with pytest.raises(ValueError, match="expects 3 input channels, got 4"):
        layer(torch.randn(1, 4, 6, 6))


def test_a_conv_the_kernel_cannot_compute_is_refused():
    with pytest.raises(ValueError, match="SmallConv2d needs a 3x3 conv, stride 1, padding 1, at most 8 inputs"):
        SmallConv2d(nn.Conv2d(3, 64, 5, padding=2))
    with pytest.raises(ValueError, match="a multiple of 16 outputs"):
        SmallConv2d(nn.Conv2d(3, 60, 3, padding=1))
