"""VGG explained in figures: Table 1 and a block diagram (SVG), receptive fields, parameters, compute.

`write_report(out_dir)` writes README.md with its figures beside it. Every number is computed
from models built on the meta device through vggnet.analysis; none is typed in.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import nn

from .analysis import KernelComparison, LayerInfo, Table2Row, compare_kernels, human_bytes, layer_table, table2, totals
from .configs import CONFIGS, resolve
from .model import VGG, build

INPUT = 224  # the paper's training crop (section 3.1)
FEATURED = ("D", "E")  # the paper's best nets, VGG16 and VGG19
STACK_DEPTHS = (2, 3, 4)  # n stacked 3x3 convs: receptive fields 5, 7, 9
CHANNELS = (64, 128, 256, 512)  # the widths VGG uses
HEADS_COMPARED = ("fc", "conv", "gap")

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
# kind -> (fill, stroke), shared by the SVGs and the plots
PALETTE = {
    "conv": ("#d3e3f4", "#3b6fa8"),
    "conv1x1": ("#cdeee8", "#1f8a7a"),
    "pool": ("#fde2c6", "#d46f00"),
    "lrn": ("#ecdcf0", "#8a4f99"),
    "fc": ("#d8eed2", "#3f8f34"),
    "io": ("#eeeeee", "#666666"),
}
KIND_NAMES = {
    "conv": "3×3 convolution",
    "conv1x1": "1×1 convolution",
    "pool": "max-pool",
    "lrn": "LRN",
    "fc": "fully connected",
}


# -- reading the models -------------------------------------------------------------------


def meta_model(name: str, head: str = "fc") -> VGG:
    """A VGG holding shapes only (meta device): analysis without memory or init cost."""
    with torch.device("meta"):
        return build(name, head=head)


def display_name(model: VGG) -> str:
    """The paper's letter, with `_bn` for the batch-normalised variant."""
    return model.cfg.config + ("_bn" if model.cfg.batch_norm else "")


def modules_by_name(model: VGG) -> dict[str, nn.Module]:
    """Each layer_table row name -> its module."""
    named = dict(zip(model.feature_names, model.features, strict=True))
    named.update(zip(model.classifier_names, model.classifier, strict=True))
    if hasattr(model, "avgpool"):
        named["avgpool"] = named["gap"] = model.avgpool
    return named


@dataclass
class Net:
    """A model with its layer_table rows and what each row is."""

    name: str
    model: VGG
    rows: list[LayerInfo]
    kinds: dict[str, str | None] = field(default_factory=dict)  # row name -> drawing kind

    def __post_init__(self) -> None:
        self.kinds = {n: module_kind(m, n) for n, m in modules_by_name(self.model).items()}

    @classmethod
    def build(cls, name: str, head: str = "fc") -> Net:
        """Build `name` on the meta device and tabulate it at the paper's input size."""
        model = meta_model(name, head)
        return cls(display_name(model), model, layer_table(model, INPUT))

    def kind(self, r: LayerInfo) -> str | None:
        """Drawing kind of a row (None for ReLU, BN, dropout)."""
        return self.kinds[r.name]

    def feature_rows(self) -> list[LayerInfo]:
        """Convs, LRN and pools of the conv stack, in order."""
        names = set(self.model.feature_names)
        return [r for r in self.rows if r.name in names and self.kind(r) is not None]

    def weight_rows(self) -> list[LayerInfo]:
        """Layers with weights (convs and FC)."""
        return [r for r in self.rows if r.kind in ("Conv2d", "Linear")]

    def memory_rows(self) -> list[LayerInfo]:
        """Layers whose output is a new tensor (ReLU works in place; BN and dropout keep the shape)."""
        return [r for r in self.rows if self.kind(r) is not None]

    def split_head(self) -> tuple[dict[str, int], dict[str, int]]:
        """Totals of the conv stack and of everything after it (pooling and classifier)."""
        names = set(self.model.feature_names)
        return totals([r for r in self.rows if r.name in names]), totals([r for r in self.rows if r.name not in names])


def count_weight_layers(model: VGG) -> int:
    """Convolutions and fully connected layers: the depth the paper counts."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def module_kind(m: nn.Module, name: str = "") -> str | None:
    """Drawing kind of a main layer; None for layers folded into the one before (ReLU, BN, dropout)."""
    if name.startswith("fc") and isinstance(m, (nn.Linear, nn.Conv2d)):
        return "fc"  # the conv head's FC layers are convolutions
    if isinstance(m, nn.Conv2d):
        return "conv1x1" if m.kernel_size[0] == 1 else "conv"
    if isinstance(m, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
        return "pool"
    if isinstance(m, nn.LocalResponseNorm):
        return "lrn"
    if isinstance(m, nn.Linear):
        return "fc"
    return None


def module_label(m: nn.Module, in_classifier: bool = False) -> str:
    """The paper's notation: conv3-64, conv1-512, maxpool, LRN, FC-4096."""
    if isinstance(m, nn.Linear):
        return f"FC-{m.out_features}"
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0]
        return f"FC-{m.out_channels} as conv{k}" if in_classifier else f"conv{k}-{m.out_channels}"
    if isinstance(m, nn.MaxPool2d):
        return "maxpool"
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size if isinstance(m.output_size, int) else m.output_size[0]
        return "global avgpool" if size == 1 else f"avgpool to {size}×{size}"
    if isinstance(m, nn.LocalResponseNorm):
        return "LRN"
    return {nn.ReLU: "ReLU", nn.BatchNorm2d: "BN", nn.Dropout: "dropout"}.get(type(m), type(m).__name__)


@dataclass
class Column:
    """One column of Table 1, read off a built model."""

    name: str
    weight_layers: int
    blocks: list[list[str]]  # conv-stack labels between max-pools
    head: list[str]  # FC-4096, FC-4096, FC-1000
    added: list[list[bool]] = field(default_factory=list)  # per label: new relative to the column on the left


def table1_columns() -> list[Column]:
    """Every configuration as a Table 1 column; `added` marks the paper's bold layers."""
    columns: list[Column] = []
    for letter in CONFIGS:
        model = meta_model(letter)
        blocks: list[list[str]] = [[]]
        for m in model.features:
            if isinstance(m, nn.MaxPool2d):
                blocks.append([])
            elif module_kind(m) is not None:
                blocks[-1].append(module_label(m))
        head = [module_label(m) for m in model.classifier if isinstance(m, nn.Linear)]
        columns.append(Column(letter, count_weight_layers(model), blocks[:-1], head))
    for prev, col in zip([None, *columns], columns, strict=False):
        col.added = [added_layers(prev.blocks[b] if prev else block, block) for b, block in enumerate(col.blocks)]
    return columns


def added_layers(before: list[str], after: list[str]) -> list[bool]:
    """Mark the labels of `after` beyond those already in `before` (a multiset difference)."""
    left, flags = Counter(before), []
    for label in after:
        flags.append(left[label] <= 0)
        left[label] -= 1
    return flags


@dataclass
class Unit:
    """One drawn layer: a conv, pool, LRN or FC with the BN, ReLU and dropout after it folded in."""

    name: str  # paper name of the main layer: conv1_1, pool1, fc6
    label: str  # conv3-64, maxpool, FC-4096
    kind: str  # a PALETTE key
    channels: int
    shape: tuple[int, int, int]  # output (C, H, W) after the folded layers
    params: int
    macs: int
    extras: list[str] = field(default_factory=list)  # ["BN", "ReLU"], ["ReLU", "dropout"]

    @property
    def text(self) -> str:
        return " · ".join([self.label, *self.extras])


@dataclass
class Group:
    """A block between max-pools, or the classifier."""

    title: str
    units: list[Unit]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.units[-1].shape

    @property
    def params(self) -> int:
        return sum(u.params for u in self.units)

    @property
    def macs(self) -> int:
        return sum(u.macs for u in self.units)


def layer_groups(model: VGG, rows: list[LayerInfo]) -> list[Group]:
    """Blocks of the conv stack (split after each max-pool) and the classifier, from layer_table rows."""
    named = modules_by_name(model)
    features = set(model.feature_names)
    groups = [Group("block 1", [])]
    for row in rows:
        m = named[row.name]
        if row.name not in features and groups[-1].title != "classifier":
            groups.append(Group("classifier", []))
        kind = module_kind(m, row.name)
        if kind is None:  # fold into the layer before: same shape, its params (BN) added
            unit = groups[-1].units[-1]
            unit.extras.append(module_label(m))
            unit.params += row.params
            unit.macs += row.macs
            unit.shape = row.shape
            continue
        classifier = row.name not in features
        groups[-1].units.append(
            Unit(row.name, module_label(m, classifier), kind, row.shape[0], row.shape, row.params, row.macs)
        )
        if isinstance(m, nn.MaxPool2d) and row.name != model.feature_names[-1]:
            groups.append(Group(f"block {len(groups) + 1}", []))
    return groups


# -- number formatting --------------------------------------------------------------------


def short(n: float) -> str:
    """1.85 G, 102.8 M, 36.9 K: three significant figures for figures that are read, not parsed."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.{max(0, 2 - int(math.log10(abs(v))))}f} {unit}"
    return f"{n:g}"


def shape_text(shape: tuple[int, int, int]) -> str:
    """C × H × W, or just C for a vector."""
    c, h, w = shape
    return f"{c}" if h == w == 1 else f"{c} × {h} × {w}"


def mib(n: int) -> str:
    """Bytes as MiB with two decimals (the report's memory unit)."""
    return f"{n / 2**20:.2f}"


def kib(n: int) -> str:
    """Bytes as KiB with one decimal and thousands separators."""
    return f"{n / 2**10:,.1f}"


def listing(items: list[str]) -> str:
    """a, b and c."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def percent(part: float, whole: float) -> str:
    """A share with one decimal and a percent sign."""
    return f"{100 * part / whole:.1f}%"


# -- SVG ------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def text_width(text: str, size: float, bold: bool = False) -> float:
    """Width in px of `text` in DejaVu Sans, wider than the fallbacks, so boxes fit in every viewer."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    prop = FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
    return TextPath((0, 0), text, size=size, prop=prop).get_extents().width


class Svg:
    """Plain SVG text, every string escaped."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, fill: str, stroke: str = "none", rx: float = 0) -> None:
        self.items.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{rx}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1"/>'
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#444", arrow: bool = False) -> None:
        end = ' marker-end="url(#arrow)"' if arrow else ""
        self.items.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" stroke-width="1.2"{end}/>'
        )

    def text(
        self,
        x: float,
        y: float,
        s: str,
        size: float = 12,
        anchor: str = "start",
        bold: bool = False,
        fill: str = "#222",
    ) -> None:
        weight = ' font-weight="bold"' if bold else ""
        self.items.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{weight}>'
            f"{escape(s)}</text>"
        )

    def render(self, width: float, height: float, title: str) -> str:
        head = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family={quoteattr(FONT)}>\n'
            f"<title>{escape(title)}</title>\n"
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>\n'
            f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>\n'
        )
        return head + "\n".join(self.items) + "\n</svg>\n"


def table1_svg(columns: list[Column], input_size: int = INPUT) -> str:
    """The six configurations side by side in the layout of the paper's Table 1."""
    svg, left, line_h = Svg(), 20.0, 20.0
    widest = max(text_width(s, 13, True) for c in columns for b in c.blocks for s in b)
    col_w = max(widest + 28, max(text_width(f"{c.weight_layers} weight layers", 12) + 20 for c in columns))
    width = 2 * left + col_w * len(columns)
    right = width - left
    y = 20.0
    svg.text(
        width / 2,
        y + 14,
        "ConvNet configurations (Table 1 of the paper), read off the built models",
        15,
        "middle",
        True,
    )
    y += 30
    top = y

    def spanning(label: str, kind: str, h: float = 26) -> None:
        nonlocal y
        svg.rect(left, y, right - left, h, PALETTE[kind][0])
        svg.text(width / 2, y + h / 2 + 4.5, label, 13, "middle")
        y += h
        svg.line(left, y, right, y, "#999")

    def dividers(y0: float, y1: float) -> None:
        for i in range(1, len(columns)):
            svg.line(left + i * col_w, y0, left + i * col_w, y1, "#999")

    svg.rect(left, y, right - left, 48, "#f7f7f7")
    for i, c in enumerate(columns):
        cx = left + (i + 0.5) * col_w
        svg.text(cx, y + 21, c.name, 15, "middle", True)
        svg.text(cx, y + 39, f"{c.weight_layers} weight layers", 12, "middle", fill="#555")
    dividers(y, y + 48)
    y += 48
    svg.line(left, y, right, y, "#333")
    spanning(f"input ({input_size} × {input_size} RGB image)", "io")
    for b in range(len(columns[0].blocks)):
        h = max(len(c.blocks[b]) for c in columns) * line_h + 12
        svg.rect(left, y, right - left, h, "#fbfdff")
        for i, c in enumerate(columns):
            cx = left + (i + 0.5) * col_w
            for j, (label, new) in enumerate(zip(c.blocks[b], c.added[b], strict=True)):
                svg.text(cx, y + 6 + (j + 1) * line_h - 5, label, 13, "middle", new, "#0b4f9c" if new else "#222")
        dividers(y, y + h)
        y += h
        svg.line(left, y, right, y, "#999")
        spanning("maxpool", "pool")
    for label in columns[0].head:
        spanning(label, "fc")
    spanning("soft-max", "io")
    svg.rect(left, top, right - left, y - top, "none", "#333")
    y += 20
    svg.text(left, y, "Bold blue: layers added relative to the column on the left.", 12, fill="#333")
    svg.text(
        left,
        y + 17,
        "convK-N: K×K convolution with N output channels, stride 1, size-preserving padding;",
        12,
        fill="#333",
    )
    svg.text(
        left, y + 34, "ReLU after every convolution and after FC-4096 (not shown, as in the paper).", 12, fill="#333"
    )
    return svg.render(width, y + 48, "VGG configurations A to E (Table 1)")


def block_diagram_svg(model: VGG, rows: list[LayerInfo], input_size: int = INPUT) -> str:
    """One network top to bottom: blocks of layers, tensor shapes between blocks, params and MACs per layer."""
    groups = layer_groups(model, rows)
    name, svg = display_name(model), Svg()
    margin, row_h, head_h, arrow_h = 16.0, 30.0, 26.0, 40.0
    pill_w = {id(u): pill_width(u) for g in groups for u in g.units}
    widest = max(pill_w.values())
    cx = margin + 20 + widest / 2  # centre line of the layer pills
    params_x = cx + widest / 2 + 110  # right edges of the two number columns
    macs_x = params_x + 100
    t = totals(rows)
    title = f"VGG {name} ({count_weight_layers(model)} weight layers), one {input_size} × {input_size} image"
    total = f"Total: {t['params']:,} parameters, {t['macs']:,} MACs ({t['macs'] / 1e9:.3f} GMACs)."
    width = max(macs_x + 14, text_width(title, 15, True) + 8, text_width(total, 12, True) + 8) + margin
    y = 28.0
    svg.text(margin, y, title, 15, bold=True)
    svg.text(margin, y + 19, "Between blocks: the tensor (C × H × W) and its size in fp32.", 12, fill="#555")
    svg.text(margin, y + 35, "Per layer: parameters and multiply-accumulates (MACs).", 12, fill="#555")
    y += 60
    svg.text(params_x, y, "params", 12, "end", True, "#333")
    svg.text(macs_x, y, "MACs", 12, "end", True, "#333")
    y += 10
    pill(svg, cx, y, 200, "input image", "io")
    y += 24
    shape = (model.cfg.in_channels, input_size, input_size)
    for g in groups:
        arrow(svg, cx, y, arrow_h, shape)
        y += arrow_h
        h = head_h + row_h * len(g.units) + 6
        svg.rect(margin, y, width - 2 * margin, h, "#fafafa", "#bbb", rx=6)
        svg.text(margin + 10, y + 18, g.title, 13, bold=True)
        svg.text(params_x, y + 18, short(g.params), 12, "end", True)
        svg.text(macs_x, y + 18, short(g.macs), 12, "end", True)
        for i, u in enumerate(g.units):
            ry = y + head_h + i * row_h
            pill(svg, cx, ry + 3, pill_w[id(u)], u.text, u.kind)
            svg.text(params_x, ry + 19, short(u.params) if u.params else "0", 12, "end", fill="#333")
            svg.text(macs_x, ry + 19, short(u.macs) if u.macs else "0", 12, "end", fill="#333")
        y += h
        shape = g.shape
    arrow(svg, cx, y, arrow_h, shape, "class scores")
    y += arrow_h
    pill(svg, cx, y, 200, "soft-max", "io")
    y += 50
    svg.text(margin, y, total, 12, bold=True)
    y += 22
    x = margin
    kinds = [k for k in KIND_NAMES if any(u.kind == k for g in groups for u in g.units)]
    for k in kinds:
        svg.rect(x, y - 11, 14, 14, PALETTE[k][0], PALETTE[k][1], rx=3)
        svg.text(x + 19, y, KIND_NAMES[k], 12, fill="#333")
        x += 19 + text_width(KIND_NAMES[k], 12) + 18
    return svg.render(width, y + 16, f"VGG {name} block diagram")


def pill_width(u: Unit) -> float:
    """Wider for more channels (log scale), never narrower than its text."""
    return max(text_width(u.text, 12) + 24, 120 + 20 * math.log2(max(u.channels, 64) / 64))


def pill(svg: Svg, cx: float, y: float, w: float, text: str, kind: str) -> None:
    """A rounded box centred on `cx` holding one label."""
    fill, stroke = PALETTE[kind]
    svg.rect(cx - w / 2, y, w, 24, fill, stroke, rx=12)
    svg.text(cx, y + 16.5, text, 12, "middle")


def arrow(svg: Svg, cx: float, y: float, h: float, shape: tuple[int, int, int], what: str = "") -> None:
    """A downward arrow labelled with the tensor that flows along it."""
    svg.line(cx, y + 3, cx, y + h - 3, arrow=True)
    label = shape_text(shape) + (f" {what}" if what else "")
    svg.text(cx + 12, y + h / 2 + 4, label, 12, bold=True)
    size = human_bytes(4 * shape[0] * shape[1] * shape[2])
    svg.text(cx + 20 + text_width(label, 12, True), y + h / 2 + 4, f"({size})", 12, fill="#666")


# -- plots ----------------------------------------------------------------------------------


def new_figure(w: float, h: float) -> Figure:
    """A matplotlib figure drawn by Agg without pyplot (no global state, no display)."""
    fig = Figure(figsize=(w, h), layout="constrained")
    fig.set_dpi(150)
    return fig


def save(fig: Figure, path: Path) -> None:
    """PNG at 150 dpi without a Software stamp, so regenerated figures differ only when the content does."""
    fig.savefig(path, dpi=150, metadata={"Software": None})


def plot_receptive_fields(nets: list[Net], path: Path) -> None:
    """Receptive field side after every conv, LRN and pool, one panel per network."""
    fig = new_figure(10, 3.4 * len(nets))
    axes = fig.subplots(len(nets), 1, squeeze=False)[:, 0]
    for ax, net in zip(axes, nets, strict=True):
        pts = net.feature_rows()
        xs = range(len(pts))
        ax.plot(xs, [r.rf for r in pts], color=PALETTE["conv"][1], lw=1.5, zorder=1)
        for kind in ("conv", "conv1x1", "lrn", "pool"):
            sel = [(i, r) for i, r in enumerate(pts) if net.kind(r) == kind]
            if sel:
                marker = "s" if kind == "pool" else "o"
                ax.scatter(*zip(*[(i, r.rf) for i, r in sel], strict=True), color=PALETTE[kind][1], marker=marker,
                           s=28, zorder=2)  # fmt: skip
        for i, r in enumerate(pts):
            ax.annotate(str(r.rf), (i, r.rf), xytext=(-3, 6), textcoords="offset points", ha="right", fontsize=8)
            if net.kind(r) == "pool":  # the jump doubles here: mark the stage boundary
                ax.axvline(i, color=PALETTE["pool"][1], lw=0.8, ls=":", zorder=0)
                ax.text(i, 0.96, f"jump {r.jump}", transform=ax.get_xaxis_transform(), ha="center", va="top",
                        fontsize=8, color=PALETTE["pool"][1], bbox={"fc": "white", "ec": "none", "pad": 1})  # fmt: skip
        ax.axhline(INPUT, ls="--", lw=1, color="#888")
        ax.text(len(pts) * 0.3, INPUT + 4, f"input side, {INPUT} px", fontsize=9, color="#555", va="bottom")
        ax.set_xticks(list(xs), [r.name for r in pts], rotation=90, fontsize=9)
        ax.set_ylabel("receptive field (px)")
        ax.set_ylim(0, max(pts[-1].rf, INPUT) * 1.3)
        ax.set_xlim(-0.6, len(pts) + 0.3)
        ax.set_title(f"VGG {net.name}: side of the input region one unit sees, after each layer", fontsize=10.5)
        ax.grid(axis="y", alpha=0.3)
    legend_for(fig, ("conv", "conv1x1", "lrn", "pool"), nets, "marker")
    save(fig, path)


def plot_small_kernels(table: dict[int, dict[int, KernelComparison]], path: Path) -> None:
    """Stacked 3x3 convs vs one large conv: weights per C², non-linearities, weights at each width."""
    fig = new_figure(10, 7.2)
    axes = fig.subplot_mosaic([["a", "b"], ["c", "c"]])
    ax1, ax2, ax3 = axes["a"], axes["b"], axes["c"]
    ns = sorted(table)
    c0 = CHANNELS[0]
    rfs = [table[n][c0].rf for n in ns]
    stacked = [table[n][c0].stacked_weights / c0**2 for n in ns]
    single = [table[n][c0].single_weights / c0**2 for n in ns]
    blue, orange = PALETTE["conv"][1], PALETTE["pool"][1]
    ax1.plot(rfs, stacked, "o-", color=blue, label="n stacked 3×3 convs")
    ax1.plot(rfs, single, "s-", color=orange, label="one (2n+1)×(2n+1) conv")
    for rf, a, b in zip(rfs, stacked, single, strict=True):
        ax1.annotate(
            f"{a:.0f}", (rf, a), xytext=(0, -13), textcoords="offset points", ha="center", fontsize=9, color=blue
        )
        ax1.annotate(
            f"{b:.0f}", (rf, b), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=9, color=orange
        )
    ax1.set_xticks(rfs, [f"{r}×{r}\nn={n}" for r, n in zip(rfs, ns, strict=True)])
    ax1.set_xlabel("receptive field (px)")
    ax1.set_ylabel("weights / C²")
    ax1.set_ylim(0, max(single) * 1.15)
    ax1.set_title("Weights per C² (C channels in and out)", fontsize=10.5)
    ax1.legend(fontsize=9, frameon=False, loc="upper left")
    ax1.grid(alpha=0.3)

    x = range(len(ns))
    bw = 0.38
    ax2.bar([i - bw / 2 for i in x], [table[n][c0].stacked_relus for n in ns], bw, color=blue, label="stacked 3×3")
    ax2.bar([i + bw / 2 for i in x], [table[n][c0].single_relus for n in ns], bw, color=orange, label="one large conv")
    ax2.set_xticks(list(x), [f"{r}×{r}" for r in rfs])
    ax2.set_xlabel("receptive field (px)")
    ax2.set_ylabel("ReLU non-linearities")
    ax2.set_yticks(range(0, max(ns) + 1))
    ax2.set_title("Non-linearities on the way", fontsize=10.5)
    ax2.legend(fontsize=9, frameon=False, loc="upper left")
    ax2.grid(axis="y", alpha=0.3)

    n7 = 3 if 3 in table else ns[len(ns) // 2]
    rows = [table[n7][c] for c in CHANNELS]
    x = range(len(CHANNELS))
    s_m = [r.stacked_weights / 1e6 for r in rows]
    l_m = [r.single_weights / 1e6 for r in rows]
    ax3.bar([i - bw / 2 for i in x], s_m, bw, color=blue, label=f"{n7} stacked 3×3")
    ax3.bar([i + bw / 2 for i in x], l_m, bw, color=orange, label=f"one {rows[0].rf}×{rows[0].rf}")
    for i, (a, b) in enumerate(zip(s_m, l_m, strict=True)):
        ax3.text(i - bw / 2, a, f"{a:.2f}", ha="center", va="bottom", fontsize=8)
        ax3.text(i + bw / 2, b, f"{b:.2f}", ha="center", va="bottom", fontsize=8)
    ax3.set_xticks(list(x), [f"C={c}" for c in CHANNELS])
    ax3.set_ylabel("weights (millions)")
    ax3.set_ylim(0, max(l_m) * 1.12)
    ax3.set_title(f"Weights for a {rows[0].rf}×{rows[0].rf} field", fontsize=10.5)
    ax3.legend(fontsize=9, frameon=False, loc="upper left")
    ax3.grid(axis="y", alpha=0.3)
    save(fig, path)


def plot_params_macs(nets: list[Net], path: Path) -> None:
    """Per weight layer: parameters (left) and multiply-accumulates (right), one row per network."""
    fig = new_figure(10, 3.5 * len(nets))
    axes = fig.subplots(len(nets), 2, squeeze=False)
    for (ax_p, ax_m), net in zip(axes, nets, strict=True):
        layers = net.weight_rows()
        xs = range(len(layers))
        colors = [PALETTE[net.kind(r)][1] for r in layers]
        names = [r.name for r in layers]
        t = totals(net.rows)
        ax_p.bar(xs, [r.params / 1e6 for r in layers], color=colors)
        ax_m.bar(xs, [r.macs / 1e9 for r in layers], color=colors)
        big = max(layers, key=lambda r: r.params)
        conv_p = sum(r.params for r in layers if net.kind(r) != "fc")
        ax_p.text(0.02, 0.95, f"{big.name}: {big.params / 1e6:.1f} M = {percent(big.params, t['params'])} of "
                  f"{t['params'] / 1e6:.1f} M\nconvolutions: {conv_p / 1e6:.1f} M = {percent(conv_p, t['params'])}",
                  transform=ax_p.transAxes, ha="left", va="top", fontsize=9, fontweight="bold")  # fmt: skip
        ax_p.set_ylim(0, big.params / 1e6 * 1.3)
        conv = sum(r.macs for r in layers if net.kind(r) != "fc")
        ax_m.text(0.02, 0.95, f"convolutions: {percent(conv, t['macs'])} of {t['macs'] / 1e9:.2f} GMACs",
                  transform=ax_m.transAxes, ha="left", va="top", fontsize=9, fontweight="bold")  # fmt: skip
        for ax, ylabel, title in (
            (ax_p, "parameters (millions)", "parameters per layer"),
            (ax_m, "multiply-accumulates (G)", f"MACs per layer at {INPUT} × {INPUT}"),
        ):
            ax.set_xticks(list(xs), names, rotation=90, fontsize=8.5)
            ax.set_ylabel(ylabel)
            ax.set_title(f"VGG {net.name}: {title}", fontsize=10.5)
            ax.grid(axis="y", alpha=0.3)
            ax.set_xlim(-0.6, len(layers) - 0.4)
        ax_m.set_ylim(0, max(r.macs for r in layers) / 1e9 * 1.25)
    legend_for(fig, ("conv", "conv1x1", "fc"), nets)
    save(fig, path)


def plot_memory(nets: list[Net], path: Path) -> None:
    """Output activation size per layer for one image in fp32, one panel per network."""
    fig = new_figure(10, 3.3 * len(nets))
    axes = fig.subplots(len(nets), 1, squeeze=False)[:, 0]
    for ax, net in zip(axes, nets, strict=True):
        layers = net.memory_rows()
        xs = range(len(layers))
        ax.bar(xs, [r.memory / 2**20 for r in layers], color=[PALETTE[net.kind(r)][1] for r in layers])
        for i, r in enumerate(layers):
            ax.text(
                i, r.memory / 2**20 + 0.25, human_bytes(r.memory), rotation=90, ha="center", va="bottom", fontsize=8
            )
        ax.set_ylim(0, max(r.memory for r in layers) / 2**20 * 1.45)
        total = sum(r.memory for r in layers)
        ax.text(0.98, 0.93, f"sum over these layers: {mib(total)} MiB", transform=ax.transAxes, ha="right",
                va="top", fontsize=9, fontweight="bold")  # fmt: skip
        ax.set_xticks(list(xs), [r.name for r in layers], rotation=90, fontsize=9)
        ax.set_ylabel("activation (MiB, fp32)")
        ax.set_title(f"VGG {net.name}: output size of each layer for one {INPUT} × {INPUT} image", fontsize=10.5)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, len(layers) - 0.4)
    legend_for(fig, ("conv", "conv1x1", "lrn", "pool", "fc"), nets)
    save(fig, path)


def plot_heads(heads: dict[str, dict[str, Net]], path: Path) -> None:
    """Feature-stack vs head share of parameters and MACs, fc head against gap head."""
    fig = new_figure(10, 4.0)
    ax_p, ax_m = fig.subplots(1, 2)
    bars = [(net, head) for net in heads for head in ("fc", "gap")]
    labels = [f"{net}\n{head} head" for net, head in bars]
    for ax, key, scale, unit in ((ax_p, "params", 1e6, "parameters (millions)"), (ax_m, "macs", 1e9, "MACs (G)")):
        feat = [heads[n][h].split_head()[0][key] / scale for n, h in bars]
        head = [heads[n][h].split_head()[1][key] / scale for n, h in bars]
        ax.bar(range(len(bars)), feat, color=PALETTE["conv"][1])
        ax.bar(range(len(bars)), head, bottom=feat, color=PALETTE["fc"][1])
        for i, (a, b) in enumerate(zip(feat, head, strict=True)):
            ax.text(
                i, a + b, f"{short((a + b) * scale)}\nhead {short(b * scale)}", ha="center", va="bottom", fontsize=8
            )
        ax.set_xticks(range(len(bars)), labels, fontsize=9)
        ax.set_ylabel(unit)
        ax.set_ylim(0, max(a + b for a, b in zip(feat, head, strict=True)) * 1.25)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(handles=[Patch(color=PALETTE["conv"][1], label="conv stack"), Patch(color=PALETTE["fc"][1], label="head")],
               loc="outside lower center", ncols=2, fontsize=9, frameon=False)  # fmt: skip
    ax_p.set_title("Parameters: the fc head is most of the network", fontsize=10.5)
    ax_m.set_title(f"MACs at {INPUT} × {INPUT}: the heads barely differ", fontsize=10.5)
    save(fig, path)


def plot_table2(rows: list[Table2Row], path: Path) -> None:
    """Parameters (with the paper's Table 2) and MACs for every configuration."""
    fig = new_figure(10, 3.8)
    ax_p, ax_m = fig.subplots(1, 2)
    xs = range(len(rows))
    names = [r.config for r in rows]
    ax_p.bar(xs, [r.params / 1e6 for r in rows], color=PALETTE["conv"][1], label="measured")
    ax_p.scatter(xs, [r.paper_params_m for r in rows], color="black", marker="_", s=400, zorder=3,
                 label="paper, Table 2")  # fmt: skip
    for i, r in enumerate(rows):
        ax_p.text(i, r.params / 1e6 - 6, f"{r.params / 1e6:.1f}", ha="center", va="top", fontsize=9, color="white")
    ax_p.set_ylabel("parameters (millions)")
    ax_p.set_ylim(0, max(r.params for r in rows) / 1e6 * 1.2)
    ax_p.legend(fontsize=9, loc="upper left", frameon=False, ncols=2)
    ax_m.bar(xs, [r.gmacs for r in rows], color=PALETTE["pool"][1])
    for i, r in enumerate(rows):
        ax_m.text(i, r.gmacs, f"{r.gmacs:.2f}", ha="center", va="bottom", fontsize=9)
    ax_m.set_ylabel(f"MACs at {INPUT} × {INPUT} (G)")
    ax_m.set_ylim(0, max(r.gmacs for r in rows) * 1.12)
    first, last = rows[0], rows[-1]
    ax_m.set_title(f"Compute: ×{last.gmacs / first.gmacs:.2f} from {first.config} to {last.config}", fontsize=10.5)
    ax_p.set_title(
        f"Parameters: +{100 * (last.params / first.params - 1):.0f}% from {first.config} to {last.config}", fontsize=11
    )
    for ax in (ax_p, ax_m):
        ax.set_xticks(list(xs), names)
        ax.set_xlabel("configuration")
        ax.grid(axis="y", alpha=0.3)
    save(fig, path)


def legend_for(fig: Figure, kinds: tuple[str, ...], nets: list[Net], style: str = "patch") -> None:
    """One legend for the whole figure, listing only the kinds drawn."""
    present = {net.kind(r) for net in nets for r in net.rows}
    if style == "marker":
        handles = [
            Line2D([], [], ls="", marker="s" if k == "pool" else "o", color=PALETTE[k][1], label=KIND_NAMES[k])
            for k in kinds
            if k in present
        ]
    else:
        handles = [Patch(color=PALETTE[k][1], label=KIND_NAMES[k]) for k in kinds if k in present]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)


# -- the report -----------------------------------------------------------------------------


def md_table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A Markdown table; `align` is one letter per column (l/r), right by default."""
    marks = ["---" if (align[i:i + 1] or "r") == "l" else "---:" for i in range(len(header))]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def figure(n: int, file: str, alt: str, caption: str) -> str:
    """An image with its numbered caption below."""
    return f"![{alt}]({file})\n\n*Figure {n}. {caption}*"


def write_report(out_dir: str | Path, network: str = "D") -> Path:
    """Write README.md and its figures to `out_dir`; returns the Markdown path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    resolve(network)  # an unknown name fails here, before anything is written
    chosen = Net.build(network)
    nets = [Net.build(n) for n in FEATURED if n != chosen.name] + [chosen]
    nets.sort(key=lambda n: (n.name not in FEATURED, n.name))
    out.mkdir(parents=True, exist_ok=True)

    columns = table1_columns()
    (out / "table1.svg").write_text(table1_svg(columns), encoding="utf-8")
    block_file = f"block_{chosen.name}.svg"
    (out / block_file).write_text(block_diagram_svg(chosen.model, chosen.rows), encoding="utf-8")
    plot_receptive_fields(nets, out / "receptive_field.png")
    kernels = {n: {c: compare_kernels(n, c) for c in CHANNELS} for n in range(1, max(STACK_DEPTHS) + 2)}
    plot_small_kernels(kernels, out / "small_kernels.png")
    plot_params_macs(nets, out / "params_macs.png")
    plot_memory(nets, out / "memory.png")
    heads = {net.name: {h: Net.build(net.name, h) for h in HEADS_COMPARED} for net in nets}
    plot_heads(heads, out / "heads.png")
    t2 = table2(input_size=INPUT)
    plot_table2(t2, out / "table2.png")

    parts = [
        "# VGG explained in figures",
        "Generated by `vggnet explain --out docs/explain` from the models in this repository: every number "
        "below is computed by `vggnet.analysis` from networks built on PyTorch's meta device (shapes only), "
        "none is typed in. Paper: Simonyan & Zisserman, *Very Deep Convolutional Networks for Large-Scale "
        "Image Recognition*, ICLR 2015.",
        "## 1. Architecture",
        architecture_text(columns, chosen, block_file),
        "## 2. Receptive fields",
        receptive_text(nets, kernels),
        "## 3. Where the parameters and the compute go",
        cost_text(nets, heads),
        "## 4. Table 2: parameters and compute of every configuration",
        table2_text(t2),
        f"## Appendix: every layer of VGG {chosen.name}",
        appendix_text(chosen),
    ]
    path = out / "README.md"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def report_figures(markdown: Path) -> list[str]:
    """The image files a report links, in order of appearance."""
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown.read_text(encoding="utf-8"))


def architecture_text(columns: list[Column], net: Net, block_file: str) -> str:
    """Section 1: Table 1 and the block diagram with their captions."""
    depths = ", ".join(f"{c.name} {c.weight_layers}" for c in columns)
    ones = [
        (c.name, b + 1) for c in columns for b, block in enumerate(c.blocks) for s in block if s.startswith("conv1-")
    ]
    with_ones = (
        f"except the 1×1 convolutions of {listing(sorted({c for c, _ in ones}))} "
        f"(blocks {listing([str(b) for _, b in ones])})"
        if ones
        else "without exception"
    )
    pools = len(columns[0].blocks)
    name, model, rows = net.name, net.model, net.rows
    groups = layer_groups(model, rows)
    convs = [r for r in rows if r.kind == "Conv2d"]
    last = net.feature_rows()[-1]
    flow = " → ".join([shape_text((model.cfg.in_channels, INPUT, INPUT))] + [shape_text(g.shape) for g in groups])
    t = totals(rows)
    fig1 = figure(
        1,
        "table1.svg",
        "Table 1: the six VGG configurations side by side",
        f"The six configurations of the paper's Table 1, read off the built models. Weight layers (convolutions "
        f"plus fully connected): {depths}. Every convolution is 3×3 {with_ones}; "
        f"all share the {pools} max-pools and the classifier {', '.join(columns[0].head)}. Bold blue marks the "
        f"layers each column adds to the one on its left.",
    )
    fig2 = figure(
        2,
        block_file,
        f"Block diagram of VGG {name}",
        f"VGG {name} from input to soft-max: each block's layers with their parameters and multiply-accumulates "
        f"(MACs), and the tensor between blocks with its fp32 size. Shapes: {flow}. Total {t['params']:,} "
        f"parameters and {t['macs']:,} MACs for one {INPUT} × {INPUT} image.",
    )
    return "\n\n".join(
        [
            f"The convolutions come in {len(groups) - 1} stacks; the 2×2 max-pools between them halve the image "
            f"{pools} times ({INPUT} → {last.shape[1]}) while the channels double from {convs[0].shape[0]} to "
            f"{last.shape[0]}, and {len(columns[0].head)} fully connected layers classify. The configurations "
            "differ only in how many convolutions each stack holds.",
            fig1,
            fig2,
        ]
    )


def receptive_text(nets: list[Net], kernels: dict[int, dict[int, KernelComparison]]) -> str:
    """Section 2: receptive-field growth and the small-kernel argument."""
    facts = []
    for net in nets:
        pts = net.feature_rows()
        first = next((r for r in pts if r.rf > INPUT), None)
        beyond = f"; it first exceeds the {INPUT}-px input at {first.name} ({first.rf} px)" if first else ""
        facts.append(
            f"VGG {net.name}: {pts[0].name} sees {pts[0].rf} px, {pts[1].name} {pts[1].rf} px, and {pts[-1].name} "
            f"{pts[-1].rf} px with a jump of {pts[-1].jump} px between neighbouring units{beyond}"
        )
    fig3 = figure(
        3,
        "receptive_field.png",
        f"Receptive field per layer of VGG {listing([n.name for n in nets])}",
        "Side of the input region that one unit sees, after every convolution and pool. Each 3×3 convolution "
        "adds 2 × jump pixels; each max-pool doubles the jump (the input-pixel distance between neighbouring "
        "units). " + ". ".join(facts) + ".",
    )
    rows = []
    for n in STACK_DEPTHS:
        for c in CHANNELS:
            k = kernels[n][c]
            rows.append(
                [
                    str(k.n),
                    str(k.channels),
                    f"{k.rf}×{k.rf}",
                    f"{k.stacked_weights:,}",
                    f"{k.single_weights:,}",
                    f"{k.stacked_weights / k.single_weights:.3f}",
                    f"{k.stacked_relus} vs {k.single_relus}",
                ]
            )
    table = md_table(
        [
            "n",
            "C",
            "receptive field",
            "weights, n stacked 3×3",
            "weights, one (2n+1)×(2n+1)",
            "stacked / single",
            "ReLUs (stacked vs single)",
        ],
        rows,
    )
    k3 = kernels[3][CHANNELS[-1]]
    k2 = kernels[2][CHANNELS[-1]]
    c = k3.channels
    fig4 = figure(
        4,
        "small_kernels.png",
        "n stacked 3×3 convolutions against one large convolution",
        f"Left: weights per C² for the same receptive field, 9n for the stack against (2n+1)² for one kernel "
        f"(two 3×3: {k2.stacked_weights // c**2} vs {k2.single_weights // c**2}; three: "
        f"{k3.stacked_weights // c**2} vs {k3.single_weights // c**2}). Middle: ReLUs along the way, n against 1. "
        f"Right: weights for a {k3.rf}×{k3.rf} field at each width; at C = {c}: {k3.stacked_weights:,} against "
        f"{k3.single_weights:,} ({percent(k3.single_weights - k3.stacked_weights, k3.single_weights)} fewer). "
        f"Biases are not counted.",
    )
    return "\n\n".join(
        [
            "A unit's receptive field is the input region that can change it. Stacking 3×3 convolutions grows it "
            "by two pixels per layer at full resolution, and faster after each pool.",
            fig3,
            "Section 2.3 of the paper argues for small kernels: n stacked 3×3 convolutions (C channels in and out) "
            "see the same (2n+1)×(2n+1) region as one large kernel, with fewer weights and n non-linearities "
            "instead of one, which makes the decision function more discriminative. The table counts the weights "
            "of both, built as PyTorch modules:",
            table,
            fig4,
        ]
    )


def cost_text(nets: list[Net], heads: dict[str, dict[str, Net]]) -> str:
    """Section 3: parameters and MACs per layer, activation memory, fc vs gap head."""
    facts, mem_facts = [], []
    for net in nets:
        name, t, layers = net.name, totals(net.rows), net.weight_rows()
        big = max(layers, key=lambda r: r.params)
        conv_macs = sum(r.macs for r in layers if net.kind(r) != "fc")
        conv_params = sum(r.params for r in layers if net.kind(r) != "fc")
        fc_params = sum(r.params for r in layers if net.kind(r) == "fc")
        n_fc = sum(net.kind(r) == "fc" for r in layers)
        facts.append(
            f"VGG {name}: {big.name} holds {big.params:,} of {t['params']:,} parameters "
            f"({percent(big.params, t['params'])}), the {n_fc} FC layers {percent(fc_params, t['params'])} and the "
            f"convolutions {percent(conv_params, t['params'])}; the convolutions do {conv_macs:,} of {t['macs']:,} "
            f"MACs ({percent(conv_macs, t['macs'])})"
        )
        mem = net.memory_rows()
        top = max(mem, key=lambda r: r.memory)
        pool = net.feature_rows()[-1]
        mem_facts.append(
            f"VGG {name}: {mib(top.memory)} MiB at {top.name} ({shape_text(top.shape)}), "
            f"{human_bytes(pool.memory)} at {pool.name}, what the classifier sees; "
            f"{mib(sum(r.memory for r in mem))} MiB summed over the layers shown"
        )
    fig5 = figure(
        5,
        "params_macs.png",
        f"Parameters and MACs per layer of VGG {listing([n.name for n in nets])}",
        "Parameters (left) and multiply-accumulates for one 224 × 224 image (right) of every weight layer. "
        + ". ".join(facts)
        + ".",
    )
    fig6 = figure(
        6,
        "memory.png",
        f"Activation memory per layer of VGG {listing([n.name for n in nets])}",
        "Size of each layer's output for one 224 × 224 image in fp32 (4 bytes per value); ReLUs work in place "
        "and are not shown. " + ". ".join(mem_facts) + ". Training keeps these for the backward pass; multiply "
        "by the batch size.",
    )
    rows, head_facts = [], []
    for name, by_head in heads.items():
        for head, hnet in by_head.items():
            t = totals(hnet.rows)
            _, h = hnet.split_head()
            rows.append(
                [
                    name,
                    head,
                    f"{t['params']:,}",
                    f"{h['params']:,}",
                    percent(h["params"], t["params"]),
                    f"{t['macs']:,}",
                    f"{h['macs']:,}",
                ]
            )
        fc, gap = totals(by_head["fc"].rows), totals(by_head["gap"].rows)
        head_facts.append(
            f"VGG {name}: {fc['params']:,} parameters with the fc head, {gap['params']:,} with the gap head "
            f"({percent(fc['params'] - gap['params'], fc['params'])} fewer); MACs {fc['macs']:,} against "
            f"{gap['macs']:,}"
        )
    table = md_table(
        ["network", "head", "parameters", "in the head", "head share", "MACs", "MACs in the head"], rows, "ll"
    )
    first = next(iter(heads.values()))
    fc_layers = ", ".join(module_label(m) for m in first["fc"].model.classifier if isinstance(m, nn.Linear))
    kernels = listing(
        sorted(
            {
                f"{m.kernel_size[0]}×{m.kernel_size[0]}"
                for m in first["conv"].model.classifier
                if isinstance(m, nn.Conv2d)
            },
            reverse=True,
        )
    )
    fig7 = figure(
        7,
        "heads.png",
        "fc head against gap head: parameters and MACs",
        "Parameters (left) and MACs at 224 × 224 (right), split into the conv stack and the head. "
        + ". ".join(head_facts)
        + ".",
    )
    return "\n\n".join(
        [
            "The fully connected layers hold most of the weights; the convolutions at high resolution do most "
            "of the arithmetic.",
            fig5,
            fig6,
            f"Three heads on the same conv stack: `fc` ({fc_layers} in torchvision's layout), `conv` (the same "
            f"weights as {kernels} convolutions, section 3.2; the same cost at {INPUT} × {INPUT}) and `gap` (global "
            "average pooling and one linear layer). The head is everything after the last max-pool.",
            table,
            fig7,
        ]
    )


def table2_text(t2: list[Table2Row]) -> str:
    """Section 4: Table 2 with the paper's figures, and MACs."""
    rows = [
        [
            r.config,
            str(r.weight_layers),
            f"{r.params:,}",
            f"{r.params / 1e6:.1f}",
            str(r.paper_params_m),
            f"{r.gmacs:.3f}",
            f"{2 * r.gmacs:.3f}",
        ]
        for r in t2
    ]
    table = md_table(["config", "weight layers", "parameters", "millions", "paper (M)", "GMACs", "GFLOPs"], rows, "l")
    first, last = t2[0], t2[-1]
    fig8 = figure(
        8,
        "table2.png",
        "Parameters and MACs of every configuration",
        f"Left: parameters of each configuration (1000 classes) with the paper's Table 2 millions as black "
        f"marks; from {first.config} to {last.config} they grow from {first.params:,} to {last.params:,} "
        f"(+{100 * (last.params / first.params - 1):.1f}%). Right: multiply-accumulates for one {INPUT} × {INPUT} "
        f"image, {first.gmacs:.3f} G to {last.gmacs:.3f} G (×{last.gmacs / first.gmacs:.2f}): depth costs "
        f"compute, not parameters.",
    )
    return "\n\n".join(
        [
            "The paper's Table 2 gives parameters in millions; the measured counts round to them. The paper gives "
            "no compute figures; MACs count the multiply-accumulates of convolutions and fully connected layers "
            f"at {INPUT} × {INPUT} (FLOPs = 2 × MACs).",
            table,
            fig8,
        ]
    )


def appendix_text(net: Net) -> str:
    """Every layer's numbers behind the figures, for the chosen network."""
    name, rows = net.name, net.rows
    body = [
        [
            r.name,
            r.kind,
            "×".join(map(str, r.shape)),
            f"{r.params:,}",
            f"{r.macs:,}",
            "-" if r.rf is None else str(r.rf),
            "-" if r.jump is None else str(r.jump),
            kib(r.memory),
        ]
        for r in rows
    ]
    t = totals(rows)
    body.append(["total", "", "", f"{t['params']:,}", f"{t['macs']:,}", "", "", kib(t["memory"])])
    table = md_table(
        ["layer", "type", "output C×H×W", "parameters", "MACs", "receptive field (px)", "jump (px)", "memory (KiB)"],
        body,
        "lll",
    )
    return "\n\n".join(
        [
            f"One {INPUT} × {INPUT} image, fp32, 1000 classes (`vggnet summary {name}` prints the same table). "
            "The total memory counts every module's output, ReLUs and dropout included.",
            table,
        ]
    )
