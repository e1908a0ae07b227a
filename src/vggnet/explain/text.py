"""The report's prose: each section's paragraphs, tables and figure captions, every number computed.

Each builder takes the analysed networks and returns Markdown; nothing here draws.
"""

from __future__ import annotations

from torch import nn

from ..analysis import KernelComparison, Table2Row, totals
from ..tables import human_bytes, markdown_table
from .layers import CHANNELS, INPUT, STACK_DEPTHS, Column, Net, layer_groups, module_label
from .style import kib, listing, mib, percent, shape_text


def figure(n: int, file: str, alt: str, caption: str) -> str:
    """An image with its numbered caption below."""
    return f"![{alt}]({file})\n\n*Figure {n}. {caption}*"


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
    table = markdown_table(
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
        "rrrrrrr",
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
    table = markdown_table(
        ["network", "head", "parameters", "in the head", "head share", "MACs", "MACs in the head"], rows, "llrrrrr"
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
    table = markdown_table(
        ["config", "weight layers", "parameters", "millions", "paper (M)", "GMACs", "GFLOPs"], rows, "lrrrrrr"
    )
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
    table = markdown_table(
        ["layer", "type", "output C×H×W", "parameters", "MACs", "receptive field (px)", "jump (px)", "memory (KiB)"],
        body,
        "lllrrrrr",
    )
    return "\n\n".join(
        [
            f"One {INPUT} × {INPUT} image, fp32, 1000 classes (`vggnet summary {name}` prints the same table). "
            "The total memory counts every module's output, ReLUs and dropout included.",
            table,
        ]
    )
