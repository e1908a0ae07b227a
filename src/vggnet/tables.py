"""Tables and numbers as people read them: Markdown tables, bytes, counts."""

from __future__ import annotations

import math
from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A Markdown table; `align` holds one of l, r, c per column (default: left); a None cell is left blank."""
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    rule = [marks[a] for a in align] if align else ["---"] * len(header)
    lines = [_row(header), "|" + "|".join(rule) + "|"]
    lines += [_row(row) for row in rows]
    return "\n".join(lines)


def per_class_table(class_names: Sequence[str], accuracy: Sequence[float | None]) -> str:
    """Class and top-1 accuracy (%), "-" for a class without images."""
    rows = [[n, f"{a:.1f}" if a is not None else "-"] for n, a in zip(class_names, accuracy, strict=True)]
    return markdown_table(["class", "top-1 accuracy (%)"], rows)


def _row(cells: Sequence[object]) -> str:
    """`| a | b |`; None gives a blank cell `| |` (an empty string keeps its padding: `|  |`)."""
    return "|" + "|".join(" " if v is None else f" {cell_text(v)} " for v in cells) + "|"


# What would end a cell or a row in a cell's text (a class folder may be named `a|b`). Inline HTML stays:
# cells may mean it (`<br>`), and renderers that show reports sanitise it.
_CELL_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "\n": " ", "\r": " "})


def cell_text(value: object) -> str:
    """`value` as one Markdown table cell shows it: pipes and backslashes escaped, line breaks as spaces."""
    return str(value).translate(_CELL_ESCAPES)


def human_bytes(n: int) -> str:
    """Bytes as KiB/MiB with one decimal."""
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / (1 << 10):.1f} KiB"


def short(n: float) -> str:
    """1.85 G, 102.8 M, 36.9 K: three significant figures for figures that are read, not parsed."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.{max(0, 2 - int(math.log10(abs(v))))}f} {unit}"
    return f"{n:g}"
