"""VGG explained in figures: Table 1 and a block diagram (SVG), receptive fields, parameters, compute.

`write_report(out_dir)` writes README.md with its figures beside it. Every number is computed
from models built on the meta device through vggnet.analysis; none is typed in.

    layers  reading built models: Table 1 columns, units, blocks (no matplotlib)
    svg     the SVG writer, Table 1 and the block diagram
    plots   the matplotlib figures
    text    the Markdown prose, tables and captions
    style   colours, kind names and number formats the others share

Drawing needs matplotlib (`pip install 'vggnet[plots]'`); the package imports without it.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..analysis import compare_kernels, table2
from ..configs import TABLE1, resolve
from ..io import needs, write_text
from ..lang import DEFAULT, Strings
from .layers import CHANNELS, FEATURED, HEADS_COMPARED, INPUT, SHALLOW_PAIRS, STACK_DEPTHS, Net, table1_columns
from .svg import block_diagram_svg, table1_svg
from .text import report_markdown


def docs_folder(lang: str = DEFAULT) -> str:
    """Where the repository keeps the report in `lang`: docs/explain, docs/explain/zh, ..."""
    return "docs/explain" if lang == DEFAULT else f"docs/explain/{lang}"


def write_report(out_dir: str | Path, network: str = "D", lang: str = DEFAULT) -> Path:
    """Write README.md and its figures to `out_dir`, in language `lang`; returns the Markdown path.

    Needs matplotlib (`pip install 'vggnet[plots]'`); without it, fails before anything is written.
    """
    s = Strings(lang, "explain")  # an unknown language fails first
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    resolve(network)  # an unknown name fails here, before anything is written
    needs("matplotlib", "plots", "the explain report")
    from . import plots

    chosen = Net.build(network)
    nets = [Net.build(n) for n in FEATURED if n != chosen.name] + [chosen]
    nets.sort(key=lambda n: (n.name not in FEATURED, n.name))
    columns = table1_columns()
    kernels = {n: {c: compare_kernels(n, c) for c in CHANNELS} for n in range(1, max(STACK_DEPTHS) + 2)}
    heads = {net.name: {h: Net.build(net.name, h) for h in HEADS_COMPARED} for net in nets}
    t2 = table2(input_size=INPUT, configs=TABLE1)
    shallow = [(Net.build(deep), Net.build(wide)) for deep, wide in SHALLOW_PAIRS]

    block_file = f"block_{chosen.name}.svg"
    write_text(out / "table1.svg", table1_svg(columns))
    write_text(out / block_file, block_diagram_svg(chosen.model, chosen.rows))
    plots.plot_receptive_fields(nets, out / "receptive_field.png")
    plots.plot_small_kernels(kernels, out / "small_kernels.png")
    plots.plot_params_macs(nets, out / "params_macs.png")
    plots.plot_memory(nets, out / "memory.png")
    plots.plot_heads(heads, out / "heads.png")
    plots.plot_table2(t2, out / "table2.png")
    folder = docs_folder(lang)  # the report names the command that writes the committed copy, and links from it
    command = "vggnet explain" + ("" if lang == DEFAULT else f" --lang {lang}") + f" --out {folder}"
    claims = "../" * len(Path(folder).parts) + "experiments/claims/RESULTS.md"
    text = report_markdown(columns, chosen, block_file, nets, kernels, heads, t2, shallow, s, command, claims)
    return write_text(out / "README.md", text)


def report_figures(markdown: Path) -> list[str]:
    """The image files a report links, in order of appearance."""
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown.read_text(encoding="utf-8"))
