"""Keras HDF5: both published layouts read back to identical outputs; notop files; Theano kernels refused."""

import pytest
import torch

from vggnet import build
from vggnet.weights import NoClassifier, Preprocessing, convert, detect_source, import_weights, load_weights
from weights_files import W, X, keras_layers, logits, write_keras_h5


@pytest.mark.parametrize("config,style", [("D", "keras1"), ("E", "keras2")])
def test_keras_h5_reads_back_to_identical_outputs(tmp_path, config, style):
    source = build(config, width=W, num_classes=6).eval()
    layers = keras_layers(source)
    x = torch.rand(1, 3, 224, 224)  # pool5 is 7x7, as in Keras' fixed-size model
    # The file follows Keras' semantics: flattening pool5 channels-last and multiplying by fc1's kernel is FC6.
    with torch.no_grad():
        pool5 = source.features(x)
        keras_fc1 = pool5.permute(0, 2, 3, 1).reshape(1, -1) @ torch.from_numpy(layers[-3][1][0])
        torch.testing.assert_close(
            keras_fc1 + torch.from_numpy(layers[-3][1][1]), source.classifier[0](pool5.flatten(1))
        )
    path = tmp_path / f"vgg_{style}.h5"
    write_keras_h5(path, layers, style)
    assert detect_source(path) == "keras"
    model, meta = import_weights(path)
    assert (model.cfg.arch, model.cfg.num_classes, model.cfg.head) == (config, 6, "fc")
    assert meta.source == "keras" and meta.preprocessing == Preprocessing.caffe()
    assert torch.equal(logits(model, x), logits(source, x))


def test_keras_notop_gives_a_features_only_model(tmp_path):
    source = build("D", width=W).eval()
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_h5(path, keras_layers(source, top=False), "keras1")
    meta = convert(path, tmp_path / "notop.safetensors")
    assert not meta.include_top and meta.params == sum(p.numel() for p in source.features.parameters())
    model, loaded = load_weights(tmp_path / "notop.safetensors")
    assert not loaded.include_top and isinstance(model.classifier, NoClassifier)
    with torch.no_grad():
        assert torch.equal(model.features(X), source.features(X))
    with pytest.raises(ValueError, match="these weights hold no classifier"):
        model(X)


def test_theano_ordered_keras_kernels_are_refused(tmp_path):
    layers = keras_layers(build("D", width=W), top=False)
    layers[1] = (layers[1][0], [layers[1][1][0].transpose(3, 2, 0, 1), layers[1][1][1]])  # (out, in, H, W)
    write_keras_h5(tmp_path / "th.h5", layers, "keras1")
    with pytest.raises(ValueError, match=r"layer block1_conv1 has kernel \(4, 3, 3, 3\).*TensorFlow-ordered"):
        import_weights(tmp_path / "th.h5")


def test_a_damaged_layer_index_is_one_line_naming_the_file(tmp_path):
    import h5py
    import numpy as np

    path = tmp_path / "k.h5"
    write_keras_h5(path, keras_layers(build("A", width=W, num_classes=3)), "keras2")
    with h5py.File(path, "a") as f:  # a flipped bit in a layer name: no longer UTF-8 (found by tests/fuzz.py)
        f.attrs["layer_names"] = np.array([b"\xb3lock1_conv1"], dtype="S")
    with pytest.raises(
        ValueError, match=r"k.h5: unreadable Keras HDF5 file \(truncated, damaged or not HDF5\): 'utf-8'"
    ):
        load_weights(path)


@pytest.mark.parametrize(
    "trick,refusal",
    [
        ("external storage", "is stored in an external file; refused: it would read data from outside this file"),
        ("virtual dataset", "is a virtual dataset; refused: it would read data from outside this file"),
        ("external link", "is a ExternalLink (it could lead outside the file); only hard links are read"),
        ("soft link", "is a SoftLink (it could lead outside the file); only hard links are read"),
        ("strings", "holds (4,) |S8, not an array of numbers"),
    ],
)
def test_hdf5_that_reads_outside_the_file_is_refused(tmp_path, capsys, trick, refusal):
    from helpers import one_line_refusal
    from hostile_files import hostile_h5
    from vggnet.cli import main

    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:secret\n" * 64)
    path = hostile_h5(tmp_path / "k.h5", build("A", width=W, num_classes=3), trick, secret)
    out = tmp_path / "out.safetensors"
    status = main(["convert", str(path), str(out)])
    one_line_refusal(status, capsys.readouterr().err, "convert", f"{path}: ", refusal)
    assert not out.exists()


@pytest.mark.slow
def test_hdf5_declaring_more_than_it_holds_is_refused_before_reading(tmp_path):
    from helpers import one_line_refusal, run_capped
    from hostile_files import hostile_h5

    path = hostile_h5(tmp_path / "k.h5", build("A", width=W, num_classes=3), "declared", tmp_path, declared=64 << 30)
    assert path.stat().st_size < 4 << 20  # the weights of a narrow net, and 64 GiB declared
    out = tmp_path / "out.safetensors"
    status, _, err, peak = run_capped(["convert", str(path), str(out)])
    one_line_refusal(
        status, err, "convert", "k.h5: its datasets declare, as float32, 64.0 GiB", "VGGNET_MAX_WEIGHTS_BYTES"
    )
    assert not out.exists() and 0 < peak < 1536 << 20  # the interpreter and torch, nothing of the 64 GiB
