"""Export the dense (fully convolutional) network of section 3.2 to ONNX or torch.export.

The exported graph takes a preprocessed (N, 3, H, W) float batch of any N, H, W (H, W >= the
model's minimum, 224 for VGG16) and returns two outputs: `logits` (N, classes), the spatial
mean of the score map as in the paper's dense evaluation, and `scores` (N, classes, h, w),
h = H/32 - 6 at the default 224 training size. With `with_preprocessing`, the graph takes
(N, H, W, 3) uint8 RGB as an image decoder gives it instead, and applies the weights' own
preprocessing (channel order, scale, mean, std) itself.
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
from .weights import Preprocessing, WeightsMeta, load_weights

FORMATS = ("onnx", "pt2")
OUTPUT_NAMES = ("logits", "scores")
INPUT_NAMES = {False: "input", True: "image"}  # by with_preprocessing: the two inputs cannot be mixed up
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


class WithPreprocessing(nn.Module):
    """The dense net behind the weights' preprocessing: image (N, H, W, 3) uint8 RGB -> (logits, scores).

    NHWC and 8-bit RGB because that is what decoders give (Pillow, imageio; OpenCV gives BGR: convert it).
    """

    def __init__(self, dense: DenseVGG, pre: Preprocessing) -> None:
        super().__init__()
        if dense.model.cfg.in_channels != 3:
            raise ValueError(f"with_preprocessing takes RGB images; this network has {dense.model.cfg.in_channels} input channels")  # fmt: skip
        self.dense = dense
        self.bgr = pre.color == "BGR"
        # (x / 255 * scale - mean) / std as one multiply-add per channel, in the network's channel order
        std = torch.tensor(pre.std, dtype=torch.float32)
        self.register_buffer("gain", (pre.scale / 255.0 / std).view(1, 3, 1, 1))
        self.register_buffer("offset", (torch.tensor(pre.mean, dtype=torch.float32) / std).view(1, 3, 1, 1))

    @property
    def model(self) -> VGG:
        return self.dense.model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.permute(0, 3, 1, 2).float()  # (N, 3, H, W) RGB 0-255
        if self.bgr:
            x = x.flip(1)
        return self.dense(x * self.gain - self.offset)


def input_description(pre: Preprocessing, with_preprocessing: bool = False) -> str:
    """What an exported graph's input must be, in one line (printed by `vggnet export`, kept in its metadata)."""
    scale = "0-1" if pre.scale == 1 else f"0-{pre.scale:g}"
    mean, std = ", ".join(f"{v:g}" for v in pre.mean), ", ".join(f"{v:g}" for v in pre.std)
    steps = f"{pre.color} {scale}, minus mean ({mean}), divided by std ({std})"
    if with_preprocessing:
        return f"image: (N, H, W, 3) uint8 RGB as decoded; the graph itself makes it {steps}"
    return f"input: (N, 3, H, W) float32, {steps}"


def _prepare(model: VGG, optimize: bool, pre: Preprocessing | None = None) -> DenseVGG | WithPreprocessing:
    if optimize:
        from .optimize import fold_batchnorm

        model = fold_batchnorm(model)
    dense = DenseVGG(model).eval()
    return (dense if pre is None else WithPreprocessing(dense, pre).eval()).requires_grad_(False)


def dense_min_side(model: VGG) -> int:
    """Smallest input side of the dense net: 32 x FC6's grid (224) for fc/conv heads, 32 for gap."""
    return 32 if model.cfg.head == "gap" else 32 * model.grid


def _example(model: VGG, batch: int = 1, extra: int = 0, uint8: bool = False) -> torch.Tensor:
    side = dense_min_side(model) + extra
    device = next(model.parameters()).device
    if uint8:
        return torch.randint(0, 256, (batch, side, side, model.cfg.in_channels), dtype=torch.uint8, device=device)
    return torch.randn(batch, model.cfg.in_channels, side, side, device=device)


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
    with_preprocessing: bool = False,
) -> Path:
    """Write the dense model as ONNX with dynamic batch, height and width; `meta` goes into metadata_props.

    Uses the TorchScript-based exporter (`dynamo=False`), which needs no extra package and
    takes seconds. `optimize` folds BatchNorm into the convs first (exact in eval mode).
    `with_preprocessing`: the graph takes (N, H, W, 3) uint8 RGB and applies `meta.preprocessing` itself.
    """
    import onnx

    pre = _preprocessing_of(meta, with_preprocessing)
    net = _prepare(model, optimize, pre if with_preprocessing else None)
    name = INPUT_NAMES[with_preprocessing]
    axes = {1: "height", 2: "width"} if with_preprocessing else {2: "height", 3: "width"}
    path = Path(path)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the exporter's deprecation notice and the tracer's notes on shape checks
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (_example(net.model, uint8=with_preprocessing),),
                tmp,
                dynamo=False,
                input_names=[name],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={
                    name: {0: "batch", **axes},
                    "logits": {0: "batch"},
                    "scores": {0: "batch", 2: "score_height", 3: "score_width"},
                },
                opset_version=opset,
            )
        proto = onnx.load(tmp)
        info = {
            "producer": "vggnet",
            "model": json.dumps(dataclasses.asdict(net.model.cfg)),
            "input": input_description(pre, with_preprocessing),
        }
        if meta is not None:
            info["vggnet"] = meta.to_json()
        for key, value in info.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, tmp)

    atomic_write(path, write)
    return path


def export_program(
    model: VGG,
    path: str | os.PathLike[str],
    *,
    optimize: bool = False,
    meta: WeightsMeta | None = None,
    with_preprocessing: bool = False,
) -> Path:
    """Write the dense model with torch.export (a `.pt2` file; load with torch.export.load(path).module()).

    Batch, height and width are dynamic (height and width from the model's minimum to 8192).
    `with_preprocessing`: the program takes (N, H, W, 3) uint8 RGB and applies `meta.preprocessing` itself.
    """
    from torch.export import Dim

    pre = _preprocessing_of(meta, with_preprocessing)
    net = _prepare(model, optimize, pre if with_preprocessing else None)
    low = dense_min_side(net.model)
    height, width = Dim("height", min=low, max=MAX_SIDE), Dim("width", min=low, max=MAX_SIDE)
    dims = {
        0: Dim("batch", min=1, max=4096),
        **({1: height, 2: width} if with_preprocessing else {2: height, 3: width}),
    }
    shapes = {"image" if with_preprocessing else "x": dims}
    example = _example(net.model, batch=2, extra=32, uint8=with_preprocessing)
    # A score map of side 1 (a 224 input) would otherwise be specialised away: torch.export assumes
    # sizes 0 and 1 are special unless told to reason about sizes obliviously.
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        program = torch.export.export(net, (example,), dynamic_shapes=shapes)
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: torch.export.save warns about a name not ending in .pt2
            torch.export.save(program, f)

    atomic_write(path, write)
    return path


def _preprocessing_of(meta: WeightsMeta | None, with_preprocessing: bool) -> Preprocessing:
    """The weights' preprocessing; baking it in needs the weights' metadata (a guess would fail silently)."""
    if meta is None:
        if with_preprocessing:
            raise ValueError("with_preprocessing needs the weights' metadata (meta=...) to know their preprocessing")
        return Preprocessing()
    return meta.preprocessing


@dataclass
class ExportReport:
    """What `export_weights` wrote, the input it expects and how closely it matches PyTorch at each checked size."""

    path: str
    format: str
    optimized: bool
    input: str = ""  # `input_description`: what the graph's input must be
    max_abs_error: dict[str, float] = field(default_factory=dict)  # "NxHxW" -> max |export - torch| of logits


def verify_export(
    model: VGG,
    path: str | os.PathLike[str],
    format: str = "onnx",
    sizes: Sequence[tuple[int, int, int]] | None = None,
    rtol: float = 1e-3,
    preprocessing: Preprocessing | None = None,
) -> dict[str, float]:
    """Run the exported file (ONNX Runtime or torch.export) and the PyTorch dense model on random inputs.

    With `preprocessing` (an export with it baked in), the inputs are random uint8 (N, H, W, 3) RGB images and
    PyTorch preprocesses them itself. Raises ValueError if an output differs by more than `rtol` times the
    largest reference value (fp32 kernels differ in summation order, not more); returns the max abs error of each size.
    """
    dense = DenseVGG(model).eval()
    run = _runner(path, format)
    errors: dict[str, float] = {}
    for n, h, w in sizes or verify_sizes(model):
        if preprocessing is None:
            x = ref_x = torch.randn(n, model.cfg.in_channels, h, w)
        else:
            x = torch.randint(0, 256, (n, h, w, model.cfg.in_channels), dtype=torch.uint8)
            ref_x = preprocessing(x.permute(0, 3, 1, 2).float() / 255.0)
        with torch.no_grad():
            expected = dense(ref_x)
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
        name = session.get_inputs()[0].name
        return lambda x: [torch.from_numpy(o) for o in session.run(list(OUTPUT_NAMES), {name: x.numpy()})]
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
    with_preprocessing: bool = False,
) -> ExportReport:
    """Load any weights (file, run folder, catalogue name, URL), export the dense model to `out`, check it at two sizes.

    `format` is "onnx" or "pt2"; by default it follows the suffix of `out` (.pt2, else ONNX). `verify=False`
    skips both checks: the weights' content hashes on load and the comparison of the export with PyTorch.
    `with_preprocessing`: the export takes (N, H, W, 3) uint8 RGB and applies the weights' preprocessing itself.
    """
    format = format or ("pt2" if str(out).endswith(".pt2") else "onnx")
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; accepted: {', '.join(FORMATS)}")
    if Path(out).is_dir():
        raise ValueError(f"{out}: is a folder, expected an output file name")
    model, meta = load_weights(weights, verify=verify)
    options = {"optimize": optimize, "meta": meta, "with_preprocessing": with_preprocessing}
    path = (export_onnx if format == "onnx" else export_program)(model, out, **options)
    report = ExportReport(path=str(path), format=format, optimized=optimize)
    report.input = input_description(meta.preprocessing, with_preprocessing)
    if verify:
        pre = meta.preprocessing if with_preprocessing else None
        report.max_abs_error = verify_export(model, path, format, preprocessing=pre)
    return report
