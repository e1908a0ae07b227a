"""Weights files written the way each public source lays them out, from a torch model.

torchvision and timm state dicts are saved with torch.save, Keras HDF5 with h5py (kernels H,W,in,out;
FC6 input flattened H,W,C), Caffe NetParameter with the protobuf library from the caffe.proto messages
it needs. Networks are narrow (width 1/16) so each file is small; the layout logic is the same as at
full width.
"""

import h5py
import numpy as np
import torch
from torch import nn

from vggnet.model import VGG

W = 1 / 16  # channel widths 4 ... 32, FC 256
X = torch.rand(2, 3, 64, 64)  # 0-1 RGB; the fc head pools any map to 7x7

# torchvision's constructor names and the Table 1 columns they build.
TV_NAMES = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def logits(model: nn.Module, x: torch.Tensor = X) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


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
