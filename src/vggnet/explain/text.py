"""The report's prose: each section's paragraphs, tables and figure captions, every number computed.

Each builder takes the analysed networks and the strings of the report's language (`vggnet.lang`, section
"explain") and returns Markdown; nothing here draws. The numbers are formatted here, alike in every language.
"""

from __future__ import annotations

from torch import nn

from ..analysis import KernelComparison, Table2Row, totals
from ..lang import DEFAULT, Strings
from ..tables import human_bytes, markdown_table
from .layers import CHANNELS, INPUT, STACK_DEPTHS, Column, Net, layer_groups, module_label
from .style import kib, mib, percent, shape_text


def listing(items: list[str], s: Strings) -> str:
    """a, b and c (in the strings' language)."""
    if len(items) == 1:
        return items[0]
    return s("list_last", rest=s.table["list_sep"].join(items[:-1]), last=items[-1])


def facts_text(facts: list[str], s: Strings) -> str:
    """Sentences about each network, joined and ended as the language does."""
    return s.table["facts_sep"].join(facts) + s.table["facts_end"]


def figure(n: int, file: str, alt: str, caption: str, s: Strings) -> str:
    """An image with its numbered caption below."""
    return f"![{alt}]({file})\n\n" + s("figure", n=n, caption=caption)


def report_markdown(
    columns: list[Column],
    chosen: Net,
    block_file: str,
    nets: list[Net],
    kernels: dict[int, dict[int, KernelComparison]],
    heads: dict[str, dict[str, Net]],
    t2: list[Table2Row],
    shallow: list[tuple[Net, Net]],
    s: Strings | None = None,
    command: str = "vggnet explain --out docs/explain",
    claims: str = "../../experiments/claims/RESULTS.md",
) -> str:
    """The whole README.md: title, the four sections and the appendix for the chosen network.

    `command` is the one that wrote it; `claims` the link from it to experiments/claims/RESULTS.md.
    """
    s = s or Strings(DEFAULT, "explain")
    parts = [
        "# " + s("title"),
        s("intro", command=command),
        "## " + s("h_architecture"),
        architecture_text(columns, chosen, block_file, s),
        "## " + s("h_receptive"),
        receptive_text(nets, kernels, s),
        shallow_text(shallow, s, claims),
        "## " + s("h_cost"),
        cost_text(nets, heads, s),
        "## " + s("h_table2"),
        table2_text(t2, s),
        "## " + s("h_appendix", name=chosen.name),
        appendix_text(chosen, s),
    ]
    return "\n\n".join(parts) + "\n"


def architecture_text(columns: list[Column], net: Net, block_file: str, s: Strings) -> str:
    """Section 1: Table 1 and the block diagram with their captions."""
    depths = s.table["list_sep"].join(f"{c.name} {c.weight_layers}" for c in columns)
    ones = [
        (c.name, b + 1) for c in columns for b, block in enumerate(c.blocks) for x in block if x.startswith("conv1-")
    ]
    kernels = (
        s(
            "all_3x3_except",
            configs=listing(sorted({c for c, _ in ones}), s),
            blocks=listing([str(b) for _, b in ones], s),
        )
        if ones
        else s("all_3x3")
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
        s("fig1_alt"),
        s("fig1", depths=depths, kernels=kernels, pools=pools, head=s.table["list_sep"].join(columns[0].head)),
        s,
    )
    fig2 = figure(
        2,
        block_file,
        s("fig2_alt", name=name),
        s("fig2", name=name, flow=flow, params=f"{t['params']:,}", macs=f"{t['macs']:,}", input=INPUT),
        s,
    )
    text = s(
        "architecture",
        stacks=len(groups) - 1,
        pools=pools,
        input=INPUT,
        last=last.shape[1],
        first_channels=convs[0].shape[0],
        last_channels=last.shape[0],
        fcs=len(columns[0].head),
    )
    return "\n\n".join([text, fig1, fig2])


def receptive_text(nets: list[Net], kernels: dict[int, dict[int, KernelComparison]], s: Strings) -> str:
    """Section 2: receptive-field growth and the small-kernel argument."""
    facts = []
    for net in nets:
        pts = net.feature_rows()
        first = next((r for r in pts if r.rf > INPUT), None)
        beyond = s("receptive_beyond", input=INPUT, layer=first.name, rf=first.rf) if first else ""
        facts.append(
            s(
                "receptive_fact",
                name=net.name,
                layer0=pts[0].name,
                rf0=pts[0].rf,
                layer1=pts[1].name,
                rf1=pts[1].rf,
                last=pts[-1].name,
                rf_last=pts[-1].rf,
                jump=pts[-1].jump,
                beyond=beyond,
            )
        )
    names = listing([n.name for n in nets], s)
    fig3 = figure(3, "receptive_field.png", s("fig3_alt", names=names), s("fig3", facts=facts_text(facts, s)), s)
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
                    s("vs", a=k.stacked_relus, b=k.single_relus),
                ]
            )
    columns = ["n", "c", "receptive_field", "stacked_weights", "single_weights", "ratio", "relus"]
    table = markdown_table([s("col_" + c) for c in columns], rows, "rrrrrrr")
    k3 = kernels[3][CHANNELS[-1]]
    k2 = kernels[2][CHANNELS[-1]]
    c = k3.channels
    caption = s(
        "fig4",
        stacked2=k2.stacked_weights // c**2,
        single2=k2.single_weights // c**2,
        stacked3=k3.stacked_weights // c**2,
        single3=k3.single_weights // c**2,
        rf=k3.rf,
        c=c,
        stacked=f"{k3.stacked_weights:,}",
        single=f"{k3.single_weights:,}",
        fewer=percent(k3.single_weights - k3.stacked_weights, k3.single_weights),
    )
    fig4 = figure(4, "small_kernels.png", s("fig4_alt"), caption, s)
    return "\n\n".join([s("receptive_intro"), fig3, s("small_kernels"), table, fig4])


def shallow_text(pairs: list[tuple[Net, Net]], s: Strings, claims: str) -> str:
    """Section 4.1's test of the argument: B against B-5x5 (and D against D-7x7), same pools, same fields."""
    rows = []
    for deep, shallow in pairs:
        for net in (deep, shallow):
            convs = [r for r in net.weight_rows() if r.name.startswith("conv")]
            conv = net.split_head()[0]
            pool5 = next(r for r in net.rows if r.name == "pool5")
            sizes = sorted({m.kernel_size[0] for m in net.model.features if isinstance(m, nn.Conv2d)})
            rows.append(
                [
                    net.name,
                    str(len(convs)),
                    ", ".join(f"{k}×{k}" for k in sizes),
                    f"{conv['params']:,}",
                    f"{conv['macs'] / 1e9:.3f}",
                    f"{pool5.rf}",
                ]
            )
    columns = ["configuration", "conv_layers", "kernel_sizes", "conv_params", "conv_gmacs", "pool5_field"]
    table = markdown_table([s("col_" + c) for c in columns], rows, "lrlrrr")
    return "\n\n".join([s("shallow", claims=claims), table])


def cost_text(nets: list[Net], heads: dict[str, dict[str, Net]], s: Strings) -> str:
    """Section 3: parameters and MACs per layer, activation memory, fc vs gap head."""
    facts, mem_facts = [], []
    for net in nets:
        name, t, layers = net.name, totals(net.rows), net.weight_rows()
        big = max(layers, key=lambda r: r.params)
        conv_macs = sum(r.macs for r in layers if net.kind(r) != "fc")
        conv_params = sum(r.params for r in layers if net.kind(r) != "fc")
        fc_params = sum(r.params for r in layers if net.kind(r) == "fc")
        facts.append(
            s(
                "cost_fact",
                name=name,
                big=big.name,
                big_params=f"{big.params:,}",
                params=f"{t['params']:,}",
                big_share=percent(big.params, t["params"]),
                fcs=sum(net.kind(r) == "fc" for r in layers),
                fc_share=percent(fc_params, t["params"]),
                conv_share=percent(conv_params, t["params"]),
                conv_macs=f"{conv_macs:,}",
                macs=f"{t['macs']:,}",
                conv_macs_share=percent(conv_macs, t["macs"]),
            )
        )
        mem = net.memory_rows()
        top = max(mem, key=lambda r: r.memory)
        pool = net.feature_rows()[-1]
        mem_facts.append(
            s(
                "memory_fact",
                name=name,
                mib=mib(top.memory),
                layer=top.name,
                shape=shape_text(top.shape),
                pool_memory=human_bytes(pool.memory),
                pool=pool.name,
                sum=mib(sum(r.memory for r in mem)),
            )
        )
    names = listing([n.name for n in nets], s)
    fig5 = figure(5, "params_macs.png", s("fig5_alt", names=names), s("fig5", facts=facts_text(facts, s)), s)
    fig6 = figure(6, "memory.png", s("fig6_alt", names=names), s("fig6", facts=facts_text(mem_facts, s)), s)
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
            s(
                "head_fact",
                name=name,
                fc=f"{fc['params']:,}",
                gap=f"{gap['params']:,}",
                fewer=percent(fc["params"] - gap["params"], fc["params"]),
                fc_macs=f"{fc['macs']:,}",
                gap_macs=f"{gap['macs']:,}",
            )
        )
    columns = ["network", "head", "parameters", "head_params", "head_share", "macs", "head_macs"]
    table = markdown_table([s("col_" + c) for c in columns], rows, "llrrrrr")
    first = next(iter(heads.values()))
    fc_layers = ", ".join(module_label(m) for m in first["fc"].model.classifier if isinstance(m, nn.Linear))
    sizes = {
        f"{m.kernel_size[0]}×{m.kernel_size[0]}" for m in first["conv"].model.classifier if isinstance(m, nn.Conv2d)
    }
    kernels = listing(sorted(sizes, reverse=True), s)
    fig7 = figure(7, "heads.png", s("fig7_alt"), s("fig7", facts=facts_text(head_facts, s)), s)
    intro = s("heads", fc_layers=fc_layers, kernels=kernels, input=INPUT)
    return "\n\n".join([s("cost_intro"), fig5, fig6, intro, table, fig7])


def table2_text(t2: list[Table2Row], s: Strings) -> str:
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
    columns = ["config", "weight_layers", "parameters", "millions", "paper_millions", "gmacs", "gflops"]
    table = markdown_table([s("col_" + c) for c in columns], rows, "lrrrrrr")
    first, last = t2[0], t2[-1]
    caption = s(
        "fig8",
        first=first.config,
        last=last.config,
        first_params=f"{first.params:,}",
        last_params=f"{last.params:,}",
        growth=f"{100 * (last.params / first.params - 1):.1f}",
        input=INPUT,
        first_gmacs=f"{first.gmacs:.3f}",
        last_gmacs=f"{last.gmacs:.3f}",
        ratio=f"{last.gmacs / first.gmacs:.2f}",
    )
    fig8 = figure(8, "table2.png", s("fig8_alt"), caption, s)
    return "\n\n".join([s("table2", input=INPUT), table, fig8])


def appendix_text(net: Net, s: Strings) -> str:
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
    body.append([s("total"), "", "", f"{t['params']:,}", f"{t['macs']:,}", "", "", kib(t["memory"])])
    columns = ["layer", "type", "output", "parameters", "macs", "rf_px", "jump_px", "memory_kib"]
    table = markdown_table([s("col_" + c) for c in columns], body, "lllrrrrr")
    return "\n\n".join([s("appendix", input=INPUT, name=name), table])
