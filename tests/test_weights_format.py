"""The project format: a round trip keeps outputs and metadata; bad files and mismatched tensors give clear errors."""

import os
import re

import pytest
import torch

from vggnet import build
from vggnet.weights import Preprocessing, import_weights, load_weights, read_meta, save_weights
from weights_files import W


def test_project_format_round_trip(tmp_path):
    model = build("C_bn", width=1 / 16, num_classes=3, head="conv").eval()
    path = tmp_path / "w.safetensors"
    save_weights(model, path, class_names=["x", "y", "z"], preprocessing=Preprocessing.caffe(), source="test")
    loaded, meta = load_weights(path)
    assert meta.class_names == ["x", "y", "z"]
    assert meta.preprocessing == Preprocessing.caffe()
    assert meta.model == model.cfg and meta.source == "test" and meta.include_top
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's private 0600


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


def test_mismatched_layer_names_layer_and_both_shapes(tmp_path):
    state = build("D", width=W, num_classes=3).state_dict()
    state["features.5.weight"] = torch.zeros(8, 5, 3, 3)  # conv2_1 fed 5 channels instead of 4
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=r"layer features.5.weight has shape \(8, 5, 3, 3\), the model expects \(8, 4, 3, 3\)"
    ):
        import_weights(tmp_path / "bad.pth")
    state = build("D", width=W, num_classes=3).state_dict()
    del state["features.7.bias"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing tensors \['features.7.bias'\]"):
        import_weights(tmp_path / "missing.pth")
    state = {
        k: v for k, v in build("D", width=W).state_dict().items() if k not in ("features.0.weight", "features.0.bias")
    }
    torch.save(state, tmp_path / "twelve.pth")
    with pytest.raises(ValueError, match=r"12 convolutions .* match no Table 1 configuration"):
        import_weights(tmp_path / "twelve.pth")


# The field each crafted document is refused for (the metadata hash recomputed, as anyone can).
META_REFUSALS = {
    "nested 200k deep": "JSON nested more than 16 levels deep",
    "one class name for 5 classes": "class_names: 1 names for a model with 5 classes",
    "class_names a number": "class_names: expected a list of strings, got int 5",
    "a class name with a newline": "class_names[0]: control characters",
    "preprocessing scale a string": "preprocessing.scale: expected a finite number",
    "preprocessing std 0": "preprocessing.std[0]: expected a finite number over 0",
    "preprocessing mean of 5": "preprocessing.mean: expected 3 numbers",
    "preprocessing mean infinite": "preprocessing.mean[0]: expected a finite number",
    "width a string": "model.width: expected a finite number",
    "width negative": "model.width: expected a finite number over 0",
    "arch a list": "model.arch: expected a string",
    "arch unknown": "model.arch: unknown VGG configuration 'Z'",
    "num_classes a float": "model.num_classes: expected an integer",
    "num_classes a billion": "model.num_classes: expected an integer from 1 to 1000000",
    "head unknown": "model.head: expected one of fc, conv, gap",
    "input_size 0": "model.input_size: expected an integer from 32",
    "include_top a string": "include_top: expected true or false",
    "extra a list": "extra: expected an object",
    "training scale infinite": "extra.scale: expected a finite number",
    "model missing": "model: missing",
    "unknown model field": "model: unknown fields ['layers']",
}


def test_crafted_metadata_is_refused_in_one_line_naming_the_field(tmp_path, capsys):
    from PIL import Image

    from helpers import one_line_refusal
    from hostile_files import META_EDITS, rewrite_meta
    from vggnet.cli import main

    assert set(META_REFUSALS) == set(META_EDITS)
    good = tmp_path / "w.safetensors"
    save_weights(
        build("A", width=W, num_classes=5, input_size=32), good, class_names=list("abcde"), extra={"scale": 40}
    )
    read_meta(good)  # the document the edits start from passes
    Image.new("RGB", (48, 40)).save(tmp_path / "x.png")
    for name, edit in META_EDITS.items():
        bad = rewrite_meta(good, tmp_path / "bad.safetensors", edit)
        expected = f"{bad}: damaged or foreign vggnet metadata: {META_REFUSALS[name]}"
        with pytest.raises(ValueError, match="^" + re.escape(expected)):
            read_meta(bad)
        for command, args in (
            ("predict", [str(tmp_path / "x.png"), "--weights", str(bad), "--heatmap", str(tmp_path / "h.png")]),
            ("view", [str(tmp_path / "x.png"), "--weights", str(bad), "--out", str(tmp_path / "v.html")]),
        ):
            one_line_refusal(main([command, *args]), capsys.readouterr().err, command, expected)
        assert not (tmp_path / "h.png").exists() and not (tmp_path / "v.html").exists(), name


def test_read_tensors_gives_what_safetensors_load_file_gives(tmp_path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from vggnet.weights.format import read_tensors

    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=g),
        "bf16": torch.randn(7, generator=g).bfloat16(),
        "i8": torch.randint(-128, 127, (2, 3, 4), generator=g, dtype=torch.int8),
        "mask": torch.rand(6, generator=g) > 0.5,
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
    }
    save_file(tensors, tmp_path / "t.safetensors")
    ours, theirs = read_tensors(tmp_path / "t.safetensors"), load_file(tmp_path / "t.safetensors")
    assert set(ours) == set(theirs) == set(tensors)
    for key, value in tensors.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value) and torch.equal(ours[key], theirs[key])
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "t.safetensors").read_bytes()[:-3])
    with pytest.raises(SafetensorError):  # safe_open refuses a file shorter than its header says
        read_tensors(tmp_path / "cut.safetensors")
