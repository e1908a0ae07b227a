"""Fast CPU inference: BatchNorm folding, channels-last, torch.compile, int8 quantisation.

`optimize_for_inference` is the one call for an fp32 model that only predicts;
`quantize_int8` gives a post-training static int8 model calibrated on a few batches.
benchmarks/inference.py and benchmarks/int8.py measure both against their peers.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .model import VGG


def fold_batchnorm(model: VGG) -> VGG:
    """A BN-free VGG whose convs absorb each BatchNorm's eval-mode affine map (same outputs in eval mode).

    conv -> BN is y = g * (W x + b - mu) / sqrt(var + eps) + beta, i.e. one conv with
    W' = W * s and b' = (b - mu) * s + beta, s = g / sqrt(var + eps) per output channel.
    The result has torchvision's plain layout (`vgg16_bn` folds into `vgg16`).
    """
    if not model.cfg.batch_norm:
        return copy.deepcopy(model).eval()
    with torch.device("meta"):  # no random init of weights that are overwritten at once
        folded = VGG(dataclasses.replace(model.cfg, batch_norm=False))
    src = list(model.features)
    pairs = [(m, src[i + 1]) for i, m in enumerate(src) if isinstance(m, nn.Conv2d)]
    convs = [name for name, m in folded.features.named_children() if isinstance(m, nn.Conv2d)]
    folded.classifier = copy.deepcopy(model.classifier)  # as it is (factorised FC layers included)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("features.")}
    for name, (conv, bn) in zip(convs, pairs, strict=True):
        if not isinstance(bn, nn.BatchNorm2d):
            raise ValueError(f"expected BatchNorm2d after every conv of a batch-norm VGG, found {type(bn).__name__}")
        # float64 so the fold adds no rounding of its own
        s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = conv.weight.double() * s.view(-1, 1, 1, 1)
        b = (conv.bias.double() - bn.running_mean.double()) * s + bn.bias.double()
        state[f"features.{name}.weight"] = w.to(conv.weight.dtype)
        state[f"features.{name}.bias"] = b.to(conv.bias.dtype)
    folded.load_state_dict(state, strict=True, assign=True)
    folded.feature_names = [n for n in model.feature_names if not n.startswith("bn")]
    return folded.to(next(model.parameters()).device).eval()


class InferenceVGG(nn.Module):
    """An inference-only VGG: channels-last input, no autograd, optionally compiled with frozen weights."""

    def __init__(self, model: VGG, channels_last: bool, compiled: bool) -> None:
        super().__init__()
        self.model = model
        self.cfg = model.cfg
        self.channels_last = channels_last
        self.compiled = compiled
        # static shapes: one specialised graph per input shape, as a server with fixed batches sees them
        self._forward = torch.compile(model, dynamic=False) if compiled else model

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_last or type(self.model.features[0]).__name__ == "SmallConv2d":
            return x  # conv1_1's compiled kernel reads the NCHW image as it is and writes channels-last
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, classes), computed under inference_mode."""
        with torch.inference_mode():
            if not self.compiled:
                return self._forward(self._input(x))
            # freezing: inductor treats the weights as constants, pre-packs them in oneDNN's blocked layout
            # and fuses conv + ReLU. It is read from the global config when a shape is compiled (passing it
            # in torch.compile's options has no effect), so it is switched on around the call only.
            with torch._inductor.config.patch(freezing=True):
                return self._forward(self._input(x))

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """Dense class score map (N, classes, h, w) of section 3.2 (never compiled)."""
        with torch.inference_mode():
            return self.model.score_map(self._input(x))


def optimize_for_inference(
    model: VGG, *, channels_last: bool = True, fold_bn: bool = True, winograd: bool = False, compile: bool = False
) -> InferenceVGG:
    """The fast fp32 path for prediction: eval mode, BN folded, channels-last, optionally Winograd and torch.compile.

    `winograd` runs the 3x3 convs where it pays (`vggnet.cpu.winograd.worth_it`) as Winograd F(4x4, 3x3) /
    F(2x2, 3x3) layers: 2.25-4x fewer multiplications, outputs equal to the direct convs within about
    1e-5 of their scale (fp32); where the compiled kernels run, the FC layers too (`Float32Linear`). It
    needs channels-last. The input model is not modified. Compilation
    happens on the first call of each new input shape.
    """
    if winograd and not channels_last:
        raise ValueError("winograd=True needs channels_last=True (its layers read and write NHWC memory)")
    base = fold_batchnorm(model) if fold_bn else copy.deepcopy(model)
    base.eval().requires_grad_(False)
    if channels_last:
        base = base.to(memory_format=torch.channels_last)
    if winograd:
        from .cpu import compiled
        from .cpu.fc_layers import float32_classifier
        from .cpu.winograd import winogradify

        base.features = winogradify(base.features)
        if compiled.kernels() is not None:  # the FC layers on the kernels' own threads too
            base.classifier = float32_classifier(base.classifier)
    return InferenceVGG(base, channels_last, compile)


class _Traceable(nn.Module):
    """VGG.forward without its input checks, which torch.fx cannot trace (they branch on shapes)."""

    def __init__(self, model: VGG) -> None:
        super().__init__()
        self.features = model.features
        self.classifier = model.classifier
        self.avgpool = getattr(model, "avgpool", None)
        self.conv_head = model.cfg.head == "conv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (N, 512w, H/32, W/32)
        if self.conv_head:  # the spatial mean of the score map; quantized mean() rejects channels-last maps
            return torch.flatten(F.adaptive_avg_pool2d(self.classifier(f), 1), 1)
        return self.classifier(torch.flatten(self.avgpool(f), 1))


class Int8VGG(nn.Module):
    """A quantised VGG (int8 weights and GEMMs, fp32 in and out)."""

    def __init__(self, model: VGG, quantized: nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.cfg = model.cfg
        self.min_input = model.min_input
        self.quantized = quantized
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, classes)."""
        VGG.check_input(self, x)  # type: ignore[arg-type]  # needs only cfg and min_input, not the fp32 weights
        with torch.inference_mode():
            return self.quantized(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)


def quantize_int8(
    model: VGG,
    calibration_batches: Iterable[torch.Tensor],
    *,
    fold_bn: bool = True,
    keep_first_fp32: bool = True,
    keep_last_fp32: bool = True,
    winograd: bool | None = None,
) -> Int8VGG:
    """Post-training static int8 quantisation for x86 CPUs, calibrated on `calibration_batches`.

    `calibration_batches`: a few batches of preprocessed images, as the model expects them. With
    `winograd` (default: where the compiled kernel runs, `vggnet.cpu.int8_conv.kernel_available()`) the 3x3
    convs become int8 Winograd F(2x2) layers (`vggnet.cpu.int8_conv`, AVX-512 VNNI or AVX-VNNI) and the FC
    layers `Int8Linear`s (int8 weights, each input row rounded to u8 as the layer runs); otherwise FX graph
    mode quantisation (fbgemm/oneDNN): per-channel int8 weights, per-tensor uint8 activations.
    `keep_first_fp32` leaves conv1_1 in float: it sees the raw image (3 channels, 0.6% of VGG16's
    multiply-accumulates), and on the Imagenette nets of experiments/imagenette it raised the FX path's
    top-1 agreement with fp32 from 98.5% to 99.1% (A-LRN, width 1/4). `keep_last_fp32` leaves
    the class layer (FC8) in float: it decides the top-1 and holds 0.1% of VGG16's multiply-accumulates.
    """
    from .cpu.int8_conv import kernel_available

    base = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    batches = iter(calibration_batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("quantize_int8 needs at least one calibration batch")
    model.check_input(first)
    if not kernel_available():
        warnings.warn(slower_than_fp32(), stacklevel=2)
    if kernel_available() if winograd is None else winograd:
        return _winograd_int8(base, [first, *batches], keep_first_fp32, keep_last_fp32)
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if "x86" not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"int8 needs the x86 quantized engine; this torch has {torch.backends.quantized.supported_engines}"
        )
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():  # FX quantisation warns that it is in maintenance mode; it is what ships
        warnings.simplefilter("ignore")
        mapping = get_default_qconfig_mapping("x86")
        if keep_first_fp32:
            first_conv = min(i for i, m in enumerate(base.features) if isinstance(m, nn.Conv2d))
            mapping = mapping.set_module_name(f"features.{first_conv}", None)
        if keep_last_fp32:
            last = max(i for i, m in enumerate(base.classifier) if isinstance(m, (nn.Linear, nn.Conv2d)))
            mapping = mapping.set_module_name(f"classifier.{last}", None)
        prepared = prepare_fx(_Traceable(base.cpu()).eval(), mapping, (first,))
        with torch.inference_mode():
            for batch in [first, *batches]:
                prepared(batch)
        quantized = convert_fx(prepared)
    return Int8VGG(base, quantized)


def slower_than_fp32() -> str:
    """Why int8 is slower than fp32 on this machine: its compiled kernels do not run here (the CPU, or no build)."""
    from .cpu import compiled

    return (
        f"quantize_int8: no int8 kernel here ({compiled.int8_why_not()}), so the int8 model runs on PyTorch's int8 "
        "ops, slower than the fast fp32 path, optimize_for_inference(model, winograd=True) (--fast); "
        "benchmarks/results/runtimes_avx2.md has the measured factor"
    )


def _winograd_int8(base: VGG, batches: list[torch.Tensor], keep_first: bool, keep_last: bool) -> Int8VGG:
    """quantize_int8's Winograd path: int8 F(2x2) convs (vggnet.cpu.int8_conv) and FC layers (vggnet.cpu.fc_layers)."""
    from .cpu.fc_layers import int8_classifier, int8_net
    from .cpu.int8_conv import int8_features

    base = base.cpu().eval().to(memory_format=torch.channels_last)
    calibration = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    features = int8_features(base.features, calibration, skip=1 if keep_first else 0)
    if base.cfg.head == "conv":  # a conv head's FC6-FC8 stay fp32: dense_head reads their weights
        base.features = features
        return Int8VGG(base, base, channels_last=True)
    first = base.classifier[0]
    pooled = base.grid if base.cfg.head == "fc" else 1
    if isinstance(first, nn.Linear) and first.in_features == base.feature_channels * pooled**2:
        # the input stays as it comes: conv1_1's kernel reads NCHW, and every later layer writes channels-last
        return Int8VGG(base, int8_net(features, base.avgpool, base.classifier, base.feature_channels, keep_last))
    base.features = features  # a factorised FC6 (vggnet.compress): it reads torch.flatten's order as before
    base.classifier = int8_classifier(base.classifier, keep_last=keep_last)
    return Int8VGG(base, base, channels_last=True)
