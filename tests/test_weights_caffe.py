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
