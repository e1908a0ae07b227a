import json

import onnx
import onnxruntime as ort
import pytest
import torch

from helpers import randomize_bn
from vggnet import build
from vggnet.cli import main
from vggnet.export import DenseVGG, export_onnx, export_program, export_weights, verify_export
from vggnet.weights import save_weights

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
