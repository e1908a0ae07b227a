"""The report's matplotlib figures: receptive fields, small kernels, parameters and MACs, memory, heads, Table 2.

Figures are drawn by Agg without pyplot (no global state, no display) and saved without a Software stamp,
so a regenerated PNG differs only when its content does. Their words come from `vggnet.lang` (section
"figures"); `drawing_fonts` puts a language's own fonts after DejaVu Sans for the glyphs it lacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..analysis import KernelComparison, Table2Row, totals
from ..io import atomic_write
from ..lang import DEFAULT, Strings
from ..tables import human_bytes, short
from .layers import CHANNELS, INPUT, Net
from .style import PALETTE, installed_fonts, kind_names, mib, percent

EN = Strings(DEFAULT, "figures")


@contextmanager
def drawing_fonts(s: Strings) -> Iterator[None]:
    """Draw with DejaVu Sans, then the language's font for the glyphs it lacks (a one-line error if none is installed)."""
    import matplotlib

    with matplotlib.rc_context({"font.family": ["DejaVu Sans", *installed_fonts(s)]}):
        yield


def new_figure(w: float, h: float) -> Figure:
    """A matplotlib figure drawn by Agg without pyplot (no global state, no display)."""
    fig = Figure(figsize=(w, h), layout="constrained")
    fig.set_dpi(150)
    return fig


def save(fig: Figure, path: Path) -> None:
    """PNG at 150 dpi without a Software stamp, so regenerated figures differ only when the content does."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150, metadata={"Software": None}))


def plot_receptive_fields(nets: list[Net], path: Path, s: Strings = EN) -> None:
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
                ax.text(i, 0.96, s("rf_jump", jump=r.jump), transform=ax.get_xaxis_transform(), ha="center", va="top",
                        fontsize=8, color=PALETTE["pool"][1], bbox={"fc": "white", "ec": "none", "pad": 1})  # fmt: skip
        ax.axhline(INPUT, ls="--", lw=1, color="#888")
        ax.text(len(pts) * 0.3, INPUT + 4, s("rf_input", input=INPUT), fontsize=9, color="#555", va="bottom")
        ax.set_xticks(list(xs), [r.name for r in pts], rotation=90, fontsize=9)
        ax.set_ylabel(s("receptive_field_px"))
        ax.set_ylim(0, max(pts[-1].rf, INPUT) * 1.3)
        ax.set_xlim(-0.6, len(pts) + 0.3)
        ax.set_title(s("rf_title", name=net.name), fontsize=10.5)
        ax.grid(axis="y", alpha=0.3)
    legend_for(fig, ("conv", "conv1x1", "lrn", "pool"), nets, s, "marker")
    save(fig, path)


def plot_small_kernels(table: dict[int, dict[int, KernelComparison]], path: Path, s: Strings = EN) -> None:
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
    ax1.plot(rfs, stacked, "o-", color=blue, label=s("sk_stacked_line"))
    ax1.plot(rfs, single, "s-", color=orange, label=s("sk_single_line"))
    for rf, a, b in zip(rfs, stacked, single, strict=True):
        ax1.annotate(
            f"{a:.0f}", (rf, a), xytext=(0, -13), textcoords="offset points", ha="center", fontsize=9, color=blue
        )
        ax1.annotate(
            f"{b:.0f}", (rf, b), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=9, color=orange
        )
    ax1.set_xticks(rfs, [f"{r}×{r}\nn={n}" for r, n in zip(rfs, ns, strict=True)])
    ax1.set_xlabel(s("receptive_field_px"))
    ax1.set_ylabel(s("sk_weights_per_c2"))
    ax1.set_ylim(0, max(single) * 1.15)
    ax1.set_title(s("sk_title_weights"), fontsize=10.5)
    ax1.legend(fontsize=9, frameon=False, loc="upper left")
    ax1.grid(alpha=0.3)

    x = range(len(ns))
    bw = 0.38
    ax2.bar([i - bw / 2 for i in x], [table[n][c0].stacked_relus for n in ns], bw, color=blue, label=s("sk_stacked"))
    ax2.bar([i + bw / 2 for i in x], [table[n][c0].single_relus for n in ns], bw, color=orange, label=s("sk_one_large"))
    ax2.set_xticks(list(x), [f"{r}×{r}" for r in rfs])
    ax2.set_xlabel(s("receptive_field_px"))
    ax2.set_ylabel(s("sk_relus"))
    ax2.set_yticks(range(0, max(ns) + 1))
    ax2.set_title(s("sk_title_relus"), fontsize=10.5)
    ax2.legend(fontsize=9, frameon=False, loc="upper left")
    ax2.grid(axis="y", alpha=0.3)

    n7 = 3 if 3 in table else ns[len(ns) // 2]
    rows = [table[n7][c] for c in CHANNELS]
    x = range(len(CHANNELS))
    s_m = [r.stacked_weights / 1e6 for r in rows]
    l_m = [r.single_weights / 1e6 for r in rows]
    ax3.bar([i - bw / 2 for i in x], s_m, bw, color=blue, label=s("sk_n_stacked", n=n7))
    ax3.bar([i + bw / 2 for i in x], l_m, bw, color=orange, label=s("sk_one", k=rows[0].rf))
    for i, (a, b) in enumerate(zip(s_m, l_m, strict=True)):
        ax3.text(i - bw / 2, a, f"{a:.2f}", ha="center", va="bottom", fontsize=8)
        ax3.text(i + bw / 2, b, f"{b:.2f}", ha="center", va="bottom", fontsize=8)
    ax3.set_xticks(list(x), [f"C={c}" for c in CHANNELS])
    ax3.set_ylabel(s("sk_weights_millions"))
    ax3.set_ylim(0, max(l_m) * 1.12)
    ax3.set_title(s("sk_title_field", k=rows[0].rf), fontsize=10.5)
    ax3.legend(fontsize=9, frameon=False, loc="upper left")
    ax3.grid(axis="y", alpha=0.3)
    save(fig, path)


def plot_params_macs(nets: list[Net], path: Path, s: Strings = EN) -> None:
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
        biggest = s("pm_biggest", name=big.name, m=f"{big.params / 1e6:.1f}", share=percent(big.params, t["params"]),
                    total=f"{t['params'] / 1e6:.1f}")  # fmt: skip
        convs = s("pm_convs", m=f"{conv_p / 1e6:.1f}", share=percent(conv_p, t["params"]))
        ax_p.text(0.02, 0.95, f"{biggest}\n{convs}", transform=ax_p.transAxes, ha="left", va="top", fontsize=9,
                  fontweight="bold")  # fmt: skip
        ax_p.set_ylim(0, big.params / 1e6 * 1.3)
        conv = sum(r.macs for r in layers if net.kind(r) != "fc")
        ax_m.text(0.02, 0.95, s("pm_convs_macs", share=percent(conv, t["macs"]), g=f"{t['macs'] / 1e9:.2f}"),
                  transform=ax_m.transAxes, ha="left", va="top", fontsize=9, fontweight="bold")  # fmt: skip
        for ax, ylabel, title in (
            (ax_p, s("params_millions"), s("pm_title_params")),
            (ax_m, s("macs_g_long"), s("pm_title_macs", input=INPUT)),
        ):
            ax.set_xticks(list(xs), names, rotation=90, fontsize=8.5)
            ax.set_ylabel(ylabel)
            ax.set_title(s("net_title", name=net.name, what=title), fontsize=10.5)
            ax.grid(axis="y", alpha=0.3)
            ax.set_xlim(-0.6, len(layers) - 0.4)
        ax_m.set_ylim(0, max(r.macs for r in layers) / 1e9 * 1.25)
    legend_for(fig, ("conv", "conv1x1", "fc"), nets, s)
    save(fig, path)


def plot_memory(nets: list[Net], path: Path, s: Strings = EN) -> None:
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
        ax.text(0.98, 0.93, s("mem_sum", mib=mib(total)), transform=ax.transAxes, ha="right",
                va="top", fontsize=9, fontweight="bold")  # fmt: skip
        ax.set_xticks(list(xs), [r.name for r in layers], rotation=90, fontsize=9)
        ax.set_ylabel(s("mem_ylabel"))
        ax.set_title(s("mem_title", name=net.name, input=INPUT), fontsize=10.5)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, len(layers) - 0.4)
    legend_for(fig, ("conv", "conv1x1", "lrn", "pool", "fc"), nets, s)
    save(fig, path)


def plot_heads(heads: dict[str, dict[str, Net]], path: Path, s: Strings = EN) -> None:
    """Feature-stack vs head share of parameters and MACs, fc head against gap head."""
    fig = new_figure(10, 4.0)
    ax_p, ax_m = fig.subplots(1, 2)
    bars = [(net, head) for net in heads for head in ("fc", "gap")]
    labels = [s("heads_bar", net=net, head=head) for net, head in bars]
    for ax, key, scale, unit in ((ax_p, "params", 1e6, s("params_millions")), (ax_m, "macs", 1e9, s("macs_g"))):
        feat = [heads[n][h].split_head()[0][key] / scale for n, h in bars]
        head = [heads[n][h].split_head()[1][key] / scale for n, h in bars]
        ax.bar(range(len(bars)), feat, color=PALETTE["conv"][1])
        ax.bar(range(len(bars)), head, bottom=feat, color=PALETTE["fc"][1])
        for i, (a, b) in enumerate(zip(feat, head, strict=True)):
            ax.text(
                i,
                a + b,
                f"{short((a + b) * scale)}\n" + s("heads_part", n=short(b * scale)),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(range(len(bars)), labels, fontsize=9)
        ax.set_ylabel(unit)
        ax.set_ylim(0, max(a + b for a, b in zip(feat, head, strict=True)) * 1.25)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(handles=[Patch(color=PALETTE["conv"][1], label=s("conv_stack")), Patch(color=PALETTE["fc"][1], label=s("head"))],
               loc="outside lower center", ncols=2, fontsize=9, frameon=False)  # fmt: skip
    ax_p.set_title(s("heads_title_params"), fontsize=10.5)
    ax_m.set_title(s("heads_title_macs", input=INPUT), fontsize=10.5)
    save(fig, path)


def plot_table2(rows: list[Table2Row], path: Path, s: Strings = EN) -> None:
    """Parameters (with the paper's Table 2) and MACs for every configuration."""
    fig = new_figure(10, 3.8)
    ax_p, ax_m = fig.subplots(1, 2)
    xs = range(len(rows))
    names = [r.config for r in rows]
    ax_p.bar(xs, [r.params / 1e6 for r in rows], color=PALETTE["conv"][1], label=s("t2_measured"))
    ax_p.scatter(xs, [r.paper_params_m for r in rows], color="black", marker="_", s=400, zorder=3,
                 label=s("t2_paper"))  # fmt: skip
    for i, r in enumerate(rows):
        ax_p.text(i, r.params / 1e6 - 6, f"{r.params / 1e6:.1f}", ha="center", va="top", fontsize=9, color="white")
    ax_p.set_ylabel(s("params_millions"))
    ax_p.set_ylim(0, max(r.params for r in rows) / 1e6 * 1.2)
    ax_p.legend(fontsize=9, loc="upper left", frameon=False, ncols=2)
    ax_m.bar(xs, [r.gmacs for r in rows], color=PALETTE["pool"][1])
    for i, r in enumerate(rows):
        ax_m.text(i, r.gmacs, f"{r.gmacs:.2f}", ha="center", va="bottom", fontsize=9)
    ax_m.set_ylabel(s("macs_at", input=INPUT))
    ax_m.set_ylim(0, max(r.gmacs for r in rows) * 1.12)
    first, last = rows[0], rows[-1]
    ratio = f"{last.gmacs / first.gmacs:.2f}"
    ax_m.set_title(s("t2_title_macs", ratio=ratio, first=first.config, last=last.config), fontsize=10.5)
    pct = f"{100 * (last.params / first.params - 1):.0f}"
    ax_p.set_title(s("t2_title_params", pct=pct, first=first.config, last=last.config), fontsize=11)
    for ax in (ax_p, ax_m):
        ax.set_xticks(list(xs), names)
        ax.set_xlabel(s("configuration"))
        ax.grid(axis="y", alpha=0.3)
    save(fig, path)


def legend_for(fig: Figure, kinds: tuple[str, ...], nets: list[Net], s: Strings, style: str = "patch") -> None:
    """One legend for the whole figure, listing only the kinds drawn."""
    present = {net.kind(r) for net in nets for r in net.rows}
    names = kind_names(s)
    if style == "marker":
        handles = [
            Line2D([], [], ls="", marker="s" if k == "pool" else "o", color=PALETTE[k][1], label=names[k])
            for k in kinds
            if k in present
        ]
    else:
        handles = [Patch(color=PALETTE[k][1], label=names[k]) for k in kinds if k in present]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
