"""Commands about the network itself: its numbers, the illustrated report, the HTML viewer, the demo."""

from __future__ import annotations

import argparse

from ..configs import HEADS, ModelConfig, config_names
from ..lang import DEFAULT as DEFAULT_LANG
from ..lang import languages
from .options import UsageError, add_sha256_flag, with_sha256


def cmd_summary(args: argparse.Namespace) -> int:
    from ..analysis import format_table, format_table2, layer_table, table2
    from ..model import VGG

    if args.all:
        print(format_table2(table2(num_classes=args.classes, input_size=args.input)))
        return 0
    if not args.config:
        raise UsageError("summary needs a CONFIG (e.g. D, vgg16, vgg16_bn) or --all")
    import torch

    with torch.device("meta"):
        model = VGG(ModelConfig(arch=args.config, batch_norm=args.bn, head=args.head, num_classes=args.classes))
    name = model.cfg.display_name()
    print(f"VGG {name}, {args.head} head, {args.classes} classes, input {args.input}x{args.input}")
    print(format_table(layer_table(model, args.input)))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from ..explain import report_figures, write_report

    path = write_report(args.out, network=args.network, lang=args.lang)
    figures = report_figures(path)
    print(f"wrote {path} with {len(figures)} figures: {', '.join(figures)}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from ..view import write_view

    path = write_view(
        args.out, args.network, batch_norm=args.bn, head=args.head, images=args.images, lang=args.lang,
        weights=with_sha256([args.weights], args.sha256)[0] if args.weights else None,
    )  # fmt: skip
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(quick=args.quick)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the `vggnet` parser."""
    p = sub.add_parser("summary", help="per-layer table (shapes, params, MACs, receptive field, memory)")
    p.add_argument("config", nargs="?", help=f"configuration, one of: {', '.join(config_names()[:12])}, ... (+ _bn)")
    p.add_argument("--input", type=int, default=224, help="input side in pixels (default: 224)")
    p.add_argument("--bn", action="store_true", help="batch-normalised variant")
    p.add_argument("--head", choices=HEADS, default="fc", help="classifier head (default: fc)")
    p.add_argument("--classes", type=int, default=1000, help="number of classes (default: 1000)")
    p.add_argument("--all", action="store_true", help="Table 2: every configuration side by side")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("explain", help="illustrated report: architecture, receptive fields, parameters, compute")
    p.add_argument(
        "--out", default="docs/explain", help="output folder for README.md and figures (default: docs/explain)"
    )
    p.add_argument("--network", default="D", help="network for the block diagram and per-layer table (default: D)")
    p.add_argument("--lang", default=DEFAULT_LANG, help=f"language of the report: {', '.join(languages())}")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("view", help="one self-contained HTML page: the network, its numbers, what it sees in photos")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="photos to show top-5, feature maps and Grad-CAM for")
    p.add_argument("--network", help="configuration (default: D, or the weights' own; must match them)")
    p.add_argument("--bn", action="store_true", help="batch-normalised variant")
    p.add_argument("--head", choices=HEADS, help="classifier head (default: fc, or the weights' own)")
    p.add_argument(
        "--weights",
        help="weights file (any source `convert` reads), run folder, catalogue name or URL; needed for photos",
    )
    add_sha256_flag(p)
    p.add_argument("--out", required=True, help="output .html")
    p.add_argument("--lang", default=DEFAULT_LANG, help=f"language of the page: {', '.join(languages())}")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("demo", help="the main job on built-in data")
    p.add_argument("--quick", action="store_true", help="a shorter run, for smoke tests")
    p.set_defaults(func=cmd_demo)
