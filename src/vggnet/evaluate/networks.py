"""The networks of an evaluation: runs or weights files, their training scales and test scales.

Everything about a network is read and checked (metadata, scales, class counts) before any tensor
is loaded; `network_posteriors` averages the protocol over a network's test scales and
`ensemble_posteriors` over the networks of an ensemble (section 4.4).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from ..analysis import activation_bytes
from ..configs import EvalConfig
from ..limits import ACTIVATION_BYTES
from ..model import VGG
from ..weights import WeightsMeta, has_low_rank, load_weights, resolve_weights, weights_meta
from .protocol import method_posteriors


def train_scale(meta: WeightsMeta) -> tuple[int, int]:
    """Training scale (Smin, Smax) stored with a run; without it, 256/224 of the input size (torchvision)."""
    scale = meta.extra.get("scale")
    if scale is None:
        s = round(meta.model.input_size * 256 / 224)
        return s, s
    values = [scale] if isinstance(scale, (int, float)) else list(scale)
    if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"training scale {scale!r} in the weights' metadata is not S or [Smin, Smax]")
    return int(values[0]), int(values[-1])


def resolve_scales(spec: str, train: tuple[int, int], input_size: int, source: str = "model") -> list[int]:
    """Test scales Q from "paper", "single", "multi" or "256,384,512" (see EvalConfig.scales)."""
    smin, smax = train
    jittered, mid = smin != smax, (smin + smax) // 2
    word = spec.strip().lower()
    if word == "paper":
        qs = [smin, mid, smax] if jittered else [smin]
    elif word == "single":
        qs = [mid]
    elif word == "multi":
        # {S-32, S, S+32} at a 224 input; S-32 is raised to the input size when below it.
        delta = max(1, round(32 * input_size / 224))
        qs = [smin, mid, smax] if jittered else [max(input_size, smin - delta), smin, smin + delta]
    else:
        try:
            qs = [int(v) for v in word.split(",") if v.strip()]
        except ValueError:
            qs = []
        if not qs:
            raise ValueError(f"scales {spec!r}: expected paper, single, multi or integers such as 256,384,512")
    too_small = [q for q in qs if q < input_size]
    if too_small:
        raise ValueError(f"{source}: test scale Q={too_small[0]} is smaller than the network's input size {input_size}")
    return list(dict.fromkeys(qs))


@dataclass
class Network:
    """One network of an evaluation: where it came from, the model, its metadata and test scales."""

    source: str
    model: VGG
    meta: WeightsMeta
    scales: list[int]

    @property
    def name(self) -> str:
        """The paper's letter, with _bn and a width note: "D", "A_bn (width 1/16)"."""
        return self.meta.model.display_name(with_width=True)

    @cached_property
    def shapes(self) -> VGG:
        """The network on the meta device (shapes, no weights) as testing runs it: fc layers as convolutions."""
        cfg = self.meta.model
        with torch.device("meta"):
            return VGG(dataclasses.replace(cfg, head="conv") if cfg.head == "fc" else cfg)


def check_activations(
    networks: Sequence[Network], sizes: Mapping[int, tuple[int, int]], copies: int = 1, backward: bool = False
) -> None:
    """A one-line ValueError when one image, rescaled to each Q as `sizes` (width, height) say, would pass the
    activation budget in one of `networks`; `copies`: images per pass (2 with flips); `backward`: Grad-CAM's."""
    for net in networks:
        for q in net.scales:
            w, h = sizes[q]
            ACTIVATION_BYTES.check(
                copies * activation_bytes(net.shapes, h, w, backward),
                f"rescaled to Q={q} ({w}x{h}), its activations in VGG {net.name}{' with gradients' if backward else ''} need",
            )


Plan = list[tuple[Path, WeightsMeta, list[int]]]  # (weights file, metadata, test scales) per network


def read_networks(
    weights_or_runs: Sequence[str | os.PathLike[str]], scales: str = "paper", verify: bool = True
) -> Plan:
    """Metadata and test scales of each network, checked before any tensor is read."""
    if not weights_or_runs:
        raise ValueError("no weights given: pass a run folder or a weights file (several for an ensemble)")
    files = [resolve_weights(p) for p in weights_or_runs]  # files, run folders, catalogue names, URLs
    plan = []
    for f in files:
        meta = weights_meta(f, verify)  # a project file's header; a foreign file is imported to learn its shape
        plan.append((f, meta, resolve_scales(scales, train_scale(meta), meta.model.input_size, str(f))))
    check_classes(plan, plan[0][1].model.num_classes, f"{files[0]}")
    return plan


def check_classes(plan: Plan, num_classes: int, against: str) -> None:
    """Raise a one-line error naming the weights whose class count differs from `num_classes`."""
    for f, meta, _ in plan:
        if meta.model.num_classes != num_classes:
            hint = "; class folders named by WordNet id (n01440764 ...) map onto ImageNet's classes"
            hint = hint if meta.model.num_classes == 1000 else ""
            raise ValueError(
                f"{f}: weights have {meta.model.num_classes} classes but {against} has {num_classes}{hint}"
            )


def for_evaluation(model: VGG) -> VGG:
    """The network as testing runs it: an fc head recast as convolutions (section 3.2), channels-last, eval mode.

    Same outputs up to float rounding; conv weights and NHWC activations spare the convolution library a
    layout conversion per call.
    """
    if model.cfg.head == "fc" and not has_low_rank(model):  # factorised FC layers stay Linear (dense_head reads them)
        model = model.to_head("conv")
    return model.eval().to(memory_format=torch.channels_last)


def load_networks(
    plan: Plan, device: str | torch.device = "cpu", fast: bool = False, verify: bool = True, backend: str = "torch"
) -> list[Network]:
    """Load every planned network onto `device`, prepared by `for_evaluation` (content hashes checked with `verify`).

    `fast` folds BatchNorm into the convs and, on the CPU, runs the 3x3 convs where it pays as Winograd
    layers (`vggnet.cpu.winograd`); other devices keep their own convolution library. `backend` "onnxruntime"
    or "openvino" runs each network's exported dense net in that runtime instead (`vggnet.backends`).
    """
    from ..backends import runtime_model
    from ..cpu.winograd import winogradify
    from ..optimize import fold_batchnorm

    networks = []
    for f, _, scales in plan:
        model, meta = load_weights(f, verify=verify)
        model = for_evaluation(fold_batchnorm(model) if fast else model).to(device)
        if fast and torch.device(device).type == "cpu":
            model.features = winogradify(model.features)
        networks.append(Network(str(f), runtime_model(model, backend), meta, scales))  # type: ignore[arg-type]
    return networks


def network_posteriors(net: Network, images: dict[int, list[torch.Tensor]], cfg: EvalConfig) -> torch.Tensor:
    """One network's posteriors averaged over its test scales; `images` maps Q to the rescaled images."""
    per_scale = [method_posteriors(net.model, images[q], net.meta.preprocessing, cfg) for q in net.scales]
    return torch.stack(per_scale).mean(dim=0)


def ensemble_posteriors(
    networks: Sequence[Network], images: dict[int, list[torch.Tensor]], cfg: EvalConfig
) -> torch.Tensor:
    """Posteriors averaged over the networks of an ensemble (section 4.4, Table 6)."""
    return torch.stack([network_posteriors(n, images, cfg) for n in networks]).mean(dim=0)
