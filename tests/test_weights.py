"""Weights: the project format, and every public source written here from a torch model and read back.

Each foreign file is built in tmp_path the way its source lays it out: torchvision and timm state
dicts with torch.save, Keras HDF5 with h5py (kernels H,W,in,out; FC6 input flattened H,W,C), Caffe
NetParameter with the protobuf library from the caffe.proto messages it needs. Networks are narrow
(width 1/16) so each file is small; the layout logic is the same as at full width.
"""

import os

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.models.vgg as tvvgg
from torch import nn

from helpers import randomize_bn
from vggnet import build
from vggnet.cli import main
from vggnet.model import VGG
from vggnet.weights import (
    NoClassifier,
    Preprocessing,
    convert,
    detect_source,
    import_weights,
    infer_config,
    load_weights,
    read_meta,
    read_torch_state,
    save_weights,
    timm_state,
)

W = 1 / 16  # channel widths 4 ... 32, FC 256
X = torch.rand(2, 3, 64, 64)  # 0-1 RGB; the fc head pools any map to 7x7


def logits(model: nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# -- project format ---------------------------------------------------------------------------


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


# -- torchvision ------------------------------------------------------------------------------


def torchvision_model(letter: str, bn: bool, classes: int = 5) -> nn.Module:
    """torchvision's own VGG class and make_layers, with every width divided by 16."""
    cfg = [v if v == "M" else int(v * W) for v in tvvgg.cfgs[letter]]
    features = tvvgg.make_layers(cfg, batch_norm=bn)
    with torch.device("meta"):  # skip allocating the full-size classifier, replaced just below
        model = tvvgg.VGG(features, num_classes=classes, init_weights=False)
    c, h = int(512 * W), int(4096 * W)
    model.classifier = nn.Sequential(
        nn.Linear(c * 49, h), nn.ReLU(True), nn.Dropout(), nn.Linear(h, h), nn.ReLU(True), nn.Dropout(), nn.Linear(h, classes)
    )  # fmt: skip
    return randomize_bn(model)


TV_NAMES = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


@pytest.mark.parametrize("name", [n + bn for n in TV_NAMES for bn in ("", "_bn")])
def test_torchvision_pth_converts_to_identical_outputs(tmp_path, name):
    letter, bn = TV_NAMES[name.removesuffix("_bn")], name.endswith("_bn")
    tv = torchvision_model(letter, bn)
    state = tv.state_dict()
    if bn:  # torchvision's published _bn files predate the num_batches_tracked buffer
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / f"{name}.pth")
    assert detect_source(tmp_path / f"{name}.pth") == "torchvision"
    meta = convert(tmp_path / f"{name}.pth", tmp_path / "out.safetensors")
    model, loaded = load_weights(tmp_path / "out.safetensors")
    assert (model.cfg.config, model.cfg.batch_norm, model.cfg.num_classes, model.cfg.width) == (letter, bn, 5, W)
    assert loaded.source == "torchvision" and loaded.preprocessing == Preprocessing.torchvision()
    assert meta.params == sum(p.numel() for p in tv.parameters())
    assert torch.equal(logits(model), logits(tv))


@pytest.mark.parametrize("name", [n + bn for n in TV_NAMES for bn in ("", "_bn")])
def test_published_torchvision_layouts_infer_their_configuration(name):
    # The real torchvision constructors at full size, on the meta device: names and shapes only.
    with torch.device("meta"):
        state = getattr(tvvgg, name)(weights=None).state_dict()
    cfg, top = infer_config(state)
    assert (cfg.config, cfg.batch_norm, cfg.width, cfg.num_classes) == (
        TV_NAMES[name[:5]],
        name.endswith("_bn"),
        1,
        1000,
    )
    assert (cfg.head, cfg.input_size, top) == ("fc", 224, True)


@pytest.mark.slow
def test_full_size_torchvision_vgg11_bn(tmp_path):
    tv = randomize_bn(tvvgg.vgg11_bn(weights=None))
    torch.save(tv.state_dict(), tmp_path / "vgg11_bn.pth")
    model, meta = import_weights(tmp_path / "vgg11_bn.pth")
    assert meta.params == 132_868_840  # 132,863,336 (Table 2, A) + 2 x 2,752 BN parameters
    x = torch.rand(1, 3, 224, 224)
    assert torch.equal(logits(model, x), logits(tv, x))


def test_checkpoint_wrappers_and_prefixes_are_undone(tmp_path):
    model = build("A", width=W, num_classes=3)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    loaded, _ = load_weights(tmp_path / "ckpt.pt")
    assert torch.equal(logits(loaded), logits(model))


# -- timm -------------------------------------------------------------------------------------


def to_timm(model: VGG) -> dict[str, torch.Tensor]:
    """timm's layout: FC6/FC7 as 7x7 / 1x1 conv weights (pre_logits.fc1/fc2), FC8 as head.fc."""
    c, g = model.feature_channels, model.grid
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("classifier.0."):
            key, value = (
                "pre_logits.fc1." + key[13:],
                value.reshape(value.shape[0], c, g, g) if value.dim() == 2 else value,
            )
        elif key.startswith("classifier.3."):
            key, value = "pre_logits.fc2." + key[13:], value[:, :, None, None] if value.dim() == 2 else value
        elif key.startswith("classifier.6."):
            key = "head.fc." + key[13:]
        out[key] = value.clone()
    return out


def timm_forward(state: dict[str, torch.Tensor], features: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's VGG forward: features, ConvMlp (7x7 conv, ReLU, 1x1 conv, ReLU), global average pool, head.fc."""
    f = features(x)
    f = F.relu(F.conv2d(f, state["pre_logits.fc1.weight"], state["pre_logits.fc1.bias"]))
    f = F.relu(F.conv2d(f, state["pre_logits.fc2.weight"], state["pre_logits.fc2.bias"]))
    return F.linear(f.mean(dim=(2, 3)), state["head.fc.weight"], state["head.fc.bias"])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_imports_as_the_dense_net(tmp_path, suffix):
    from safetensors.torch import save_file

    source = randomize_bn(build("D_bn", width=W, num_classes=7)).eval()
    state = to_timm(source)
    path = tmp_path / f"timm_vgg16_bn{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    assert detect_source(path) == "timm"
    model, meta = import_weights(path)
    assert meta.source == "timm" and model.cfg.head == "conv" and model.cfg.num_classes == 7
    x = torch.rand(1, 3, 256, 288)  # larger than 224: a 2x3 map of FC8 scores, averaged
    with torch.no_grad():
        torch.testing.assert_close(model(x), timm_forward(state, source.features, x), rtol=1e-5, atol=1e-6)
    fc_model, _ = import_weights(path, head="fc")
    assert fc_model.cfg.head == "fc" and torch.equal(logits(fc_model), logits(source))


def test_published_timm_layout_infers_the_conv_head():
    with torch.device("meta"):
        state = timm_state(to_timm(build("vgg19")))
    cfg, top = infer_config(state)
    assert (cfg.config, cfg.head, cfg.input_size, cfg.num_classes, cfg.width, top) == ("E", "conv", 224, 1000, 1, True)


# -- Keras HDF5 -------------------------------------------------------------------------------


def keras_layers(model: VGG, top: bool = True) -> list[tuple[str, list[np.ndarray]]]:
    """Keras' VGG layer list for a torch model: block{b}_conv{i} kernels (H, W, in, out), fc1/fc2/predictions
    kernels (in, out) with fc1's rows in Keras' (H, W, C) flatten order; pooling, input and flatten layers
    carry no weights."""
    layers = [("input_1", [])]
    for name, m in zip(model.feature_names, model.features, strict=True):
        if isinstance(m, nn.Conv2d):
            block, index = name[4:].split("_")
            weights = [m.weight.detach().permute(2, 3, 1, 0).numpy(), m.bias.detach().numpy()]
            layers.append((f"block{block}_conv{index}", weights))
        elif name.startswith("pool"):
            layers.append((f"block{name[4:]}_pool", []))
    if top:
        c, g = model.feature_channels, model.grid
        fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
        w6 = fcs[0].weight.detach().reshape(-1, c, g, g).permute(0, 2, 3, 1).reshape(fcs[0].out_features, -1)
        kernels = [w6.t(), fcs[1].weight.detach().t(), fcs[2].weight.detach().t()]
        layers.append(("flatten", []))
        for name, k, fc in zip(("fc1", "fc2", "predictions"), kernels, fcs, strict=True):
            layers.append((name, [k.contiguous().numpy(), fc.bias.detach().numpy()]))
    return layers


def write_keras_h5(path, layers, style: str) -> None:
    """The published files' layout ("keras1": datasets <layer>/<layer>_W_1:0) or Keras 2's (<layer>/<layer>/kernel:0)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        for name, weights in layers:
            g = f.create_group(name)
            if style == "keras1":
                names = [f"{name}_{s}_1:0" for s in ("W", "b")][: len(weights)]
            else:
                names = [f"{name}/{s}:0" for s in ("kernel", "bias")][: len(weights)]
            g.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for n, w in zip(names, weights, strict=True):
                g.create_dataset(n, data=w)


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
    assert (model.cfg.config, model.cfg.num_classes, model.cfg.head) == (config, 6, "fc")
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


# -- Caffe ------------------------------------------------------------------------------------

CAFFE_V1 = {"CONVOLUTION": 4, "DROPOUT": 6, "INNER_PRODUCT": 14, "LRN": 15, "POOLING": 17, "RELU": 18, "SOFTMAX": 20}


def caffe_messages():
    """NetParameter, V1LayerParameter, LayerParameter and BlobProto as declared in caffe.proto (the fields used)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe", syntax="proto2")

    def message(name, fields):
        m = proto.message_type.add(name=name)
        for fname, number, ftype, repeated, type_name in fields:
            f = m.field.add(
                name=fname, number=number, type=ftype, label=fd.LABEL_REPEATED if repeated else fd.LABEL_OPTIONAL
            )
            if type_name:
                f.type_name = type_name
            if repeated and ftype in (fd.TYPE_FLOAT, fd.TYPE_INT64):
                f.options.packed = True
        return m

    message("BlobShape", [("dim", 1, fd.TYPE_INT64, True, None)])
    blob = [("shape", 7, fd.TYPE_MESSAGE, False, ".caffe.BlobShape"), ("data", 5, fd.TYPE_FLOAT, True, None)]
    blob += [(n, i, fd.TYPE_INT32, False, None) for i, n in enumerate(("num", "channels", "height", "width"), 1)]
    message("BlobProto", blob)
    v1 = message("V1LayerParameter", [
        ("name", 4, fd.TYPE_STRING, False, None),
        ("type", 5, fd.TYPE_ENUM, False, ".caffe.V1LayerParameter.LayerType"),
        ("blobs", 6, fd.TYPE_MESSAGE, True, ".caffe.BlobProto"),
    ])  # fmt: skip
    enum = v1.enum_type.add(name="LayerType")
    for n, v in {"NONE": 0, **CAFFE_V1}.items():
        enum.value.add(name=n, number=v)
    message("LayerParameter", [
        ("name", 1, fd.TYPE_STRING, False, None),
        ("type", 2, fd.TYPE_STRING, False, None),
        ("blobs", 7, fd.TYPE_MESSAGE, True, ".caffe.BlobProto"),
    ])  # fmt: skip
    message("NetParameter", [
        ("name", 1, fd.TYPE_STRING, False, None),
        ("layers", 2, fd.TYPE_MESSAGE, True, ".caffe.V1LayerParameter"),
        ("layer", 100, fd.TYPE_MESSAGE, True, ".caffe.LayerParameter"),
    ])  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.NetParameter"))


def write_caffemodel(path, model: VGG, version: str) -> None:
    """The model as a Caffe net: V1 `layers` with legacy 4-D blob dims (the published files), or V2 `layer`."""
    net = caffe_messages()(name="VGG_test")
    steps = list(zip(model.feature_names, model.features, strict=True))
    steps += list(zip(model.classifier_names, model.classifier, strict=True)) + [("prob", nn.Softmax())]
    kinds = {nn.Conv2d: "CONVOLUTION", nn.Linear: "INNER_PRODUCT", nn.ReLU: "RELU", nn.MaxPool2d: "POOLING"}
    kinds |= {nn.Dropout: "DROPOUT", nn.LocalResponseNorm: "LRN", nn.Softmax: "SOFTMAX"}
    v2_names = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "RELU": "ReLU", "POOLING": "Pooling"}
    v2_names |= {"DROPOUT": "Dropout", "LRN": "LRN", "SOFTMAX": "Softmax"}
    for name, m in steps:
        kind = kinds[type(m)]
        if version == "v1":
            layer = net.layers.add(name=name, type=CAFFE_V1[kind])
        else:
            layer = net.layer.add(name=name, type=v2_names[kind])
        for t in (m.weight, m.bias) if kind in ("CONVOLUTION", "INNER_PRODUCT") else ():
            blob = layer.blobs.add()
            t = t.detach()
            if version == "v1":  # legacy num/channels/height/width: FC weight (1, 1, out, in), bias (1, 1, 1, out)
                dims = [1] * (4 - t.dim()) + list(t.shape)
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(t.shape)
            blob.data.extend(t.reshape(-1).tolist())
    with open(path, "wb") as f:
        f.write(net.SerializeToString())


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
    assert (model.cfg.config, model.cfg.num_classes) == (config, 9)
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


# -- detection, safe loading, bad files ---------------------------------------------------------


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


class Payload:
    """Unpickling this object calls open(marker, "w"): it creates a file, as any code could."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_payload_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3), "extra": Payload(str(marker))}, path)
    with pytest.raises(ValueError, match=r"evil.pth: refused: the checkpoint contains pickled non-tensor objects"):
        read_torch_state(path)
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refused" in err and "nothing was executed" in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    # The payload is live: an unsafe load does run it (which is what weights_only=True prevents).
    torch.load(path, weights_only=False)
    assert marker.exists()


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


# -- the command line -------------------------------------------------------------------------


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
