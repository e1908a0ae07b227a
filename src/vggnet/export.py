"""Export the dense (fully convolutional) network of section 3.2 to ONNX or torch.export.

The exported graph takes a preprocessed (N, 3, H, W) batch of any N, H, W (H, W >= the
model's minimum, 224 for VGG16) and returns two outputs: `logits` (N, classes), the spatial
mean of the score map as in the paper's dense evaluation, and `scores` (N, classes, h, w),
h = H/32 - 6 at the default 224 training size.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .io import atomic_write
from .model import VGG
from .weights import WeightsMeta, load_weights

FORMATS = ("onnx", "pt2")
OUTPUT_NAMES = ("logits", "scores")
MAX_SIDE = 8192  # upper bound of torch.export's dynamic height and width


class DenseVGG(nn.Module):
    """A VGG as the fully convolutional net: x (N, 3, H, W) -> (logits (N, K), scores (N, K, h, w))."""

    def __init__(self, model: VGG) -> None:
        super().__init__()
        # fc head: FC6-FC8 become 7x7 / 1x1 convs (exact); conv and gap heads are already dense.
        # Either way a copy, so exporting never changes the caller's model (mode, requires_grad).
        self.model = model.to_head("conv") if model.cfg.head == "fc" else copy.deepcopy(model)
        self.model.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model.cfg.head == "conv":
            # Convolutions, not score_map's unfold + GEMM: runtimes fuse them and keep h, w symbolic.
            scores = self.model.classifier(self.model.features(x))  # (N, K, h, w)
        else:
            scores = self.model.score_map(x)
        return scores.mean(dim=(2, 3)), scores


def _prepare(model: VGG, optimize: bool) -> DenseVGG:
    if optimize:
        from .optimize import fold_batchnorm

        model = fold_batchnorm(model)
    return DenseVGG(model).eval().requires_grad_(False)


def dense_min_side(model: VGG) -> int:
    """Smallest input side of the dense net: 32 x FC6's grid (224) for fc/conv heads, 32 for gap."""
    return 32 if model.cfg.head == "gap" else 32 * model.grid


def _example(model: VGG, batch: int = 1, extra: int = 0) -> torch.Tensor:
    side = dense_min_side(model)
    device = next(model.parameters()).device
    return torch.randn(batch, model.cfg.in_channels, side + extra, side + extra, device=device)


def verify_sizes(model: VGG) -> list[tuple[int, int, int]]:
    """Two (batch, height, width) inputs an export is checked at: the smallest, and a larger non-square one."""
    side = dense_min_side(model)
    return [(1, side, side), (2, side + 32, side + 96)]


def export_onnx(
    model: VGG,
    path: str | os.PathLike[str],
    *,
    optimize: bool = False,
    opset: int = 17,
    meta: WeightsMeta | None = None,
) -> Path:
    """Write the dense model as ONNX with dynamic batch, height and width; `meta` goes into metadata_props.

    Uses the TorchScript-based exporter (`dynamo=False`), which needs no extra package and
    takes seconds. `optimize` folds BatchNorm into the convs first (exact in eval mode).
    """
    import onnx

    dense = _prepare(model, optimize)
    path = Path(path)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the exporter's deprecation notice and the tracer's notes on shape checks
            warnings.simplefilter("ignore")
            torch.onnx.export(
                dense,
                (_example(dense.model),),
                tmp,
                dynamo=False,
                input_names=["input"],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={
                    "input": {0: "batch", 2: "height", 3: "width"},
                    "logits": {0: "batch"},
                    "scores": {0: "batch", 2: "score_height", 3: "score_width"},
                },
                opset_version=opset,
            )
        proto = onnx.load(tmp)
        info = {"producer": "vggnet", "model": json.dumps(dataclasses.asdict(dense.model.cfg))}
        if meta is not None:
            info["vggnet"] = meta.to_json()
        for key, value in info.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, tmp)

    atomic_write(path, write)
    return path


def export_program(model: VGG, path: str | os.PathLike[str], *, optimize: bool = False) -> Path:
    """Write the dense model with torch.export (a `.pt2` file; load with torch.export.load(path).module()).

    Batch, height and width are dynamic (height and width from the model's minimum to 8192).
    """
    from torch.export import Dim

    dense = _prepare(model, optimize)
    low = dense_min_side(dense.model)
    shapes = {
        "x": {
            0: Dim("batch", min=1, max=4096),
            2: Dim("height", min=low, max=MAX_SIDE),
            3: Dim("width", min=low, max=MAX_SIDE),
        }
    }
    # A score map of side 1 (a 224 input) would otherwise be specialised away: torch.export assumes
    # sizes 0 and 1 are special unless told to reason about sizes obliviously.
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        program = torch.export.export(dense, (_example(dense.model, batch=2, extra=32),), dynamic_shapes=shapes)
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: torch.export.save warns about a name not ending in .pt2
            torch.export.save(program, f)

    atomic_write(path, write)
    return path


@dataclass
class ExportReport:
    """What `export_weights` wrote and how closely the export matches PyTorch at each checked size."""

    path: str
    format: str
    optimized: bool
    max_abs_error: dict[str, float] = field(default_factory=dict)  # "NxHxW" -> max |export - torch| of logits


def verify_export(
    model: VGG,
    path: str | os.PathLike[str],
    format: str = "onnx",
    sizes: Sequence[tuple[int, int, int]] | None = None,
    rtol: float = 1e-3,
) -> dict[str, float]:
    """Run the exported file (ONNX Runtime or torch.export) and the PyTorch dense model on random inputs.

    Raises ValueError if an output differs by more than `rtol` times the largest reference value
    (fp32 kernels differ in summation order, not more); returns the max abs error of each size.
    """
    dense = DenseVGG(model).eval()
    run = _runner(path, format)
    errors: dict[str, float] = {}
    for n, h, w in sizes or verify_sizes(model):
        x = torch.randn(n, model.cfg.in_channels, h, w)
        with torch.no_grad():
            expected = dense(x)
        got = run(x)
        for name, ref, out in zip(OUTPUT_NAMES, expected, got, strict=True):
            if tuple(out.shape) != tuple(ref.shape):
                raise ValueError(
                    f"{path}: {name} has shape {tuple(out.shape)} at input {n}x{h}x{w}, expected {tuple(ref.shape)}"
                )
            err = (out - ref).abs().max().item()
            limit = rtol * max(ref.abs().max().item(), 1e-6)
            if err > limit:
                raise ValueError(
                    f"{path}: {name} differs from PyTorch by {err:.3g} at input {n}x{h}x{w} (limit {limit:.3g})"
                )
            if name == "logits":
                errors[f"{n}x{h}x{w}"] = err
    return errors


def _runner(path: str | os.PathLike[str], format: str):
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: [torch.from_numpy(o) for o in session.run(list(OUTPUT_NAMES), {"input": x.numpy()})]
    if format == "pt2":
        module = torch.export.load(str(path)).module()

        def run(x: torch.Tensor) -> list[torch.Tensor]:
            with torch.no_grad():
                return list(module(x))

        return run
    raise ValueError(f"unknown export format {format!r}; accepted: {', '.join(FORMATS)}")


def export_weights(
    weights: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str | None = None,
    optimize: bool = False,
    verify: bool = True,
) -> ExportReport:
    """Load any weights (file, run folder, catalogue name, URL), export the dense model to `out`, check it at two sizes.

    `format` is "onnx" or "pt2"; by default it follows the suffix of `out` (.pt2, else ONNX). `verify=False`
    skips both checks: the weights' content hashes on load and the comparison of the export with PyTorch.
    """
    format = format or ("pt2" if str(out).endswith(".pt2") else "onnx")
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; accepted: {', '.join(FORMATS)}")
    if Path(out).is_dir():
        raise ValueError(f"{out}: is a folder, expected an output file name")
    model, meta = load_weights(weights, verify=verify)
    if format == "onnx":
        path = export_onnx(model, out, optimize=optimize, meta=meta)
    else:
        path = export_program(model, out, optimize=optimize)
    report = ExportReport(path=str(path), format=format, optimized=optimize)
    if verify:
        report.max_abs_error = verify_export(model, path, format)
    return report
