"""Any file in: detection by content, one-line errors for truncated or foreign files, `vggnet convert`."""

import os

import pytest
import torch

from vggnet import build
from vggnet.cli import main
from vggnet.weights import Preprocessing, detect_source, import_weights, load_weights, read_meta, save_weights
from weights_files import W, keras_layers, logits, write_caffemodel, write_keras_h5


def test_detection_by_content_not_name(tmp_path):
    model = build("A", width=W, num_classes=3)
    torch.save(model.state_dict(), tmp_path / "weights.bin")
    write_keras_h5(tmp_path / "keras_weights", keras_layers(model), "keras2")  # no extension
    write_caffemodel(tmp_path / "net", model, "v1")
    assert detect_source(tmp_path / "weights.bin") == "torchvision"
    assert detect_source(tmp_path / "keras_weights") == "keras"
    assert detect_source(tmp_path / "net") == "caffe"
    for name in ("weights.bin", "keras_weights", "net"):
        loaded, _ = load_weights(tmp_path / name)
        assert torch.equal(logits(loaded), logits(model))
    with pytest.raises(ValueError, match="looks like a keras file, not a caffe one"):
        import_weights(tmp_path / "keras_weights", source="caffe")


def test_a_project_file_whose_header_length_starts_with_0x80_is_not_a_pickle(tmp_path):
    """The header length is the file's first 8 bytes; a low byte of 0x80 is also how a legacy pickle starts."""
    model, path = build("A", width=W, num_classes=3), tmp_path / "w.safetensors"
    for pad in range(300):  # one header length in 256 ends in 0x80
        save_weights(model, path, extra={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    loaded, meta = load_weights(path)
    assert meta.extra["pad"] == "x" * pad and torch.equal(logits(loaded), logits(model))


def sources(tmp_path) -> dict[str, os.PathLike]:
    model = build("A", width=W, num_classes=3)
    paths = {
        "torchvision": tmp_path / "tv.pth",
        "safetensors": tmp_path / "w.safetensors",
        "keras": tmp_path / "k.h5",
        "caffe": tmp_path / "c.caffemodel",
    }
    torch.save(model.state_dict(), paths["torchvision"])
    save_weights(model, paths["safetensors"])
    write_keras_h5(paths["keras"], keras_layers(model), "keras1")
    write_caffemodel(paths["caffe"], model, "v1")
    return paths


@pytest.mark.parametrize("kind", ["torchvision", "safetensors", "keras", "caffe"])
def test_truncated_and_foreign_files_give_one_line_errors(tmp_path, kind, capsys):
    path = sources(tmp_path)[kind]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=str(path.name)):
        load_weights(path)
    path.write_text("these are not weights\n" * 20)
    with pytest.raises(ValueError, match=str(path.name)):
        load_weights(path)
    assert main(["convert", str(path), str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vggnet convert: error:") and "Traceback" not in err


def test_cli_convert_records_source_preprocessing_and_class_names(tmp_path, capsys):
    model = build("B", width=W, num_classes=3)
    write_caffemodel(tmp_path / "b.caffemodel", model, "v1")
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    dst = tmp_path / "b.safetensors"
    assert (
        main(["convert", str(tmp_path / "b.caffemodel"), str(dst), "--class-names", str(tmp_path / "names.txt")]) == 0
    )
    out = capsys.readouterr().out
    assert "(caffe)" in out and "VGG B width 0.0625, fc head, 3 classes" in out and "BGR x255" in out
    meta = read_meta(dst)
    assert meta.class_names == ["cat", "dog", "bird"] and meta.preprocessing == Preprocessing.caffe()
    assert meta.extra["file"] == "b.caffemodel"
    assert main(["convert", str(dst), str(tmp_path / "conv.safetensors"), "--head", "conv"]) == 0
    converted = read_meta(tmp_path / "conv.safetensors")
    assert converted.model.head == "conv" and converted.source == "caffe" and converted.class_names == meta.class_names
