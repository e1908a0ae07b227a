"""The report's two SVG figures, Table 1 and a block diagram, written as plain text by a small SVG writer.

Text widths come from matplotlib's copy of DejaVu Sans (and, for Chinese, the CJK font the language names),
so boxes fit their labels in every viewer. The words come from `vggnet.lang` (section "figures").
"""

from __future__ import annotations

import math
from functools import lru_cache
from xml.sax.saxutils import escape, quoteattr

from ..analysis import LayerInfo, totals
from ..configs import resolve, weight_layers
from ..lang import DEFAULT, Strings
from ..model import VGG
from ..tables import human_bytes, short
from .layers import INPUT, Column, Unit, layer_groups
from .style import FONT, PALETTE, figure_fonts, installed_fonts, kind_names, shape_text


@lru_cache(maxsize=4096)
def text_width(text: str, size: float, bold: bool = False, fonts: tuple[str, ...] = ()) -> float:
    """Width in px of `text` in DejaVu Sans (then `fonts` for glyphs it lacks), wider than the fallbacks."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    prop = FontProperties(family=["DejaVu Sans", *fonts], weight="bold" if bold else "normal")
    return TextPath((0, 0), text, size=size, prop=prop).get_extents().width


class Svg:
    """Plain SVG text, every string escaped. `fonts` come after DejaVu Sans for the glyphs it lacks (CJK) in the
    file's font-family; widths are measured with `measured`, the one of them installed here."""

    def __init__(self, fonts: tuple[str, ...] = (), measured: tuple[str, ...] = ()) -> None:
        self.items: list[str] = []
        self.fonts, self.measured = fonts, measured

    def width(self, text: str, size: float, bold: bool = False) -> float:
        """`text_width` in this picture's fonts."""
        return text_width(text, size, bold, self.measured)

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

    def font_family(self) -> str:
        """DejaVu Sans first, as measured, then the language's fonts, then the usual fallbacks."""
        first, rest = FONT.split(", ", 1)
        return ", ".join([first, *(f"'{f}'" for f in self.fonts), rest])

    def render(self, width: float, height: float, title: str) -> str:
        head = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family={quoteattr(self.font_family())}>\n'
            f"<title>{escape(title)}</title>\n"
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>\n'
            f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>\n'
        )
        return head + "\n".join(self.items) + "\n</svg>\n"


def table1_svg(columns: list[Column], input_size: int = INPUT, s: Strings | None = None) -> str:
    """The six configurations side by side in the layout of the paper's Table 1."""
    s = s or Strings(DEFAULT, "figures")
    svg, left, line_h = Svg(figure_fonts(s), installed_fonts(s)), 20.0, 20.0
    widest = max(svg.width(label, 13, True) for c in columns for b in c.blocks for label in b)
    col_w = max(widest + 28, max(svg.width(s("weight_layers", n=c.weight_layers), 12) + 20 for c in columns))
    width = 2 * left + col_w * len(columns)
    right = width - left
    y = 20.0
    svg.text(
        width / 2,
        y + 14,
        s("t1_title"),
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
        svg.text(cx, y + 39, s("weight_layers", n=c.weight_layers), 12, "middle", fill="#555")
    dividers(y, y + 48)
    y += 48
    svg.line(left, y, right, y, "#333")
    spanning(s("t1_input", input=input_size), "io")
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
    svg.text(left, y, s("t1_bold"), 12, fill="#333")
    svg.text(left, y + 17, s("t1_notation"), 12, fill="#333")
    svg.text(left, y + 34, s("t1_relu"), 12, fill="#333")
    return svg.render(width, y + 48, s("t1_svg_title"))


def block_diagram_svg(model: VGG, rows: list[LayerInfo], input_size: int = INPUT, s: Strings | None = None) -> str:
    """One network top to bottom: blocks of layers, tensor shapes between blocks, params and MACs per layer."""
    s = s or Strings(DEFAULT, "figures")
    groups = layer_groups(model, rows)
    name, svg = model.cfg.display_name(), Svg(figure_fonts(s), installed_fonts(s))
    margin, row_h, head_h, arrow_h = 16.0, 30.0, 26.0, 40.0
    pill_w = {id(u): pill_width(svg, u) for g in groups for u in g.units}
    widest = max(pill_w.values())
    cx = margin + 20 + widest / 2  # centre line of the layer pills
    params_x = cx + widest / 2 + 110  # right edges of the two number columns
    macs_x = params_x + 100
    t = totals(rows)
    title = s("bd_title", name=name, layers=weight_layers(resolve(model.cfg.arch)[0]), input=input_size)
    total = s("bd_total", params=f"{t['params']:,}", macs=f"{t['macs']:,}", gmacs=f"{t['macs'] / 1e9:.3f}")
    width = max(macs_x + 14, svg.width(title, 15, True) + 8, svg.width(total, 12, True) + 8) + margin
    y = 28.0
    svg.text(margin, y, title, 15, bold=True)
    svg.text(margin, y + 19, s("bd_between"), 12, fill="#555")
    svg.text(margin, y + 35, s("bd_per_layer"), 12, fill="#555")
    y += 60
    svg.text(params_x, y, s("bd_params"), 12, "end", True, "#333")
    svg.text(macs_x, y, "MACs", 12, "end", True, "#333")
    y += 10
    pill(svg, cx, y, 200, s("bd_input"), "io")
    y += 24
    shape = (model.cfg.in_channels, input_size, input_size)
    for g in groups:
        arrow(svg, cx, y, arrow_h, shape)
        y += arrow_h
        h = head_h + row_h * len(g.units) + 6
        svg.rect(margin, y, width - 2 * margin, h, "#fafafa", "#bbb", rx=6)
        svg.text(margin + 10, y + 18, s("bd_block", n=g.block) if g.block else s("bd_classifier"), 13, bold=True)
        svg.text(params_x, y + 18, short(g.params), 12, "end", True)
        svg.text(macs_x, y + 18, short(g.macs), 12, "end", True)
        for i, u in enumerate(g.units):
            ry = y + head_h + i * row_h
            pill(svg, cx, ry + 3, pill_w[id(u)], u.text, u.kind)
            svg.text(params_x, ry + 19, short(u.params) if u.params else "0", 12, "end", fill="#333")
            svg.text(macs_x, ry + 19, short(u.macs) if u.macs else "0", 12, "end", fill="#333")
        y += h
        shape = g.shape
    arrow(svg, cx, y, arrow_h, shape, s("bd_scores"))
    y += arrow_h
    pill(svg, cx, y, 200, "soft-max", "io")
    y += 50
    svg.text(margin, y, total, 12, bold=True)
    y += 22
    x = margin
    names = kind_names(s)
    kinds = [k for k in names if any(u.kind == k for g in groups for u in g.units)]
    for k in kinds:
        svg.rect(x, y - 11, 14, 14, PALETTE[k][0], PALETTE[k][1], rx=3)
        svg.text(x + 19, y, names[k], 12, fill="#333")
        x += 19 + svg.width(names[k], 12) + 18
    return svg.render(width, y + 16, s("bd_svg_title", name=name))


def pill_width(svg: Svg, u: Unit) -> float:
    """Wider for more channels (log scale), never narrower than its text."""
    return max(svg.width(u.text, 12) + 24, 120 + 20 * math.log2(max(u.channels, 64) / 64))


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
    svg.text(cx + 20 + svg.width(label, 12, True), y + h / 2 + 4, f"({size})", 12, fill="#666")
