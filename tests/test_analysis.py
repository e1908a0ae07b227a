import pytest
import torch

from vggnet import VGG, build, count_parameters
from vggnet.analysis import compare_kernels, layer_table, receptive_field, table2, totals

MACS = {"A": 7.609, "A-LRN": 7.609, "B": 11.308, "C": 11.771, "D": 15.470, "E": 19.632}


def test_table2_params_and_macs():
    rows = {r.config: r for r in table2()}
    assert [r.weight_layers for r in rows.values()] == [11, 11, 13, 16, 16, 19, 8, 8]  # Table 1, then B-5x5, D-7x7
    assert rows["B-5x5"].paper_params_m is None and [r.config for r in table2(configs=["B", "B-5x5"])] == ["B", "B-5x5"]
    assert rows["D"].params == 138_357_544
    assert rows["E"].paper_params_m == 144
    for letter, gmacs in MACS.items():
        assert round(rows[letter].gmacs, 3) == gmacs, letter


def rows_by_name(model, size=224):
    return {r.name: r for r in layer_table(model, size)}


def test_receptive_field_and_jump_of_d():
    with torch.device("meta"):
        rows = rows_by_name(build("D"))
    # three stacked 3x3 convs see 7x7
    assert rows["conv3_3"].rf - rows["pool2"].rf == (7 - 1) * rows["pool2"].jump
    assert [rows[f"conv1_{i}"].rf for i in (1, 2)] == [3, 5]
    assert (rows["pool5"].rf, rows["pool5"].jump) == (212, 32)
    assert rows["pool5"].shape == (512, 7, 7)
    # FC6 is 102,760,448 weights, ~74% of VGG16
    assert rows["fc6"].params - 4096 == 102_760_448
    assert 0.74 < rows["fc6"].params / 138_357_544 < 0.745


def test_three_3x3_from_input_is_7():
    with torch.device("meta"):
        model = VGG(arch="D")
    # the first block has two convs then a pool; check the rf rule 2n+1 on fresh convs
    rows = layer_table(model, 224)
    assert rows[0].rf == 3 and rows[2].rf == 5


@pytest.mark.parametrize("head", ["fc", "conv", "gap"])
@pytest.mark.parametrize("bn", [False, True])
def test_table_params_equal_model(head, bn):
    with torch.device("meta"):
        model = VGG(arch="C", head=head, batch_norm=bn, num_classes=10)
    assert totals(layer_table(model, 224))["params"] == count_parameters(model)


def test_dense_output_shape_in_table():
    with torch.device("meta"):
        model = build("D", head="conv")
    rows = rows_by_name(model, 384)
    assert rows["fc8"].shape == (1000, 6, 6)
    assert rows["pool5"].memory == 4 * 512 * 12 * 12


def test_macs_match_a_traced_count():
    # Count MACs independently with forward hooks on a real (small) forward pass.
    model = VGG(arch="B", width=1 / 8, num_classes=10).eval()
    counted = 0

    def hook(m, inp, out):
        nonlocal counted
        if isinstance(m, torch.nn.Conv2d):
            counted += out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            counted += m.in_features * m.out_features

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert totals(layer_table(model, 224))["macs"] == counted


def test_too_small_input_is_refused():
    with torch.device("meta"):
        model = build("D", head="conv")
    with pytest.raises(ValueError, match="input 100x100 is smaller than 224"):
        layer_table(model, 100)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [64, 512])
def test_compare_kernels_counts_built_modules(n, channels):
    k = compare_kernels(n, channels)
    assert k.rf == 2 * n + 1
    assert k.stacked_weights == 9 * n * channels**2
    assert k.single_weights == (2 * n + 1) ** 2 * channels**2
    assert (k.stacked_relus, k.single_relus) == (n, 1)


def test_compare_kernels_three_3x3_vs_7x7():
    k = compare_kernels(3, 1)  # the paper's example: 27C^2 vs 49C^2
    assert (k.rf, k.stacked_weights, k.single_weights) == (7, 27, 49)
    with pytest.raises(ValueError, match="need n >= 1"):
        compare_kernels(0, 64)


def test_receptive_field_of_a_chain_matches_layer_table():
    with torch.device("meta"):
        model = build("E")
    rows = {r.name: r for r in layer_table(model, 224)}
    assert receptive_field(model.features) == rows["pool5"].rf == 268
    assert receptive_field([torch.nn.Conv2d(1, 1, 3, dilation=2), torch.nn.AvgPool2d(2)]) == 6
