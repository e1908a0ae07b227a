import pytest
import torch
import torchvision

from vggnet import VGG, build, count_parameters
from vggnet.configs import CONFIGS, HEADS, TABLE1

PARAMS = {
    "A": 132_863_336,
    "A-LRN": 132_863_336,
    "B": 133_047_848,
    "C": 133_638_952,
    "D": 138_357_544,
    "E": 143_667_240,
}


@pytest.mark.parametrize("letter", list(TABLE1))
def test_parameter_count_matches_paper(letter):
    with torch.device("meta"):
        assert count_parameters(build(letter)) == PARAMS[letter]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("letter", list(CONFIGS))
def test_forward_backward_every_config(letter, bn, head):
    # width 1/16 and a 64-pixel input with a 2x2 FC6 grid keep this fast; the structure is the full one.
    model = VGG(arch=letter, batch_norm=bn, head=head, width=1 / 16, input_size=64, num_classes=7)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 7)
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert torch.isfinite(out).all()


TORCHVISION = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("letter", list(TORCHVISION))
def test_torchvision_names_and_shapes_match(letter, bn):
    # On the meta device: the full-size state dicts' names and shapes, without allocating 530 MB each.
    with torch.device("meta"):
        ref = getattr(torchvision.models, TORCHVISION[letter] + ("_bn" if bn else ""))(weights=None)
        ours = VGG(arch=letter, batch_norm=bn)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)  # strict: no key missing or unexpected


@pytest.mark.slow
@pytest.mark.parametrize("bn", [False, True], ids=["D", "D_bn"])
def test_torchvision_vgg16_loads_strict_and_gives_equal_outputs(bn):
    # The one full-size numeric comparison: torchvision's VGG16 (and _bn) weights in ours, same logits.
    ref = (torchvision.models.vgg16_bn if bn else torchvision.models.vgg16)(weights=None).eval()
    if bn:  # non-trivial running statistics, so BN is really compared
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = VGG(arch="D", batch_norm=bn).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


# Section 4.1's shallow nets, counted by hand: (k*k*c_in + 1) * c_out per conv, (in + 1) * out per FC.
SHALLOW = {"B-5x5": [(5, 64), (5, 128), (5, 256), (5, 512), (5, 512)], "D-7x7": [(5, 64), (5, 128), (7, 256), (7, 512), (7, 512)]}  # fmt: skip


def shallow_counts(letter: str, side: int = 224, classes: int = 1000) -> tuple[int, int]:
    """(parameters, MACs) of a shallow variant at a side x side input, from the layer list alone."""
    params = macs = 0
    c_in = 3
    for k, c_out in SHALLOW[letter]:
        params += (k * k * c_in + 1) * c_out
        macs += side * side * k * k * c_in * c_out  # "same" padding keeps the side, then a 2x2 pool halves it
        side //= 2
        c_in = c_out
    for fan_in, fan_out in ((512 * 7 * 7, 4096), (4096, 4096), (4096, classes)):
        params += (fan_in + 1) * fan_out
        macs += fan_in * fan_out
    return params, macs


@pytest.mark.parametrize("letter", list(SHALLOW))
def test_shallow_variants_parameters_and_macs(letter):
    from vggnet.analysis import layer_table, totals

    params, macs = shallow_counts(letter)
    with torch.device("meta"):
        model = build(letter)
    t = totals(layer_table(model, 224))
    assert (count_parameters(model), t["params"], t["macs"]) == (params, params, macs)
    assert {"B-5x5": (134_503_528, 9_356_017_664), "D-7x7": (144_727_144, 15_521_644_544)}[letter] == (params, macs)


def test_b5x5_replaces_each_pair_of_b_by_one_5x5_with_the_same_receptive_field():
    from vggnet.analysis import layer_table

    with torch.device("meta"):
        b, shallow = build("B"), build("B-5x5")
    kernels = [m.kernel_size for m in shallow.features if isinstance(m, torch.nn.Conv2d)]
    widths = [m.out_channels for m in shallow.features if isinstance(m, torch.nn.Conv2d)]
    assert kernels == [(5, 5)] * 5 and widths == [64, 128, 256, 512, 512]
    pools = {r.name: (r.shape, r.rf) for r in layer_table(b) if r.name.startswith("pool")}
    assert pools == {r.name: (r.shape, r.rf) for r in layer_table(shallow) if r.name.startswith("pool")}
    assert [n for n in shallow.feature_names if n.startswith("conv")] == [
        "conv1_1",
        "conv2_1",
        "conv3_1",
        "conv4_1",
        "conv5_1",
    ]


def test_lrn_sits_after_relu1_1_with_alexnet_constants():
    model = VGG(arch="A-LRN")
    names = model.feature_names
    assert names[:4] == ["conv1_1", "relu1_1", "norm1", "pool1"]
    lrn = model.features[2]
    assert isinstance(lrn, torch.nn.LocalResponseNorm)
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)


def test_config_c_has_three_1x1_convs():
    model = VGG(arch="C", width=1 / 16)
    kernels = {
        name: m.kernel_size for name, m in zip(model.feature_names, model.features, strict=True) if "conv" in name
    }
    assert [n for n, k in kernels.items() if k == (1, 1)] == ["conv3_3", "conv4_3", "conv5_3"]


@pytest.fixture(scope="module")
def vgg_a():
    torch.manual_seed(1)
    return VGG(arch="A", width=1 / 8).eval()


def test_fc_conv_fc_round_trip(vgg_a):
    x = torch.randn(2, 3, 224, 224)
    conv = vgg_a.to_head("conv")
    back = conv.to_head("fc")
    with torch.no_grad():
        fc_out, conv_out, back_out = vgg_a(x), conv(x), back(x)
    # Same weights, different kernels (GEMM vs conv): equal to float32 rounding.
    torch.testing.assert_close(conv_out, fc_out, rtol=1e-5, atol=1e-5)
    assert torch.equal(back_out, fc_out)
    for key, value in vgg_a.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


@pytest.mark.parametrize("side, expected", [(224, 1), (256, 2), (384, 6), (288, 3)])
def test_dense_score_map_side(vgg_a, side, expected):
    conv = vgg_a.to_head("conv")
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        smap = conv.score_map(x)
        assert smap.shape == (1, 1000, expected, expected)
        assert expected == side // 32 - 6
        torch.testing.assert_close(smap.mean(dim=(2, 3)), conv(x), rtol=0, atol=0)
        # the fc head computes the same map without conversion
        torch.testing.assert_close(vgg_a.score_map(x), smap, rtol=1e-5, atol=1e-5)


def test_channels_last_conv_head_score_map_equals_fc_head(vgg_a):
    # for_evaluation's layout: FC6 weights stored (out, kh, kw, C); the dense head reads them as a view.
    conv = vgg_a.to_head("conv").to(memory_format=torch.channels_last)
    assert not conv.classifier[0].weight.is_contiguous()
    x = torch.randn(2, 3, 256, 320)
    with torch.no_grad():
        expected = vgg_a.score_map(x)
        got = conv.score_map(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == expected.shape == (2, 1000, 2, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gap_head_cuts_90_percent_of_vgg16():
    with torch.device("meta"):
        fc, gap = count_parameters(build("D")), count_parameters(build("D", head="gap"))
    assert gap == 14_714_688 + 512 * 1000 + 1000
    assert 1 - gap / fc > 0.88


def test_gap_score_map_is_class_activation_map():
    model = VGG(arch="B", head="gap", width=1 / 16, num_classes=5).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        cam = model.score_map(x)
        assert cam.shape == (1, 5, 3, 4)
        torch.testing.assert_close(cam.mean(dim=(2, 3)), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("init", ["paper", "glorot", "kaiming"])
def test_init_schemes(init):
    torch.manual_seed(0)
    model = VGG(arch="A", init=init, width=1 / 4)
    conv = model.features[0]
    fc7 = model.classifier[3]
    assert torch.count_nonzero(conv.bias) == 0
    if init == "paper":
        assert abs(conv.weight.std().item() - 0.01) < 0.002
        assert abs(fc7.weight.std().item() - 0.01) < 0.0005
    elif init == "glorot":
        fan_in, fan_out = fc7.weight.shape[1], fc7.weight.shape[0]
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert fc7.weight.abs().max() <= bound
        assert fc7.weight.abs().max() > 0.9 * bound
    else:
        expected = (2 / (conv.out_channels * 9)) ** 0.5  # fan_out mode
        assert abs(conv.weight.std().item() - expected) / expected < 0.2


def test_errors_are_one_line_and_name_the_value():
    with pytest.raises(ValueError, match="unknown VGG configuration 'F'"):
        VGG(arch="F")
    with pytest.raises(ValueError, match="unknown head 'mlp'; accepted: fc, conv, gap"):
        VGG(head="mlp")
    model = VGG(arch="A", head="conv", width=1 / 16)
    with pytest.raises(ValueError, match="input 200x200 is smaller than 224x224"):
        model(torch.randn(1, 3, 200, 200))
    with pytest.raises(ValueError, match="input has 1 channels; this VGG accepts 3"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match="input 16x16 is smaller than 32x32"):
        VGG(arch="A", width=1 / 16)(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="cannot convert a gap head to fc"):
        VGG(arch="A", head="gap", width=1 / 16).to_head("fc")


def test_in_channels_option():
    model = VGG(arch="A", in_channels=1, width=1 / 16, input_size=32, num_classes=3)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
