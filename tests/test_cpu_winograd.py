import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import vggnet.evaluate as ev
from helpers import randomize_bn
from vggnet import build
from vggnet.configs import EvalConfig
from vggnet.cpu import compiled
from vggnet.cpu.fc_layers import Float32Linear
from vggnet.cpu.winograd import WinogradConv2d, choose_tile, transforms, winogradify, worth_it
from vggnet.optimize import optimize_for_inference
from vggnet.weights import save_weights

# fp32 rounding in the transforms, relative to the output's largest value (measured: F(2x2) about 2e-6,
# F(4x4) about 1e-5 at 64-512 channels)
RTOL = {2: 1e-5, 4: 5e-5}


def rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture(params=["avx512", "avx2", "python"])
def path(request, monkeypatch):
    """Each test with each build of the compiled kernels (skipped where the CPU lacks it) and with the Python path."""
    if request.param == "python":
        monkeypatch.setattr(compiled, "kernels", lambda: None)
        return "python"
    monkeypatch.setenv("VGGNET_ISA", request.param)
    if compiled.kernels() is None:
        pytest.skip(f"no {request.param} kernels here: {compiled.why_not()}")
    return "compiled"


def conv(c: int, k: int, seed: int = 0, **kw) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(c, k, 3, padding=1, **kw).eval()


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 13, 17), (2, 8, 5)])
def test_equals_the_direct_convolution(m, shape):
    n, h, w = shape
    c, k = 24, 40
    direct = conv(c, k)
    x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
    layer = WinogradConv2d(direct, m=m)
    with torch.no_grad():
        ref = direct(x)
    out = layer(x)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert rel_error(out, ref) < RTOL[m]


def test_chunks_of_tile_rows_and_fused_relu_give_the_same_result():
    direct = conv(32, 32, seed=1)
    x = torch.randn(2, 32, 30, 22).contiguous(memory_format=torch.channels_last)
    whole = WinogradConv2d(direct, relu=True)
    chunked = WinogradConv2d(direct, relu=True)
    chunked.chunk_bytes = 1  # one row of tiles per step: 8 steps per image
    with torch.no_grad():
        ref = F.relu(direct(x))
    assert rel_error(whole(x), ref) < RTOL[4]
    torch.testing.assert_close(chunked(x), whole(x), rtol=1e-6, atol=1e-6)
    assert (whole(x) >= 0).all()


def test_the_transforms_are_winograds_identity():
    """A^T [(G g G^T) * (B^T d B)] A is the 'valid' correlation of d with g, exactly in float64."""
    for m in (2, 4):
        bt, g, at = transforms(m)
        d, f = torch.randn(m + 2, m + 2, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
        y = at @ ((g @ f @ g.T) * (bt @ d @ bt.T)) @ at.T
        ref = F.conv2d(d[None, None], f[None, None])[0, 0]
        torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def test_tile_choice():
    assert choose_tile(224, 224) == 4 and choose_tile(56, 56) == 4 and choose_tile(75, 75) == 4
    assert choose_tile(14, 14) == 2  # 16 x 16 tiles would add 31% of work
    assert choose_tile(13, 17) == 2


def test_errors():
    with pytest.raises(
        ValueError, match=r"3x3 conv with stride 1, padding 1, groups 1; got kernel \(3, 3\), stride \(2, 2\)"
    ):
        WinogradConv2d(nn.Conv2d(8, 8, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match="dilation 1"):
        WinogradConv2d(nn.Conv2d(8, 8, 3, padding=1, dilation=2))
    with pytest.raises(ValueError, match=r"m=3 is not supported; use one of \[2, 4\]"):
        WinogradConv2d(conv(8, 8), m=3)
    with pytest.raises(ValueError, match="expects 8 input channels, got 4"):
        WinogradConv2d(conv(8, 8))(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="winograd=True needs channels_last=True"):
        optimize_for_inference(build("A", width=1 / 16), channels_last=False, winograd=True)


def test_winogradify_replaces_the_wide_convs_and_keeps_the_indices(path):
    with torch.device("meta"):
        model = build("vgg16")
    features = winogradify(model.features)
    kinds = [type(m).__name__ for m in features]
    assert len(features) == len(model.features) == 31
    # conv1_1 (3 -> 64) stays direct everywhere (the compiled direct conv with its ReLU where the kernels run);
    # conv1_2 (64 -> 64) gains with the compiled kernel only
    direct = 1 if path == "compiled" else 2
    assert kinds.count("WinogradConv2d") == 13 - direct
    if path == "compiled":  # and the 5 max pools, each after a conv the kernel takes, fused into it
        assert kinds[:2] == ["SmallConv2d", "Identity"] and kinds.count("Conv2d") == 0 and kinds.count("Identity") == 18
        assert kinds.count("MaxPool2d") == 0 and features[2].pool and not features[5].pool
    else:
        assert kinds[:2] == ["Conv2d", "ReLU"] and kinds.count("Conv2d") == 2 and kinds.count("Identity") == 11
        assert kinds[4] == "MaxPool2d" and kinds.count("MaxPool2d") == 5
    assert kinds[5:7] == ["WinogradConv2d", "Identity"]
    worth = [worth_it(conv(c, k)) for c, k in [(3, 64), (64, 64), (64, 128), (512, 512), (24, 40)]]
    assert worth == ([False, True, True, True, False] if path == "compiled" else [False, False, True, True, False])


def test_optimized_winograd_vgg_matches_the_model_and_its_score_map(path):
    torch.manual_seed(0)
    model = randomize_bn(build("D_bn", width=1 / 4, num_classes=7, input_size=64, head="conv")).eval()
    fast = optimize_for_inference(model, winograd=True)
    # compiled: every conv from conv1_2 (16 -> 16); Python: conv4_1 (64 -> 128) .. conv5_3
    assert sum(isinstance(m, WinogradConv2d) for m in fast.model.features) == (12 if path == "compiled" else 6)
    x = torch.randn(2, 3, 64, 64)
    big = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref, ref_map = model(x), model.score_map(big)
    assert rel_error(fast(x), ref) < 1e-4
    got_map = fast.score_map(big)
    assert got_map.shape == ref_map.shape == (1, 7, 2, 3) and rel_error(got_map, ref_map) < 1e-4


def test_evaluate_fast_gives_the_same_posteriors(tmp_path, monkeypatch):
    monkeypatch.setattr(compiled, "kernels", lambda: None)  # the Python path's layer count below
    torch.manual_seed(0)
    model = randomize_bn(build("A_bn", width=1 / 4, num_classes=10, input_size=32)).eval()
    w = tmp_path / "w.safetensors"
    save_weights(model, w, class_names=[str(d) for d in range(10)], extra={"scale": [32, 48]})
    base = EvalConfig(limit=8, scales="32,48", device="cpu")
    plain = ev.evaluate([w], "digits", base, progress=False)
    fast = ev.evaluate([w], "digits", EvalConfig(**{**base.__dict__, "fast": True}), progress=False)
    nets = ev.load_networks(ev.read_networks([w], "paper"), "cpu", fast=True)
    assert (
        sum(isinstance(m, WinogradConv2d) for m in nets[0].model.features) == 4
    )  # conv4_1 (64 -> 128), conv4_2, conv5_1, conv5_2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in nets[0].model.modules())
    torch.testing.assert_close(fast.probs, plain.probs, rtol=0, atol=1e-5)


# -- the compiled kernel (csrc/winograd_f32.cpp) --------------------------------------------------


@pytest.mark.parametrize(
    "n, c, k, h, w",
    [
        (1, 16, 32, 13, 17),  # odd sizes: partial tiles on both edges, a pooled map rounded down
        (8, 16, 32, 13, 17),  # batch 8: tiles of several images in one chunk
        (1, 48, 16, 7, 9),  # K below one 64-wide panel
        (8, 64, 80, 5, 30),  # K not a multiple of 64: a zero-padded panel
        (2, 32, 16, 2, 3),  # one tile, mostly padding; one pooled pixel
        (1, 64, 64, 56, 56),  # many chunks of tiles
    ],
)
@pytest.mark.parametrize("relu, pool", [(False, False), (True, False), (True, True)])
def test_compiled_kernel_equals_the_direct_convolution(isa, n, c, k, h, w, relu, pool):
    direct = conv(c, k, seed=n + h)
    layer = WinogradConv2d(direct, relu=relu, pool=pool)
    x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
    assert layer.compiled(x)
    ref = F.conv2d(x.double(), direct.weight.double(), direct.bias.double(), padding=1)
    ref = F.max_pool2d(F.relu(ref) if relu else ref, 2) if pool else (F.relu(ref) if relu else ref)
    out = layer(x)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert rel_error(out.double(), ref) < RTOL[4]


def test_a_pool_the_kernel_cannot_take_is_torchs(isa):
    layer = WinogradConv2d(conv(16, 16), relu=True, pool=True)
    x = torch.randn(1, 16, 1, 5).contiguous(memory_format=torch.channels_last)  # one row: nothing to pool
    with pytest.raises(RuntimeError, match="Output size is too small"):
        layer(x)


def test_the_kernel_takes_nchw_input_and_leaves_what_it_cannot_take_to_python(monkeypatch):
    if compiled.kernels() is None:
        pytest.skip(f"no compiled kernel: {compiled.why_not()}")
    direct = conv(16, 16)
    x = torch.randn(1, 16, 10, 11)  # NCHW memory: made channels-last for the kernel
    with torch.no_grad():
        ref = direct(x)
    assert rel_error(WinogradConv2d(direct)(x), ref) < RTOL[4]
    assert not WinogradConv2d(direct, m=2).compiled(x)  # F(2x2) is the Python path's
    assert not WinogradConv2d(conv(24, 16)).compiled(x.new_zeros(1, 24, 4, 4))  # 24 channels: not a multiple of 16
    assert not WinogradConv2d(direct).compiled(x.double())
    calls = []
    monkeypatch.setattr(compiled, "kernels", lambda: calls.append(1))  # None: the fallback, asked once per call
    assert rel_error(WinogradConv2d(direct)(x), ref) < RTOL[4] and calls == [1]


@pytest.fixture(scope="module")
def vgg16_and_torchvisions_logits():
    """VGG16 with torchvision's weights (its own init, seed 0), an input and torchvision's logits for it."""
    torch.manual_seed(0)
    tv = torchvision.models.vgg16().eval()
    ours = build("vgg16")
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        return ours, x, tv(x)


@pytest.mark.slow  # VGG16 at full size, 224x224: a few seconds per path
def test_vgg16_fast_path_is_within_1e4_of_torchvision(path, vgg16_and_torchvisions_logits):
    model, x, ref = vgg16_and_torchvisions_logits
    fast = optimize_for_inference(model, winograd=True)
    fc = [type(m).__name__ for m in fast.model.classifier if isinstance(m, (nn.Linear, Float32Linear))]
    assert fc == ["Float32Linear" if path == "compiled" else "Linear"] * 3  # FC6-FC8 on the kernels where they run
    assert rel_error(fast(x), ref) < 1e-4


def test_the_fast_path_says_once_when_it_runs_without_the_kernels(monkeypatch, capsys):
    import vggnet.io

    monkeypatch.setattr(vggnet.io, "_told", set())
    monkeypatch.setattr(compiled, "kernels", lambda: None)
    monkeypatch.setattr(compiled, "why_not", lambda: "no C++ compiler (c++ or g++) on PATH")
    with torch.device("meta"):
        features = build("A", width=1 / 16).features
    winogradify(features)
    winogradify(features)
    err = capsys.readouterr().err
    assert err == (
        "vggnet: no compiled CPU kernels (no C++ compiler (c++ or g++) on PATH): "
        "the fast path runs its slower PyTorch form\n"
    )
