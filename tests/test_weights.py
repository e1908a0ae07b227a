import pytest
import torch

from vggnet import build
from vggnet.data import Preprocessing
from vggnet.weights import load_weights, read_meta, save_weights


def test_project_format_round_trip(tmp_path):
    model = build("C_bn", width=1 / 16, num_classes=3, head="conv").eval()
    path = tmp_path / "w.safetensors"
    save_weights(model, path, class_names=["x", "y", "z"], preprocessing=Preprocessing.caffe(), source="test")
    loaded, meta = load_weights(path)
    assert meta.class_names == ["x", "y", "z"]
    assert meta.preprocessing == Preprocessing.caffe()
    assert meta.model == model.cfg and meta.source == "test"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_wrong_class_names_and_bad_files(tmp_path):
    model = build("A", width=1 / 16, num_classes=3)
    with pytest.raises(ValueError, match="2 class names given for a model with 3 classes"):
        save_weights(model, tmp_path / "w.safetensors", class_names=["a", "b"])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="junk.safetensors: not a safetensors weights file"):
        read_meta(junk)
    with pytest.raises(FileNotFoundError, match="nope.safetensors: no such file"):
        load_weights(tmp_path / "nope.safetensors")
