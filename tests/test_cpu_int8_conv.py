"""vggnet.cpu.int8_conv: int8 Winograd F(2x2, 3x3) layers against their float64 reference and the direct convolution."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import randomize_bn
from vggnet import build
from vggnet.cpu import compiled
from vggnet.cpu.int8_conv import (
    Int8WinogradConv2d,
    input_tiles,
    int8_features,
    quantizable,
    tile_range,
)
from vggnet.cpu.winograd import transforms
from vggnet.optimize import fold_batchnorm

# One layer's int8 rounding (u8 V, int8 U), relative to the output's norm: measured 1.0-1.7% on random
# weights and ReLU'd Gaussian inputs at 16-256 channels; 3% still fails for a wrong scale or zero point.
INT8_RTOL = 0.03
# The kernel rounds V from fp32, the reference from float64: a value on a rounding edge moves one step,
# which moves the outputs of its tile by step * |U|; measured at most 1.5e-3 of the largest output.
KERNEL_RTOL = 5e-3


def rel_norm(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).norm() / ref.norm()).item()


def rel_max(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


def layer(n: int, c: int, k: int, h: int, w: int, relu: bool = False, seed: int = 0, pool: bool = False):
    """A conv, an input (ReLU'd, as VGG's are) and the int8 layer calibrated on that input."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, k, 3, padding=1).eval()
    x = torch.randn(n, c, h, w).relu()
    return conv, x, Int8WinogradConv2d(conv, *tile_range(x), relu=relu, pool=pool)


def test_input_tiles_are_the_transform_of_every_overlapping_tile():
    x = torch.randn(2, 3, 5, 7)
    v = input_tiles(x)  # (N, C, 3, 4, 4, 4): 5x7 needs 3x4 tiles of 2x2 outputs
    assert v.shape == (2, 3, 3, 4, 4, 4)
    bt = transforms(2)[0]
    padded = F.pad(x.double(), (1, 2, 1, 2))
    d = padded[1, 2, 2:6, 4:8]  # tile (1, 2): rows 2..5, columns 4..7 of the padded image
    assert torch.allclose(v[1, 2, 1, 2], bt @ d @ bt.T)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    ("n", "c", "k", "h", "w"),
    [(1, 16, 16, 5, 7), (2, 64, 80, 13, 9), (8, 32, 64, 28, 28), (1, 3, 8, 9, 9), (2, 8, 24, 6, 5)],
)
def test_reference_is_close_to_the_direct_convolution(n, c, k, h, w, relu):
    conv, x, q = layer(n, c, k, h, w, relu)
    with torch.no_grad():
        ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    ref = ref.relu() if relu else ref
    out = q.reference(x)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert rel_norm(out, ref) < INT8_RTOL


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    ("n", "c", "k", "h", "w"),
    [
        (1, 16, 16, 5, 7),  # odd sizes: partial tiles on both edges
        (2, 64, 80, 13, 9),  # K not a multiple of 64: a zero-padded panel
        (8, 32, 64, 28, 28),  # batch 8, many chunks
        (1, 256, 512, 14, 14),  # VGG16's conv5 at batch 1: output channels split between threads
        (2, 32, 16, 1, 1),  # one pixel: one tile, all padding but the centre
        (1, 3, 64, 10, 12),  # RGB in: zero channels up to 16
        (2, 8, 24, 7, 6),  # 8 in, 24 out (width 1/8): both padded, the output cut back to 24
    ],
)
def test_kernel_equals_its_reference(int8_isa, n, c, k, h, w, relu):
    conv, x, q = layer(n, c, k, h, w, relu, seed=h)
    out = q(x)
    assert out.shape == (n, k, h, w) and out.is_contiguous(memory_format=torch.channels_last)
    assert rel_max(out, q.reference(x)) < KERNEL_RTOL


def test_kernel_chunks_and_groups_do_not_change_the_result(int8_isa):
    _, x, q = layer(3, 64, 192, 11, 10, relu=True)
    x = x.contiguous(memory_format=torch.channels_last)
    args = (q.packed(compiled.kernels().panel), q.comp, q.scale, q.inv_s, q.zero_point, q.bias, True, False, 192)
    auto = compiled.kernels().conv3x3_f2_int8(x, *args, 0, 0)
    for chunk, groups in [(1, 1), (7, 2), (6, 3), (1000, 1)]:
        assert torch.equal(compiled.kernels().conv3x3_f2_int8(x, *args, chunk, groups), auto)


@pytest.mark.parametrize(("h", "w"), [(12, 10), (28, 28), (2, 2), (9, 14), (7, 7)])
def test_the_fused_max_pool_equals_pooling_after_the_layer(int8_isa, h, w):
    conv, x, q = layer(2, 32, 80, h, w, relu=True, seed=w, pool=True)  # odd sizes: pooled after the kernel
    ref = F.max_pool2d(Int8WinogradConv2d(conv, *tile_range(x), relu=True)(x), 2)
    out = q(x)
    assert out.shape == (2, 80, h // 2, w // 2) and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6)  # the same sums, the max taken before the bias
    assert rel_max(out, q.reference(x)) < KERNEL_RTOL


def test_without_the_kernel_the_reference_runs(monkeypatch):
    conv, x, q = layer(1, 16, 32, 6, 6)
    monkeypatch.setattr(compiled, "kernels", lambda: None)
    assert torch.equal(q(x), q.reference(x))


def test_what_it_takes():
    assert quantizable(nn.Conv2d(16, 32, 3, padding=1)) and quantizable(nn.Conv2d(3, 8, 3, padding=1))
    assert not quantizable(nn.Conv2d(16, 32, 3, padding=1, stride=2))
    assert not quantizable(nn.Conv2d(16, 32, 3, padding=2, dilation=2))
    assert not quantizable(nn.Conv2d(16, 32, 1))
    with pytest.raises(ValueError, match="int8 Winograd needs a 3x3 conv"):
        Int8WinogradConv2d(nn.Conv2d(8, 16, 1), torch.zeros(16, 8), torch.ones(16, 8))
    _, x, q = layer(1, 16, 16, 4, 4)
    with pytest.raises(ValueError, match="expects 16 input channels, got 32"):
        q(torch.randn(1, 32, 4, 4))


def test_int8_features_replaces_the_convs_and_keeps_the_indices():
    model = fold_batchnorm(randomize_bn(build("A_bn", width=1 / 4, num_classes=5, input_size=32)).eval())
    calibration = [torch.randn(2, 3, 32, 32) for _ in range(2)]
    features = int8_features(model.features, calibration, skip=1)
    assert len(features) == len(model.features)
    kinds = [type(m).__name__ for m in features]
    assert kinds.count("Int8WinogradConv2d") == 7  # A has 8 convs; conv1_1 (the raw image) stays fp32
    int8 = [m for m in features if isinstance(m, Int8WinogradConv2d)]
    assert all(m.relu for m in int8)
    # conv1_1 stays fp32: the compiled direct conv with its ReLU where the kernels run, torch's conv elsewhere
    assert kinds[:2] == (["SmallConv2d", "Identity"] if compiled.kernels() is not None else ["Conv2d", "ReLU"])
    assert [m.pool for m in int8] == [True, False, True, False, True, False, True]  # A: conv2_1 .. conv5_2
    assert kinds.count("MaxPool2d") == 1  # after conv1_1, which stays fp32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model.features(x)
    assert rel_norm(features(x), ref) < 3 * INT8_RTOL  # seven layers' rounding, not compounding much
    assert type(int8_features(model.features, calibration, skip=0)[0]).__name__ == "Int8WinogradConv2d"
    with pytest.raises(ValueError, match="at least one batch"):
        int8_features(model.features, [])


def test_the_kernel_gives_the_same_result_on_any_thread_count_and_from_several_threads(int8_isa):
    from concurrent.futures import ThreadPoolExecutor

    _, x, q = layer(2, 64, 128, 20, 18, relu=True, pool=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = q(x)
        torch.set_num_threads(max(2, threads))
        with ThreadPoolExecutor(4) as pool:  # callers on several Python threads share the kernel's workers
            outputs = list(pool.map(lambda _: q(x), range(8)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(out, alone) for out in outputs)
