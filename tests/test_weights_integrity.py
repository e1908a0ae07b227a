"""Content hashes: recorded on write, checked on read; damage refused in one line; --no-verify; older files load."""

import hashlib
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vggnet import build
from vggnet.cli import main
from vggnet.weights import (
    FORMAT_KEY,
    HASH_KEY,
    IntegrityError,
    WeightsMeta,
    convert,
    digest,
    file_sha256,
    load_weights,
    read_meta,
    save_weights,
)
from vggnet.weights.format import safetensors_header
from weights_files import W, keras_layers, logits, write_keras_h5


def tensor_offset(path, key: str) -> int:
    """Where the bytes of tensor `key` start in a .safetensors file."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return 8 + n + json.loads(data[8 : 8 + n])[key]["data_offsets"][0]


def flip_bit(path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


@pytest.fixture
def saved(tmp_path):
    model = build("A", width=W, num_classes=3, input_size=32)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, class_names=["cat", "dog", "owl"])
    return model, path


def test_the_hashes_are_recorded_and_name_the_numbers(saved):
    model, path = saved
    header = safetensors_header(path)
    meta = read_meta(path)
    assert meta.tensors_sha256 == digest(model.state_dict())
    assert header[HASH_KEY] == hashlib.sha256(header[FORMAT_KEY].encode()).hexdigest()
    # The digest names the numbers, not a memory layout: channels-last weights hash the same.
    assert digest(model.to(memory_format=torch.channels_last).state_dict()) == meta.tensors_sha256
    # ... and dtype and shape count: the same bytes as int32, or reshaped, hash differently.
    x = torch.zeros(4, dtype=torch.float32)
    assert len({digest({"a": x}), digest({"a": x.view(torch.int32)}), digest({"a": x.reshape(2, 2)})}) == 3
    assert digest({"a": x, "b": 1}) == digest({"b": 1, "a": x})  # key order does not


def test_a_flipped_bit_in_the_tensors_is_refused_in_one_line(saved, capsys):
    model, path = saved
    flip_bit(path, tensor_offset(path, "features.3.weight") + 5, bit=3)
    with pytest.raises(IntegrityError, match=r"w.safetensors: damaged: the sha256 of its tensors differs") as e:
        load_weights(path)
    assert "\n" not in str(e.value) and "--no-verify" in str(e.value)
    loaded, _ = load_weights(path, verify=False)  # skipped on request: the changed weight is there
    assert not torch.equal(loaded.state_dict()["features.3.weight"], model.state_dict()["features.3.weight"])
    assert main(["convert", str(path), str(path.with_name("o.safetensors"))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err and not path.with_name("o.safetensors").exists()
    assert main(["convert", str(path), str(path.with_name("o.safetensors")), "--no-verify"]) == 0


def test_changed_metadata_is_refused(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data.replace(b"owl", b"cow", 1))  # same length: the safetensors header still parses
    assert read_meta(path, verify=False).class_names == ["cat", "dog", "cow"]
    with pytest.raises(IntegrityError, match="w.safetensors: damaged: the sha256 of its metadata differs"):
        read_meta(path)


def test_files_written_before_hashes_load_with_one_note(tmp_path, capsys):
    model = build("A", width=W, num_classes=3, input_size=32)
    meta = WeightsMeta.for_model(
        model, preprocessing=WeightsMeta(model.cfg).preprocessing, class_names=None, source="old", extra=None
    )
    old = tmp_path / "old.safetensors"
    save_file(dict(model.state_dict()), str(old), metadata={FORMAT_KEY: meta.to_json()})  # no hashes
    for _ in range(2):
        loaded, loaded_meta = load_weights(old)
        assert loaded_meta.tensors_sha256 == "" and torch.equal(logits(loaded), logits(model))
    err = capsys.readouterr().err
    assert err.count("written before content hashes") == 1  # once per process
    assert main(["convert", str(old), str(tmp_path / "new.safetensors")]) == 0  # re-saving adds them
    assert read_meta(tmp_path / "new.safetensors").tensors_sha256 == digest(model.state_dict())


def test_converted_files_record_the_source_files_hash(tmp_path):
    model = build("A", width=W, num_classes=3, input_size=32)
    src = tmp_path / "k.h5"
    write_keras_h5(src, keras_layers(model), "keras2")
    meta = convert(src, tmp_path / "k.safetensors")
    assert meta.extra["file_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() == file_sha256(src)
    assert read_meta(tmp_path / "k.safetensors").extra["file_sha256"] == meta.extra["file_sha256"]
    # A published hash given with --sha256 (8 hex digits or more) is checked before anything is read.
    good = meta.extra["file_sha256"][:8]
    assert main(["convert", str(src), str(tmp_path / "a.safetensors"), "--sha256", good]) == 0
    with pytest.raises(IntegrityError, match=r"k.h5: damaged: the sha256 of the file differs .*expected 00000000"):
        convert(src, tmp_path / "b.safetensors", sha256="00000000")
    convert(src, tmp_path / "b.safetensors", sha256="00000000", verify=False)
    with pytest.raises(ValueError, match="sha256 'abc': expected 8 to 64 hexadecimal digits"):
        convert(src, tmp_path / "c.safetensors", sha256="abc")
    converted = tmp_path / "k.safetensors"  # a project file's own bytes can be checked the same way
    assert load_weights(converted, sha256=file_sha256(converted)[:10])[1].source == "keras"
    with pytest.raises(IntegrityError, match="k.safetensors: damaged: the sha256 of the file differs"):
        load_weights(converted, sha256="0" * 64)


def test_torchvision_file_names_carry_their_hash(tmp_path):
    model = build("D", width=W, num_classes=3, input_size=32)
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    prefix = file_sha256(plain)[:8]
    named = tmp_path / f"vgg16-{prefix}.pth"  # how torchvision publishes them (vgg16-397923af.pth)
    plain.rename(named)
    assert torch.equal(logits(load_weights(named)[0]), logits(model))
    wrong = tmp_path / ("vgg16-" + ("0" * 8 if prefix != "0" * 8 else "1" * 8) + ".pth")
    named.rename(wrong)
    with pytest.raises(IntegrityError, match=rf"{wrong.name}: damaged: the sha256 of the file differs"):
        load_weights(wrong)
    assert torch.equal(logits(load_weights(wrong, verify=False)[0]), logits(model))


def test_every_command_that_loads_weights_verifies_and_can_skip_it(saved, tmp_path, capsys):
    _, path = saved
    flip_bit(path, tensor_offset(path, "classifier.6.bias"))
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "data" / "a").mkdir(parents=True)
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(tmp_path / "data" / "a" / "x.png")
    for c in ("b", "c"):
        (tmp_path / "data" / c).mkdir()
        Image.fromarray(np.full((40, 40, 3), 60, np.uint8)).save(tmp_path / "data" / c / "y.png")
    commands = {
        "predict": ["predict", str(tmp_path / "x.png"), "--weights", str(path), "--quiet"],
        "evaluate": ["evaluate", str(path), "--data", str(tmp_path / "data"), "--quiet", "--out", str(tmp_path / "e")],
        "features": ["features", str(tmp_path / "x.png"), "--weights", str(path), "--layers", "relu1_1"]
        + ["--out", str(tmp_path / "f.npz"), "--size", "32"],
        "export": ["export", str(path), str(tmp_path / "m.onnx")],
        "train": ["train", "digits", "--init-from", str(path), "--out", str(tmp_path / "run"), "--epochs", "1"]
        + ["--width", "0.0625", "--crop", "32", "--scale", "32", "--batch", "64", "--quiet", "--workers", "0"]
        + ["--stats-samples", "20"],
    }
    for name, args in commands.items():
        assert main(args) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "w.safetensors: damaged" in err, (name, err)
    for name in ("predict", "features"):
        assert main([*commands[name], "--no-verify"]) == 0, name
