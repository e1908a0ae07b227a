"""Caffe .caffemodel: V1 and V2 nets read back exactly, with the BGR preprocessing they were trained on."""

import pytest
import torch

from vggnet import build
from vggnet.weights import Preprocessing, detect_source, import_weights
from weights_files import W, logits, write_caffemodel


def caffe_input(x: torch.Tensor) -> torch.Tensor:
    """What a Caffe VGG expects from 0-1 RGB: BGR order, 0-255, minus the mean pixel (B, G, R)."""
    return x[:, [2, 1, 0]] * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


@pytest.mark.parametrize("config,version", [("D", "v1"), ("E", "v2"), ("A-LRN", "v2")])
def test_caffemodel_reads_back_with_bgr_input(tmp_path, config, version):
    source = build(config, width=W, num_classes=9).eval()
    path = tmp_path / "VGG_ILSVRC_layers.caffemodel"
    write_caffemodel(path, source, version)
    assert detect_source(path) == "caffe"
    model, meta = import_weights(path)
    assert (model.cfg.arch, model.cfg.num_classes) == (config, 9)
    assert meta.source == "caffe" and meta.preprocessing == Preprocessing.caffe()
    x = torch.rand(1, 3, 96, 96)
    # The recorded preprocessing turns 0-1 RGB into exactly what the Caffe net was given ...
    expected = logits(source, caffe_input(x))
    assert torch.allclose(logits(model, meta.preprocessing(x)), expected, rtol=1e-5, atol=1e-6)
    # ... and the channel order matters: the same pixels in RGB order give other scores.
    rgb = x * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    assert not torch.allclose(logits(model, rgb), expected, rtol=1e-3, atol=1e-5)


def test_caffemodel_blobs_are_copied_exactly(tmp_path):
    source = build("B", width=W, num_classes=4)
    write_caffemodel(tmp_path / "b.caffemodel", source, "v1")
    model, _ = import_weights(tmp_path / "b.caffemodel")
    for (k, a), (_, b) in zip(model.state_dict().items(), source.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("bias", [5, 8, 2])  # not a divisor of the weight's 108 values; a multiple; a divisor
def test_a_convolution_whose_weight_and_bias_disagree_is_one_line(tmp_path, capsys, bias):
    from PIL import Image

    from helpers import one_line_refusal
    from hostile_files import caffe_disagreeing_conv
    from vggnet.cli import main

    path = caffe_disagreeing_conv(tmp_path / "c.caffemodel", build("A", width=W, num_classes=3), bias)
    Image.new("RGB", (40, 40)).save(tmp_path / "x.png")
    expected = f"layer conv1_1 (Convolution) has a weight of shape (4, 3, 3, 3) and {bias} biases: its blobs disagree"
    for command, out in (
        ("convert", [str(path), str(tmp_path / "out.safetensors")]),
        ("features", [str(tmp_path / "x.png"), "--weights", str(path), "--layers", "relu1_1", "--out", str(tmp_path / "f.npz")]),
    ):  # fmt: skip
        one_line_refusal(main([command, *out]), capsys.readouterr().err, command, f"{path}: {expected}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.caffemodel", "x.png"]  # nothing written
