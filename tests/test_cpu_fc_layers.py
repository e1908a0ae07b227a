"""vggnet.cpu.fc_layers: the FC layers equal their (integer) references, and Int8Net reads the map as it lies."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vggnet import build
from vggnet.compress import factorise
from vggnet.cpu.fc_layers import (
    Float32Linear,
    Int8Linear,
    Int8Net,
    _reads_channels_last,
    float32_classifier,
    int8_classifier,
    kernels_run,
)
from vggnet.optimize import quantize_int8


def rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.mark.parametrize(
    "n, kin, kout, relu, signed",
    [
        (1, 4096, 4096, True, False),  # FC7 at batch 1: post-ReLU inputs, zero point 0
        (8, 3136, 256, True, False),  # passes of 4 rows (2 with AVX-VNNI), 4 slices of K
        (5, 37, 70, False, True),  # K not a multiple of 4, outputs not of 64, negative inputs (zero point > 0)
        (3, 1030, 1000, True, True),  # a slice of 1024 and a remainder
    ],
)
def test_int8_kernel_equals_its_reference_and_stays_near_fp32(int8_isa, n, kin, kout, relu, signed):
    torch.manual_seed(kin + kout)
    linear = nn.Linear(kin, kout)
    x = torch.randn(n, kin) if signed else torch.randn(n, kin).relu()
    layer = Int8Linear(linear, relu=relu)
    got, ref = layer(x), layer.reference(x)
    assert got.shape == (n, kout)
    assert rel(got, ref) < 1e-6  # the same integers; only the fp32 scaling rounds
    exact = F.relu(linear(x)) if relu else linear(x)
    assert rel(got, exact) < 0.02  # 8-bit rounding of weights and inputs


@pytest.mark.parametrize("n, kin, kout", [(9, 4096, 1000), (1, 37, 70), (4, 1030, 64)])
def test_float32_kernel_equals_a_float64_reference(isa, n, kin, kout):
    torch.manual_seed(kin)
    linear = nn.Linear(kin, kout)
    x = torch.randn(n, kin)
    assert kernels_run(x, int8=False)
    ref = F.linear(x.double(), linear.weight.double(), linear.bias.double())
    assert rel(Float32Linear(linear)(x), ref) < 1e-5
    assert rel(Float32Linear(linear, relu=True)(x), ref.relu()) < 1e-5


def test_float32_classifier_keeps_the_indices_and_the_weights():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 70)).eval()
    fast = float32_classifier(head)
    assert [type(m).__name__ for m in fast] == ["Float32Linear", "Identity", "Dropout", "Float32Linear"]
    assert fast[0].relu and not fast[3].relu
    assert torch.equal(fast[0].weight, head[0].weight) and torch.equal(fast[3].weight, head[3].weight)
    x = torch.randn(3, 12, dtype=torch.float64)  # not fp32: torch's Linear on the unpacked weights
    with torch.no_grad():
        assert torch.allclose(fast(x), head.double()(x))


def test_the_reference_rounds_a_row_over_its_own_range():
    linear = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 127.0]]))
    layer = Int8Linear(linear)
    x = torch.tensor([[0.0, 0.0, 0.0, 255.0], [-1.0, 0.0, 0.0, 0.0]])  # steps of exactly 1 and 1/255
    assert torch.equal(layer.reference(x), torch.tensor([[0.0, 255.0 * 127], [-1.0, 0.0]]))


def test_bad_shapes_are_one_line():
    layer = Int8Linear(nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r"Int8Linear expects \(N, 8\) inputs, got \(2, 9\)"):
        layer(torch.randn(2, 9))
    with pytest.raises(ValueError, match=r"Float32Linear expects \(N, 8\) inputs, got \(8,\)"):
        Float32Linear(nn.Linear(8, 4))(torch.randn(8))
    with pytest.raises(ValueError, match="takes 10 inputs, not the 2x2x2 feature map"):
        _reads_channels_last(nn.Linear(10, 3), 2, 2, 2)


def test_the_first_layer_reads_the_channels_last_order():
    torch.manual_seed(1)
    linear = nn.Linear(3 * 2 * 5, 4)
    f = torch.randn(2, 3, 2, 5)
    permuted = _reads_channels_last(linear, 3, 2, 5)
    assert torch.allclose(permuted(f.permute(0, 2, 3, 1).reshape(2, -1)), linear(f.flatten(1)), atol=1e-6)
    head = build("A", width=1 / 16, num_classes=5, input_size=64).classifier
    kinds = [type(m).__name__ for m in int8_classifier(head, keep_last=True, channels_last=(32, 2, 2))]
    assert kinds == ["Int8Linear", "Identity", "Dropout", "Int8Linear", "Identity", "Dropout", "Float32Linear"]


class CountingPool(nn.AdaptiveAvgPool2d):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingPool.calls += 1
        return super().forward(x)


def test_int8net_pools_only_when_the_map_is_not_yet_pooled():
    head = nn.Sequential(Float32Linear(nn.Linear(2 * 2 * 3, 4)))
    net = Int8Net(nn.Sequential(nn.Identity()), CountingPool((2, 2)), head)
    CountingPool.calls = 0
    net(torch.randn(1, 3, 2, 2))
    assert CountingPool.calls == 0
    assert net(torch.randn(1, 3, 4, 6)).shape == (1, 4) and CountingPool.calls == 1


def test_a_factorised_fc6_keeps_torchs_flatten_order(int8_isa):
    torch.manual_seed(2)
    model = build("A", width=1 / 8, num_classes=6, input_size=64).eval()
    small = factorise(model, {"fc6": 8})
    q = quantize_int8(small, [torch.randn(4, 3, 64, 64)])
    assert type(q.quantized).__name__ == "VGG"  # not Int8Net: FC6 is a pair of Linears
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert rel(q(x), small(x)) < 0.1
