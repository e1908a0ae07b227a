"""--backend torch | onnxruntime | openvino: the same posteriors from every runtime, non-square images included."""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import vggnet.evaluate as ev
from vggnet import build
from vggnet.backends import RuntimeVGG, runtime_model
from vggnet.cli import main
from vggnet.configs import EvalConfig
from vggnet.weights import save_weights

RUNTIMES = ["onnxruntime", "openvino"]


def needs(backend: str) -> None:
    pytest.importorskip(backend, reason=f"{backend} is not installed (pip install 'vggnet[runtimes]')")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of non-square photos of three shapes (tall, wide, square), 3 a class, and a tiny net."""
    root = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / "data" / f"c{c}").mkdir(parents=True)
        for i, (h, w) in enumerate([(40, 58), (61, 36), (48, 48)]):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "data" / f"c{c}" / f"{i}.png")
    torch.manual_seed(0)
    save_weights(build("A", width=1 / 16, num_classes=3, input_size=32).eval(), root / "w.safetensors")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize("method", ["dense", "multicrop"])
def test_posteriors_equal_torch(folder, backend, method):
    needs(backend)
    cfg = dict(method=method, scales="32,45", grid=2, device="cpu")  # Q=45: score maps of 1-2 x 1-3 cells
    torch_result = ev.evaluate([folder / "w.safetensors"], str(folder / "data"), EvalConfig(**cfg), progress=False)
    cfg["backend"] = backend
    result = ev.evaluate([folder / "w.safetensors"], str(folder / "data"), EvalConfig(**cfg), progress=False)
    assert result.images == 9
    torch.testing.assert_close(result.probs, torch_result.probs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", RUNTIMES)
def test_score_map_of_a_non_square_image_equals_torch(folder, backend):
    needs(backend)
    model = build("A", width=1 / 16, num_classes=3, input_size=32, head="fc").eval()
    runtime = runtime_model(model, backend)
    x = torch.randn(2, 3, 96, 160)  # 3x5 score map; another shape after it reuses the same session
    with torch.no_grad():
        for shape in [(2, 3, 96, 160), (1, 3, 64, 33)]:
            x = torch.randn(shape)
            expected = model.score_map(x)
            got = runtime.score_map(x)
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(runtime(x), expected.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", RUNTIMES)
def test_cli_predict_and_evaluate_take_the_backend(folder, backend, capsys, tmp_path):
    needs(backend)
    photo = str(folder / "data" / "c0" / "1.png")
    assert main(["predict", photo, "--weights", str(folder / "w.safetensors"), "--backend", backend, "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{photo}  (dense, Q=37, flip)" and lines[1].strip().startswith("1.") and len(lines) == 3
    out = tmp_path / "eval"
    args = ["evaluate", str(folder / "w.safetensors"), "--data", str(folder / "data"), "--backend", backend]
    assert main([*args, "--scales", "32,45", "--quiet", "--out", str(out)]) == 0
    assert json.loads(next(out.glob("*.json")).read_text())["images"] == 9


def test_a_missing_runtime_is_one_line_naming_the_extra(folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert (
        main(["evaluate", str(folder / "w.safetensors"), "--data", str(folder / "data"), "--backend", "openvino"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err == (
        "vggnet evaluate: error: --backend openvino needs openvino, which is not installed: pip install 'vggnet[runtimes]'"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "tensorrt"], "unknown backend 'tensorrt'; accepted: torch, onnxruntime, openvino"),
        (["--backend", "onnxruntime", "--fast"], "--backend onnxruntime runs on the CPU and optimises the graph"),
        (["--backend", "openvino", "--device", "cuda"], "--backend openvino runs on the CPU"),
    ],
)
def test_bad_backend_options_exit_2(folder, capsys, args, message):
    assert main(["evaluate", str(folder / "w.safetensors"), "--data", str(folder / "data"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_torch_backend_is_the_model_itself():
    model = build("A", width=1 / 16, num_classes=3, input_size=32)
    assert runtime_model(model, "torch") is model
    with pytest.raises(ValueError, match="use the VGG itself for the torch backend"):
        RuntimeVGG(model, "torch")
