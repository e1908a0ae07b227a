import json

import onnx
import onnxruntime as ort
import pytest
import torch

from helpers import randomize_bn
from vggnet import build
from vggnet.cli import main
from vggnet.export import DenseVGG, export_onnx, export_program, export_weights, verify_export
from vggnet.weights import Preprocessing, WeightsMeta, save_weights

# fp32 kernels of ONNX Runtime and PyTorch differ only in summation order: outputs agree to
# 1e-4 of the largest output (measured: about 1e-6 relative on these models).
RTOL = 1e-4


def small(name: str = "D_bn", head: str = "fc") -> torch.nn.Module:
    """A narrow VGG with non-trivial BatchNorm statistics, so folding is really exercised."""
    return randomize_bn(build(name, width=1 / 16, num_classes=5, head=head).eval(), shift=0.1)


def assert_close(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= RTOL * ref.abs().max().item()


# (configuration, head, score map side at 224, score map (h, w) at 256x320)
CASES = [("D_bn", "fc", 1, (2, 4)), ("C", "conv", 1, (2, 4)), ("A", "gap", 7, (8, 10))]


@pytest.mark.parametrize("name, head, side224, hw", CASES, ids=[c[1] for c in CASES])
def test_onnx_round_trip_at_two_sizes(tmp_path, name, head, side224, hw):
    model = small(name, head)
    path = export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape, map_hw in [((1, 3, 224, 224), (side224, side224)), ((2, 3, 256, 320), hw)]:
        x = torch.randn(shape)
        logits, scores = (torch.from_numpy(a) for a in session.run(["logits", "scores"], {"input": x.numpy()}))
        with torch.no_grad():
            ref_scores = model.score_map(x)
        assert scores.shape == (shape[0], 5, *map_hw)
        assert_close(scores, ref_scores)
        assert_close(logits, ref_scores.mean(dim=(2, 3)))
        if shape[-1] == 224 or head != "fc":  # at 224 the dense net is the plain net; conv/gap heads at any size
            with torch.no_grad():
                assert_close(logits, model(x))


def test_onnx_axes_are_dynamic_and_metadata_travels(tmp_path):
    model = small()
    weights = tmp_path / "w.safetensors"
    save_weights(model, weights, class_names=list("abcde"))
    report = export_weights(weights, tmp_path / "m.onnx")
    proto = onnx.load(report.path)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.output}
    dims["input"] = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == {
        "input": ["batch", 3, "height", "width"],
        "logits": ["batch", 5],
        "scores": ["batch", 5, "score_height", "score_width"],
    }
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["vggnet"])["class_names"] == list("abcde")
    assert json.loads(meta["model"])["head"] == "conv"  # the fc head was exported as its dense form
    assert set(report.max_abs_error) == {"1x224x224", "2x256x320"}


def test_onnx_optimize_folds_batchnorm(tmp_path):
    proto = onnx.load(export_onnx(small("A_bn"), tmp_path / "m.onnx", optimize=True))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 8 + 3 and "BatchNormalization" not in ops


def test_torch_export_round_trip_at_two_sizes(tmp_path):
    model = small("A_bn")
    path = export_program(model, tmp_path / "m.pt2", optimize=True)
    program = torch.export.load(str(path)).module()
    for shape in [(1, 3, 224, 224), (3, 3, 288, 256)]:
        x = torch.randn(shape)
        with torch.no_grad():
            logits, scores = program(x)
            ref = model.score_map(x)
        assert_close(scores, ref)
        assert_close(logits, ref.mean(dim=(2, 3)))


def test_verify_export_catches_a_different_model(tmp_path):
    model = small("A")
    path = export_onnx(model, tmp_path / "m.onnx")
    assert max(verify_export(model, path).values()) < 1e-6
    with pytest.raises(ValueError, match="logits differs from PyTorch by"):
        verify_export(small("A"), path)  # same architecture, other random weights


def test_dense_module_outputs_and_leaves_the_model_alone(tmp_path):
    model = small("A", head="conv").train()
    logits, scores = DenseVGG(model)(torch.randn(2, 3, 256, 224))
    assert logits.shape == (2, 5) and scores.shape == (2, 5, 2, 1)
    export_onnx(model, tmp_path / "m.onnx", optimize=True)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_cli_export_and_errors(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_weights(small("A"), weights)
    assert main(["export", str(weights), str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "checked at 1x224x224" in out and "checked at 2x256x320" in out
    assert main(["export", str(tmp_path / "missing.safetensors"), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"vggnet export: error: {tmp_path / 'missing.safetensors'}: no such file"
    assert main(["export", str(weights), str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", str(weights), str(tmp_path / "m.x"), "--format", "tflite"])
    assert e.value.code == 2


# -- what the exported model expects: the weights' own preprocessing, baked in or applied by the docs' function --

# ONNX Runtime's and PyTorch's fp32 kernels differ in summation order; the baked-in preprocessing is one
# multiply-add per channel instead of PyTorch's divide-subtract-divide. Posteriors agree to this, absolute:
PROB_ATOL = 1e-5


def origin_file(tmp_path, origin: str, rgb):
    """A 1/16-width VGG A with 5 classes, saved the way `origin` lays out weights, its FC8 scaled so that the
    photo `rgb`'s logits spread over a few units (a random net's posteriors are near uniform)."""
    torch.manual_seed(3)
    model = build("A", width=1 / 16, num_classes=5).eval()
    pre = Preprocessing.torchvision() if origin == "torchvision" else Preprocessing.caffe()
    with torch.no_grad():
        logits = model(pre(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255))
        model.classifier[6].weight.mul_(3.0 / logits.std())
        model.classifier[6].bias.zero_()
    if origin == "torchvision":
        path = tmp_path / "vgg_tv.pth"
        torch.save(model.state_dict(), path)
    else:
        from weights_files import keras_layers, write_keras_h5

        path = tmp_path / "vgg_keras.h5"
        write_keras_h5(path, keras_layers(model), "keras1")
    return path


@pytest.fixture(scope="module")
def chelsea_crop(tmp_path_factory):
    """scikit-image's cat photo, shorter side rescaled to 256 and centre-cropped to 224, as uint8 RGB and a PNG."""
    data = pytest.importorskip("skimage.data", reason="scikit-image holds the sample photo (pip install scikit-image)")
    from PIL import Image

    from vggnet.data import rescale

    photo = rescale(Image.fromarray(data.chelsea()), 256)  # 385 x 256
    left, top = (photo.width - 224) // 2, (photo.height - 224) // 2
    crop = photo.crop((left, top, left + 224, top + 224))
    path = tmp_path_factory.mktemp("photo") / "chelsea_224.png"  # lossless: predict reads the same pixels
    crop.save(path)
    import numpy as np

    return np.asarray(crop), path


def docs_preprocess():
    """The `preprocess` function of docs/export.md, as a reader would copy it."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "export.md").read_text()
    block = text.split("<!-- preprocess: tests/test_export.py runs this block -->\n```python\n", 1)[1].split("```", 1)[
        0
    ]
    scope: dict = {}
    exec(compile(block, "docs/export.md", "exec"), scope)
    return scope["preprocess"]


def softmax(logits):
    import numpy as np

    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("origin, color", [("torchvision", "RGB"), ("keras", "BGR")])
def test_exported_model_matches_predict_on_a_real_photo(tmp_path, chelsea_crop, capsys, origin, color):
    from vggnet.configs import EvalConfig
    from vggnet.evaluate import predict

    rgb, png = chelsea_crop
    weights = origin_file(tmp_path, origin, rgb)
    cfg = EvalConfig(method="center", scales="224", flip=False)  # the 224 crop as it is: no rescale, no mirror
    (pred,), _ = predict([png], [str(weights)], cfg, top=5)
    expected = {label: p for label, p in pred.top}
    assert max(expected.values()) > 0.5  # far from uniform, so a wrong convention cannot hide in the tolerance

    assert main(["export", str(weights), str(tmp_path / "baked.onnx"), "--with-preprocessing"]) == 0
    assert (
        f"expects image: (N, H, W, 3) uint8 RGB as decoded; the graph itself makes it {color}"
        in capsys.readouterr().out
    )
    baked = ort.InferenceSession(str(tmp_path / "baked.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in baked.get_inputs()] == [("image", "tensor(uint8)", ["batch", "height", "width", 3])]  # fmt: skip
    assert main(["export", str(weights), str(tmp_path / "plain.onnx")]) == 0
    assert f"expects input: (N, 3, H, W) float32, {color}" in capsys.readouterr().out
    plain = ort.InferenceSession(str(tmp_path / "plain.onnx"), providers=["CPUExecutionProvider"])
    preprocess = docs_preprocess()

    runs = {
        "baked": baked.run(["logits"], {"image": rgb[None]})[0],
        "docs": plain.run(["logits"], {"input": preprocess(rgb[None], plain)})[0],
    }
    for how, logits in runs.items():
        probs = softmax(logits)[0]
        got = {f"class {i}": float(p) for i, p in enumerate(probs)}
        assert all(abs(got[label] - p) <= PROB_ATOL for label, p in expected.items()), (how, got, expected)
    # the other convention's input gives other answers: the match above is evidence of the right one
    wrong = rgb[None, :, :, ::-1].copy()  # RGB <-> BGR swapped
    probs = softmax(baked.run(["logits"], {"image": wrong})[0])[0]
    assert max(abs(float(probs[int(label.split()[1])]) - p) for label, p in expected.items()) > 100 * PROB_ATOL


def test_preprocessing_is_in_the_graph_for_torch_export_and_needs_the_metadata(tmp_path):
    model = small("A")
    pre = Preprocessing.caffe()
    path = export_program(model, tmp_path / "m.pt2", meta=WeightsMeta(model.cfg, preprocessing=pre), with_preprocessing=True)  # fmt: skip
    image = torch.randint(0, 256, (2, 256, 288, 3), dtype=torch.uint8)
    with torch.no_grad():
        logits, _ = torch.export.load(str(path)).module()(image)
        ref = model.score_map(pre(image.permute(0, 3, 1, 2).float() / 255)).mean(dim=(2, 3))
    assert_close(logits, ref)
    with pytest.raises(ValueError, match="with_preprocessing needs the weights' metadata"):
        export_onnx(model, tmp_path / "m.onnx", with_preprocessing=True)
    assert not (tmp_path / "m.onnx").exists()
    grey = build("A", width=1 / 16, num_classes=5, in_channels=1).eval()
    with pytest.raises(ValueError, match="with_preprocessing takes RGB images; this network has 1 input channels"):
        export_onnx(grey, tmp_path / "g.onnx", meta=WeightsMeta(grey.cfg), with_preprocessing=True)
