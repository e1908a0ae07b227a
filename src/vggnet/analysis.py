"""Layer-by-layer analysis of a VGG: shapes, parameters, MACs, receptive field, memory.

Everything is computed from a built model, so the figures cannot drift from the code.
MACs count the multiply-accumulates of convolutions and linear layers (FLOPs = 2 x MACs).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .configs import CONFIGS, PAPER_PARAMS_M, weight_layers
from .model import VGG, build, count_parameters
from .tables import human_bytes


@dataclass
class LayerInfo:
    """One row of the per-layer table."""

    name: str  # the paper's name: conv1_1, relu1_1, pool1, ..., fc6, fc8
    kind: str  # module type
    shape: tuple[int, int, int]  # output (C, H, W) for one image
    params: int
    macs: int
    rf: int | None  # receptive field side in input pixels (None once undefined)
    jump: int | None  # distance in input pixels between neighbouring outputs

    @property
    def memory(self) -> int:
        """Bytes of the output activation for one image in fp32."""
        c, h, w = self.shape
        return 4 * c * h * w


def layer_table(model: VGG, input_size: int | tuple[int, int] = 224) -> list[LayerInfo]:
    """Per-layer rows for one image of side `input_size` (an int or (H, W))."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if min(h, w) < model.min_input:
        raise ValueError(f"input {h}x{w} is smaller than {model.min_input}, the smallest this VGG accepts")
    c = model.cfg.in_channels
    rf: int | None = 1
    jump: int | None = 1
    rows: list[LayerInfo] = []

    def grow(kernel: int, stride: int) -> None:
        nonlocal rf, jump
        if rf is not None and jump is not None:
            rf, jump = rf + (kernel - 1) * jump, jump * stride

    def add(name: str, module: nn.Module, macs: int = 0) -> None:
        params = sum(p.numel() for p in module.parameters())
        rows.append(LayerInfo(name, type(module).__name__, (c, h, w), params, macs, rf, jump))

    for name, m in zip(model.feature_names, model.features, strict=True):
        if isinstance(m, nn.Conv2d):
            k, p = m.kernel_size[0], m.padding[0]
            h, w = h + 2 * p - k + 1, w + 2 * p - k + 1
            grow(k, 1)
            macs = m.out_channels * h * w * m.in_channels * k * k
            c = m.out_channels
            add(name, m, macs)
        elif isinstance(m, nn.MaxPool2d):
            h, w = h // 2, w // 2
            grow(2, 2)
            add(name, m)
        else:
            add(name, m)

    head, g = model.cfg.head, model.grid
    if head == "fc" and (h, w) != (g, g):
        if h % g == 0 and w % g == 0 and h == w:
            grow(h // g, h // g)
        else:
            rf = jump = None  # adaptive pooling with uneven bins has no single receptive field
        h = w = g
        add("avgpool", model.avgpool)
    elif head == "gap":
        if h == w:
            grow(h, h)
        else:
            rf = jump = None
        h = w = 1
        add("gap", model.avgpool)

    for i, (name, m) in enumerate(zip(model.classifier_names, model.classifier, strict=True)):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            k = g if (i == 0 and head != "gap") else 1
            h, w = h - k + 1, w - k + 1
            grow(k, 1)
            weights = m.weight.numel()
            c = m.weight.shape[0]
            add(name, m, weights * h * w)
        else:
            add(name, m)
    return rows


def activation_bytes(model: VGG, height: int, width: int, backward: bool = False) -> int:
    """fp32 activation bytes of one height x width image: a forward pass holds a layer's input and output at
    once (the largest such pair counts), a backward pass every layer's output (their sum)."""
    sizes = [4 * model.cfg.in_channels * height * width] + [r.memory for r in layer_table(model, (height, width))]
    return sum(sizes) if backward else max(a + b for a, b in itertools.pairwise(sizes))


def totals(rows: list[LayerInfo]) -> dict[str, int]:
    """Sums of parameters, MACs and activation memory over the rows."""
    return {
        "params": sum(r.params for r in rows),
        "macs": sum(r.macs for r in rows),
        "memory": sum(r.memory for r in rows),
    }


def format_table(rows: list[LayerInfo]) -> str:
    """The per-layer table as aligned text, totals at the bottom."""
    header = f"{'layer':<9} {'type':<18} {'output (C,H,W)':>18} {'params':>13} {'MACs':>15} {'RF':>5} {'jump':>5} {'memory':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(str(v) for v in r.shape)
        rf = "-" if r.rf is None else str(r.rf)
        jump = "-" if r.jump is None else str(r.jump)
        lines.append(
            f"{r.name:<9} {r.kind:<18} {shape:>18} {r.params:>13,} {r.macs:>15,} {rf:>5} {jump:>5} {human_bytes(r.memory):>10}"
        )
    t = totals(rows)
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<9} {'':<18} {'':>18} {t['params']:>13,} {t['macs']:>15,} {'':>5} {'':>5} {human_bytes(t['memory']):>10}"
    )
    lines.append(
        f"{t['macs'] / 1e9:.3f} GMACs ({2 * t['macs'] / 1e9:.3f} GFLOPs), {t['params'] / 1e6:.3f} M parameters"
    )
    return "\n".join(lines)


@dataclass
class Table2Row:
    """One configuration's line of the paper's Table 2, measured."""

    config: str
    weight_layers: int
    params: int
    paper_params_m: int | None  # None: not in the paper's Table 2 (the shallow variants)
    gmacs: float


def table2(num_classes: int = 1000, input_size: int = 224, configs: Iterable[str] = tuple(CONFIGS)) -> list[Table2Row]:
    """Parameters and compute of every configuration (or those named), beside the paper's Table 2."""
    rows = []
    for letter in configs:
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = build(letter, num_classes=num_classes)
        t = totals(layer_table(model, input_size))
        assert t["params"] == count_parameters(model)
        rows.append(Table2Row(letter, weight_layers(letter), t["params"], PAPER_PARAMS_M.get(letter), t["macs"] / 1e9))
    return rows


def format_table2(rows: list[Table2Row]) -> str:
    """Table 2 side by side with the paper, as aligned text."""
    lines = [f"{'config':<7} {'weight layers':>13} {'parameters':>13} {'paper (M)':>10} {'GMACs@224':>10}"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        paper = "-" if r.paper_params_m is None else r.paper_params_m
        lines.append(f"{r.config:<7} {r.weight_layers:>13} {r.params:>13,} {paper:>10} {r.gmacs:>10.3f}")
    return "\n".join(lines)


def receptive_field(layers: Iterable[nn.Module]) -> int:
    """Receptive field side, in input pixels, of a chain of convolutions and poolings."""
    rf, jump = 1, 1
    for m in layers:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            d = getattr(m, "dilation", 1)  # AvgPool2d has none
            d = d if isinstance(d, int) else d[0]
            rf, jump = rf + (k - 1) * d * jump, jump * s
    return rf


@dataclass
class KernelComparison:
    """n stacked 3x3 convs against one (2n+1)x(2n+1) conv, both C -> C channels (section 2.3)."""

    n: int
    channels: int
    rf: int  # receptive field side of either, in input pixels: 2n+1
    stacked_weights: int  # 9 n C^2 (biases not counted)
    single_weights: int  # (2n+1)^2 C^2
    stacked_relus: int  # n non-linearities
    single_relus: int  # 1


def compare_kernels(n: int, channels: int) -> KernelComparison:
    """Build both alternatives (on the meta device) and count their weights, field and ReLUs."""
    if n < 1 or channels < 1:
        raise ValueError(f"need n >= 1 and channels >= 1, got n={n}, channels={channels}")
    c = channels
    with torch.device("meta"):
        stacked = nn.Sequential(*[m for _ in range(n) for m in (nn.Conv2d(c, c, 3, padding=1), nn.ReLU())])
        single = nn.Sequential(nn.Conv2d(c, c, 2 * n + 1, padding=n), nn.ReLU())

    def weights(seq: nn.Sequential) -> int:
        return sum(m.weight.numel() for m in seq if isinstance(m, nn.Conv2d))

    def relus(seq: nn.Sequential) -> int:
        return sum(isinstance(m, nn.ReLU) for m in seq)

    rf = receptive_field(stacked)
    assert rf == receptive_field(single) == 2 * n + 1
    return KernelComparison(n, c, rf, weights(stacked), weights(single), relus(stacked), relus(single))
