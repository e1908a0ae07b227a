"""VGG explained in figures: Table 1 and a block diagram (SVG), receptive fields, parameters, compute.

`write_report(out_dir, lang=...)` writes README.md with its figures beside it, the prose in any language
of `vggnet.lang`; `report_text(Analysis.of(network), lang)` gives the Markdown alone. Every number is
computed from models built on the meta device through vggnet.analysis; none is typed in.

    layers  reading built models: Table 1 columns, units, blocks (no matplotlib)
    svg     the SVG writer, Table 1 and the block diagram
    plots   the matplotlib figures
    text    the Markdown prose, tables and captions
    style   colours, kind names and number formats the others share

Drawing needs matplotlib (`pip install 'vggnet[plots]'`); the package imports without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..analysis import KernelComparison, Table2Row, compare_kernels, table2
from ..configs import TABLE1, resolve
from ..io import needs, write_text
from ..lang import DEFAULT, Strings
from .layers import (
    CHANNELS,
    FEATURED,
    HEADS_COMPARED,
    INPUT,
    SHALLOW_PAIRS,
    STACK_DEPTHS,
    Column,
    Net,
    table1_columns,
)
from .svg import block_diagram_svg, table1_svg
from .text import report_markdown


def docs_folder(lang: str = DEFAULT) -> str:
    """Where the repository keeps the report in `lang`: docs/explain, docs/explain/zh, ..."""
    return "docs/explain" if lang == DEFAULT else f"docs/explain/{lang}"


@dataclass
class Analysis:
    """The networks and numbers the report shows, built on the meta device (no figures drawn)."""

    chosen: Net  # the network of the block diagram and the appendix
    nets: list[Net]  # the featured D and E, and the chosen one
    columns: list[Column]  # Table 1
    kernels: dict[int, dict[int, KernelComparison]]  # n stacked 3x3 -> channels -> comparison
    heads: dict[str, dict[str, Net]]  # network -> head -> net
    t2: list[Table2Row]
    shallow: list[tuple[Net, Net]]  # (B, B-5x5), (D, D-7x7)

    @classmethod
    def of(cls, network: str = "D") -> Analysis:
        """Analyse the featured networks and `network`."""
        chosen = Net.build(network)
        nets = [Net.build(n) for n in FEATURED if n != chosen.name] + [chosen]
        nets.sort(key=lambda n: (n.name not in FEATURED, n.name))
        return cls(
            chosen=chosen,
            nets=nets,
            columns=table1_columns(),
            kernels={n: {c: compare_kernels(n, c) for c in CHANNELS} for n in range(1, max(STACK_DEPTHS) + 2)},
            heads={net.name: {h: Net.build(net.name, h) for h in HEADS_COMPARED} for net in nets},
            t2=table2(input_size=INPUT, configs=TABLE1),
            shallow=[(Net.build(deep), Net.build(wide)) for deep, wide in SHALLOW_PAIRS],
        )

    @property
    def block_file(self) -> str:
        return f"block_{self.chosen.name}.svg"


def report_text(a: Analysis, lang: str = DEFAULT) -> str:
    """The report's Markdown in `lang`, naming the command that writes the repository's copy."""
    s = Strings(lang, "explain")
    folder = docs_folder(lang)  # the report names the command that writes the committed copy, and links from it
    command = "vggnet explain" + ("" if lang == DEFAULT else f" --lang {lang}") + f" --out {folder}"
    claims = "../" * len(Path(folder).parts) + "experiments/claims/RESULTS.md"
    return report_markdown(
        a.columns, a.chosen, a.block_file, a.nets, a.kernels, a.heads, a.t2, a.shallow, s, command, claims
    )


def write_report(out_dir: str | Path, network: str = "D", lang: str = DEFAULT) -> Path:
    """Write README.md and its figures to `out_dir`, in language `lang`; returns the Markdown path.

    Needs matplotlib (`pip install 'vggnet[plots]'`); without it, fails before anything is written.
    """
    s = Strings(lang, "figures")  # an unknown language fails first
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    resolve(network)  # an unknown name fails here, before anything is written
    needs("matplotlib", "plots", "the explain report")
    from . import plots

    a = Analysis.of(network)
    text = report_text(a, lang)
    with plots.drawing_fonts(s):  # a missing CJK font fails here, before anything is written
        write_text(out / "table1.svg", table1_svg(a.columns, s=s))
        write_text(out / a.block_file, block_diagram_svg(a.chosen.model, a.chosen.rows, s=s))
        plots.plot_receptive_fields(a.nets, out / "receptive_field.png", s)
        plots.plot_small_kernels(a.kernels, out / "small_kernels.png", s)
        plots.plot_params_macs(a.nets, out / "params_macs.png", s)
        plots.plot_memory(a.nets, out / "memory.png", s)
        plots.plot_heads(a.heads, out / "heads.png", s)
        plots.plot_table2(a.t2, out / "table2.png", s)
    return write_text(out / "README.md", text)


def report_figures(markdown: Path) -> list[str]:
    """The image files a report links, in order of appearance."""
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown.read_text(encoding="utf-8"))
