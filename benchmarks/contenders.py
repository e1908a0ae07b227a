"""The contenders of benchmarks/runtimes.py, each built as its users would build it, and the files they share.

`prepare` writes, once, what every contender starts from: the same weights, the same calibration
photos, the ONNX file, ONNX Runtime's and NNCF's int8 models. `CONTENDERS[name](folder, threads)`
builds one contender in its own process and returns a function from an (N, 3, H, W) float32
array to logits; apart from the thread count, every runtime keeps its own defaults.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

Run = Callable[[np.ndarray], np.ndarray]

WEIGHTS = "model.pt"  # the torchvision-named state dict every contender loads (torch.save, tensors only)
CONFIG = "model.json"  # the vggnet ModelConfig of those weights
ONNX = "model.onnx"  # torchvision's graph exported as its users export it (dynamic batch)
ONNX_INT8 = "model_int8.onnx"  # onnxruntime.quantization.quantize_static, QDQ
OV_INT8 = "model_int8.xml"  # nncf.quantize of the OpenVINO model read from model.onnx
CALIBRATION = "calibration.npy"  # (N, 3, H, W) preprocessed training photos, the same for every int8 path
INPUTS = "inputs.npy"  # (N, 3, H, W) preprocessed validation photos the timed batches are cut from


@dataclass(frozen=True)
class Contender:
    """One way to run the network: its precision, family (torch / onnxruntime / openvino) and builder."""

    precision: str  # "fp32", "int8" or "default" (the runtime picks)
    family: str
    build: Callable[[Path, int], Run]


def vggnet_model(folder: Path) -> torch.nn.Module:
    """The network as a vggnet.VGG with the shared weights."""
    import json

    from vggnet.configs import ModelConfig
    from vggnet.model import VGG

    with torch.device("meta"):
        model = VGG(ModelConfig(**json.loads((folder / CONFIG).read_text())))
    model.load_state_dict(torch.load(folder / WEIGHTS, weights_only=True), strict=True, assign=True)
    return model.eval()


def torchvision_model(folder: Path) -> torch.nn.Module:
    """The same network as torchvision's VGG class (torchvision.models.vgg16 for VGG16; any width for smoke runs)."""
    import torchvision
    from torchvision.models.vgg import VGG, make_layers

    ours = vggnet_model(folder)
    if ours.cfg.width == 1 and ours.cfg.head == "fc" and ours.cfg.input_size == 224 and not ours.cfg.batch_norm:
        names = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}
        tv = getattr(torchvision.models, names[ours.cfg.arch])(num_classes=ours.cfg.num_classes)
    else:  # a narrow net (smoke runs): torchvision's class and forward, with our features' widths and head
        plan = [m.out_channels if isinstance(m, torch.nn.Conv2d) else "M" for m in ours.features if not _is_relu(m)]
        tv = VGG(make_layers(plan), num_classes=ours.cfg.num_classes, init_weights=False)
        tv.avgpool, tv.classifier = ours.avgpool, ours.classifier
    tv.load_state_dict(ours.state_dict(), strict=True)
    return tv.eval()


def _is_relu(m: torch.nn.Module) -> bool:
    return isinstance(m, torch.nn.ReLU)


def torch_run(model: torch.nn.Module, threads: int) -> Run:
    """A torch module as a Run, under inference_mode, with `threads` intra-op threads."""
    torch.set_num_threads(threads)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def torchvision_eager(folder: Path, threads: int) -> Run:
    """torchvision's VGG in eager mode, NCHW, as `model.eval()` leaves it."""
    return torch_run(torchvision_model(folder), threads)


def vggnet_fast(folder: Path, threads: int) -> Run:
    """vggnet's fastest fp32 path: `optimize_for_inference(model, winograd=True)`."""
    from vggnet.optimize import optimize_for_inference

    return torch_run(optimize_for_inference(vggnet_model(folder), winograd=True), threads)


def vggnet_int8(folder: Path, threads: int) -> Run:
    """`vggnet.quantize_int8`, calibrated on the shared calibration photos (batches of 8)."""
    from vggnet.optimize import quantize_int8

    calibration = torch.from_numpy(np.load(folder / CALIBRATION))
    torch.set_num_threads(threads)
    return torch_run(quantize_int8(vggnet_model(folder), calibration.split(8)), threads)


def onnxruntime_session(path: Path, threads: int) -> Run:
    """An ONNX Runtime CPU session with its defaults apart from the intra-op thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino_compiled(path: Path, threads: int, **config: str) -> Run:
    """An OpenVINO CPU compiled model with its defaults apart from the thread count (and `config`)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, **config})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0].copy()


def openvino_precision(path: Path, threads: int, **config: str) -> str:
    """The inference precision OpenVINO chose (bf16 by default on CPUs with native bf16)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, **config})
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)


CONTENDERS: dict[str, Contender] = {
    "torchvision eager": Contender("fp32", "torch", torchvision_eager),
    "ONNX Runtime fp32": Contender("fp32", "onnxruntime", lambda f, t: onnxruntime_session(f / ONNX, t)),
    "OpenVINO fp32": Contender(
        "fp32", "openvino", lambda f, t: openvino_compiled(f / ONNX, t, INFERENCE_PRECISION_HINT="f32")
    ),
    "OpenVINO default precision": Contender("default", "openvino", lambda f, t: openvino_compiled(f / ONNX, t)),
    "vggnet fast fp32": Contender("fp32", "torch", vggnet_fast),
    "ONNX Runtime int8": Contender("int8", "onnxruntime", lambda f, t: onnxruntime_session(f / ONNX_INT8, t)),
    "OpenVINO int8": Contender("int8", "openvino", lambda f, t: openvino_compiled(f / OV_INT8, t)),
    "vggnet int8": Contender("int8", "torch", vggnet_int8),
}
RUNTIMES = ("onnxruntime", "openvino")  # the families vggnet is compared against


# -- the shared files, written once by the parent process --------------------------------------------------


def export_onnx(model: torch.nn.Module, path: Path, example: torch.Tensor) -> None:
    """torch.onnx.export with a dynamic batch, as ONNX Runtime's and OpenVINO's tutorials export a model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )


def quantize_onnxruntime(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """ONNX Runtime's static quantisation as its documentation gives it: pre-process, then quantize_static (QDQ)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": b} for b in np.split(calibration, max(1, len(calibration) // 8))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    pre = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ)


def quantize_openvino(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """NNCF's post-training quantisation of the OpenVINO model, its defaults, the same calibration photos."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    batches = np.split(calibration, max(1, len(calibration) // 8))
    quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
