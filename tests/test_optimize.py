import warnings
from collections import Counter

import pytest
import torch
import torchvision
from torch import nn

from helpers import randomize_bn
from vggnet import build
from vggnet.configs import CONFIGS
from vggnet.optimize import fold_batchnorm, optimize_for_inference, quantize_int8

# Folding computes W' and b' in float64 and rounds once to float32: outputs agree with the
# BN model to 1e-5 of the largest logit (measured: about 1e-6).
FOLD_RTOL = 1e-5


def with_bn_statistics(model: nn.Module) -> nn.Module:
    return randomize_bn(model, var=(0.3, 2.0))


def max_rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return (got - ref).abs().max().item() / ref.abs().max().item()


@pytest.mark.parametrize("letter", list(CONFIGS))
def test_fold_batchnorm_is_exact_in_eval_mode(letter):
    model = with_bn_statistics(build(letter + "_bn", width=1 / 16, num_classes=7, input_size=64)).eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert folded.cfg.batch_norm is False and len(folded.features) == len(model.features) - (
        sum(isinstance(m, nn.BatchNorm2d) for m in model.features)
    )
    assert [n for n in folded.feature_names if n.startswith("conv")] == [
        n for n in model.feature_names if n.startswith("conv")
    ]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_rel_error(folded(x), model(x)) < FOLD_RTOL


def test_folded_vgg16_bn_loads_into_torchvision_vgg16():
    model = with_bn_statistics(build("vgg16_bn", width=1 / 16, num_classes=4)).eval()
    with torch.device("meta"):
        ref = torchvision.models.vgg16(num_classes=4)
    # the layer names of torchvision's plain VGG16
    assert [k for k in fold_batchnorm(model).state_dict()] == [k for k in ref.state_dict()]


def test_fold_leaves_the_input_model_alone():
    model = with_bn_statistics(build("A_bn", width=1 / 16, num_classes=3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    plain = build("A", width=1 / 16, num_classes=3)
    copy = fold_batchnorm(plain)
    assert copy is not plain and all(
        torch.equal(a, b) for a, b in zip(copy.parameters(), plain.parameters(), strict=True)
    )


@pytest.mark.parametrize("channels_last", [False, True])
def test_optimize_for_inference_matches_eval_model(channels_last):
    model = with_bn_statistics(build("B_bn", width=1 / 16, num_classes=5, head="conv")).eval()
    fast = optimize_for_inference(model, channels_last=channels_last)
    x = torch.randn(2, 3, 256, 224)
    with torch.no_grad():
        ref, ref_map = model(x), model.score_map(x)
    out = fast(x)
    assert max_rel_error(out, ref) < FOLD_RTOL and max_rel_error(fast.score_map(x), ref_map) < FOLD_RTOL
    assert not out.requires_grad
    conv = fast.model.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert not any(p.requires_grad for p in fast.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the input model still has its BN
    with pytest.raises(ValueError, match="input has 1 channels"):
        fast(torch.randn(1, 1, 224, 224))


@pytest.mark.slow  # inductor compiles C++ kernels: about 40 s on 2 cores
def test_optimize_with_compile_matches_eval_model():
    model = with_bn_statistics(build("A_bn", width=1 / 16, num_classes=5, head="gap")).eval()
    fast = optimize_for_inference(model, compile=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    assert max_rel_error(fast(x), ref) < FOLD_RTOL
    assert max_rel_error(fast(x), ref) < FOLD_RTOL  # second call: the compiled graph, no recompile


# Quantisation error of int8 weights and activations on these random narrow models:
# measured 1-3% of the largest logit; 10% leaves room and still fails for a wrong graph.
INT8_RTOL = 0.1


def assert_int8_close_to_fp32(q: nn.Module, model: nn.Module) -> None:
    """q's logits on a batch of 4 are fp32, shaped (4, 6), and within INT8_RTOL of the fp32 model's."""
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    out = q(x)
    assert out.dtype == torch.float32 and out.shape == (4, 6)
    assert max_rel_error(out, ref) < INT8_RTOL


# Every weight layer of configuration A becomes an int8 module, ReLU fused where one follows; conv1_1 and FC8
# stay float unless keep_first_fp32 / keep_last_fp32 are False.
INT8_LAYERS = {
    "fc": {"ConvReLU2d": 8, "LinearReLU": 2},
    "conv": {"ConvReLU2d": 8 + 2},  # FC6, FC7 as convs with ReLU
}
INT8_LAST = {"fc": "Linear", "conv": "Conv2d"}


@pytest.mark.parametrize(("keep_first_fp32", "keep_last_fp32"), [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize("head", ["fc", "conv"])
def test_quantize_int8_fx_is_int8_and_close_to_fp32(head, keep_first_fp32, keep_last_fp32):
    model = with_bn_statistics(build("A_bn", width=1 / 8, num_classes=6, head=head, input_size=64)).eval()
    calibration = [torch.randn(4, 3, 64, 64) for _ in range(3)]
    keep = {"keep_first_fp32": keep_first_fp32, "keep_last_fp32": keep_last_fp32}
    q = quantize_int8(model, calibration, winograd=False, **keep)
    # quantized modules with int8 weights (the packed weight is read back through .weight())
    weights = [m for m in q.modules() if ".quantized" in type(m).__module__ and callable(getattr(m, "weight", None))]
    expected = (
        Counter(INT8_LAYERS[head])
        - Counter({"ConvReLU2d": int(keep_first_fp32)})
        + Counter({} if keep_last_fp32 else {INT8_LAST[head]: 1})
    )
    assert Counter(type(m).__name__ for m in weights) == expected
    assert all(m.weight().dtype == torch.qint8 for m in weights)
    float_layers = [m for m in q.modules() if type(m) in (torch.nn.Linear, torch.nn.Conv2d)]
    sizes = [m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels for m in float_layers]
    assert sizes == [8] * keep_first_fp32 + [6] * keep_last_fp32  # conv1_1 has 64 / 8 channels
    assert_int8_close_to_fp32(q, model)


# The Winograd path: the 3x3 convs but conv1_1 as int8 F(2x2) layers (7 of A's 8), FC6 and FC7 (and FC8
# unless kept) as Int8Linears, a kept FC8 as a Float32Linear.
@pytest.mark.parametrize("keep_last_fp32", [True, False])
def test_quantize_int8_winograd_is_int8_and_close_to_fp32(keep_last_fp32):
    model = with_bn_statistics(build("A_bn", width=1 / 8, num_classes=6, input_size=64)).eval()
    calibration = [torch.randn(4, 3, 64, 64) for _ in range(3)]
    q = quantize_int8(model, calibration, winograd=True, keep_last_fp32=keep_last_fp32)
    kinds = Counter(type(m).__name__ for m in q.modules())
    assert kinds["Int8WinogradConv2d"] == 7 and kinds["Conv2d"] == 1  # conv1_1: 8 maps, too few for SmallConv2d
    assert kinds["Int8Linear"] == 2 + (not keep_last_fp32) and kinds["Float32Linear"] == keep_last_fp32
    assert kinds["Linear"] == 0 and type(q.quantized).__name__ == "Int8Net"
    assert_int8_close_to_fp32(q, model)
    bigger = torch.randn(2, 3, 96, 80)  # a 3x2 feature map: the average pool runs, then the channels-last flatten
    with torch.no_grad():
        assert max_rel_error(q(bigger), model(bigger)) < INT8_RTOL


def test_quantize_int8_errors():
    model = build("A", width=1 / 16, num_classes=3, input_size=64).eval()
    with pytest.raises(ValueError, match="at least one calibration batch"):
        quantize_int8(model, [])
    with pytest.raises(ValueError, match="input has 1 channels"):
        quantize_int8(model, [torch.randn(1, 1, 64, 64)])
    q = quantize_int8(model, [torch.randn(2, 3, 64, 64)])
    with pytest.raises(ValueError, match="smaller than 32x32"):
        q(torch.randn(1, 3, 16, 16))


def test_quantize_int8_warns_where_its_kernel_cannot_run(monkeypatch):
    model = build("A", width=1 / 16, num_classes=3, input_size=32).eval()
    monkeypatch.setenv("VGGNET_NATIVE", "0")
    with pytest.warns(UserWarning) as caught:
        quantize_int8(model, [torch.randn(2, 3, 32, 32)])
    assert [str(w.message) for w in caught] == [
        "quantize_int8: no int8 kernel here (no compiled kernels: VGGNET_NATIVE=0), so the int8 model runs on PyTorch's "
        "int8 ops, slower than the fast fp32 path, optimize_for_inference(model, winograd=True) (--fast); "
        "benchmarks/results/runtimes_avx2.md has the measured factor"
    ]


def test_quantize_int8_warns_exactly_where_the_int8_kernels_do_not_run(isa):
    from vggnet.cpu import compiled
    from vggnet.cpu.int8_conv import kernel_available

    model = build("A", width=1 / 16, num_classes=3, input_size=32).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_int8(model, [torch.randn(2, 3, 32, 32)])
    told = [str(w.message) for w in caught if str(w.message).startswith("quantize_int8: no int8 kernel here")]
    assert kernel_available() == (isa == "avx512" and torch.cpu._is_vnni_supported())
    if kernel_available():
        assert told == []
    else:
        assert len(told) == 1 and f"({compiled.int8_why_not()})" in told[0]
    assert isa == "avx512" or compiled.int8_why_not() == "VGGNET_ISA=avx2: as on a CPU without AVX-VNNI"
