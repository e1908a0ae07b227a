"""Where a network runs at test time: PyTorch, or its dense net exported to ONNX Runtime or OpenVINO.

`runtime_model(model, backend)` exports the fully convolutional net of section 3.2 (`vggnet.export`,
dynamic batch, height and width, BatchNorm folded) and wraps the runtime's session in a module with
the testing interface the protocol calls: `forward` (logits), `score_map`, `cfg`, `grid`. Both
runtimes are optional extras (`pip install 'vggnet[runtimes]'`) and run on the CPU.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .configs import BACKENDS
from .export import OUTPUT_NAMES, export_onnx
from .io import needs
from .model import VGG

Session = Callable[[np.ndarray], list[np.ndarray]]  # (N, 3, H, W) float32 -> [logits, scores]


def check_backend(backend: str) -> None:
    """Raise a one-line error for an unknown backend name."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")


def onnxruntime_session(path: Path) -> Session:
    """An ONNX Runtime CPU session with its defaults."""
    ort = needs("onnxruntime", "runtimes", "--backend onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(list(OUTPUT_NAMES), {"input": x})


def openvino_session(path: Path) -> Session:
    """An OpenVINO CPU model in fp32 (its default on CPUs with native bf16 would be bf16: other posteriors)."""
    ov = needs("openvino", "runtimes", "--backend openvino")
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = request.infer({"input": x})
        return [out[compiled.output(name)].copy() for name in OUTPUT_NAMES]

    return run


class RuntimeVGG(nn.Module):
    """A VGG's dense net run by ONNX Runtime or OpenVINO, answering as the VGG does at test time."""

    def __init__(self, model: VGG, backend: str) -> None:
        super().__init__()
        check_backend(backend)
        if backend == "torch":
            raise ValueError("RuntimeVGG runs exported nets; use the VGG itself for the torch backend")
        needs("onnx", "runtimes", f"--backend {backend}")  # the export needs it before the runtime does
        self.cfg, self.grid, self.min_input, self.backend = model.cfg, model.grid, model.min_input, backend
        # The protocol reads the device from the parameters; the runtimes take and give CPU arrays.
        self.register_parameter("anchor", nn.Parameter(torch.empty(0), requires_grad=False))
        with tempfile.TemporaryDirectory(prefix="vggnet-") as tmp:
            path = export_onnx(model.cpu().eval(), Path(tmp) / "dense.onnx", optimize=True)
            self.session = onnxruntime_session(path) if backend == "onnxruntime" else openvino_session(path)

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        VGG.check_input(self, x)  # type: ignore[arg-type]  # needs only cfg and min_input
        array = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return [torch.from_numpy(o) for o in self.session(array)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, classes): the score map's spatial mean (one cell at the input size)."""
        return self._run(x)[0]

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """Dense class score map (N, classes, h, w) of section 3.2."""
        if min(x.shape[-2:]) < 32 * self.grid and self.cfg.head != "gap":
            raise ValueError(
                f"input {x.shape[-2]}x{x.shape[-1]} is smaller than {32 * self.grid}, the dense net's minimum"
            )
        return self._run(x)[1]

    def extra_repr(self) -> str:
        return f"{self.cfg.display_name()}, backend={self.backend}"


def runtime_model(model: VGG, backend: str) -> nn.Module:
    """`model` itself for "torch"; otherwise its dense net exported and loaded into that runtime."""
    check_backend(backend)
    return model if backend == "torch" else RuntimeVGG(model, backend)
