"""`vggnet <subcommand>`: parse, call the library, print.

Options of a job come from its dataclass (see `add_dataclass_args`), so the CLI
cannot drift from the library's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from .configs import HEADS, EvalConfig, ModelConfig, config_names

# -- dataclass <-> argparse -------------------------------------------------------------


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """Add one `--field` option per dataclass field, typed and defaulted from the class."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default: {default})")
            continue
        origin = typing.get_origin(kind)
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if origin in (list, tuple):
            elem = args[0] if args else str
            parser.add_argument(flag, type=_list_of(elem), default=None, help=f"comma-separated (default: {default})")
            continue
        if origin is typing.Union or (origin is not None and len(args) == 1):
            kind = args[0]
        parser.add_argument(flag, type=kind, default=None, help=f"(default: {default})")


def _list_of(elem: type) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [elem(v) for v in text.split(",") if v.strip()]

    return parse


def dataclass_from_args(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """Build `cls` from parsed args: fields the user gave override `base` (or the defaults)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **given) if base is not None else cls(**given)


# -- subcommands ----------------------------------------------------------------------


def cmd_summary(args: argparse.Namespace) -> int:
    from .analysis import format_table, format_table2, layer_table, table2
    from .model import VGG

    if args.all:
        print(format_table2(table2(num_classes=args.classes, input_size=args.input)))
        return 0
    if not args.config:
        raise UsageError("summary needs a CONFIG (e.g. D, vgg16, vgg16_bn) or --all")
    import torch

    with torch.device("meta"):
        model = VGG(ModelConfig(config=args.config, batch_norm=args.bn, head=args.head, num_classes=args.classes))
    name = model.cfg.config + ("_bn" if model.cfg.batch_norm else "")
    print(f"VGG {name}, {args.head} head, {args.classes} classes, input {args.input}x{args.input}")
    print(format_table(layer_table(model, args.input)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(quick=args.quick)


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import report_figures, write_report

    path = write_report(args.out, network=args.network)
    figures = report_figures(path)
    print(f"wrote {path} with {len(figures)} figures: {', '.join(figures)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate import evaluate, markdown_table, write_report

    result = evaluate(args.weights, args.data, dataclass_from_args(EvalConfig, args), progress=not args.quiet)
    print(markdown_table([result]))
    print(f"top-1 error {result.top1_error:.2f}%, top-5 error {result.top5_error:.2f}% on {result.images} images")
    if result.skipped:
        print(f"{len(result.skipped)} unreadable images skipped (listed in the JSON report)", file=sys.stderr)
    out = args.out or (str(Path(args.weights[0]) / "eval") if Path(args.weights[0]).is_dir() else None)
    if out:
        print("wrote " + ", ".join(str(p) for p in write_report(result, out)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .evaluate import predict

    cfg = dataclass_from_args(EvalConfig, args)
    predictions, skipped = predict(args.images, args.weights, cfg, top=args.top, heatmap=args.heatmap)
    for pred in predictions:
        print(pred.path)
        for rank, (label, prob) in enumerate(pred.top, 1):
            print(f"  {rank}. {prob:7.2%}  {label}")
        if pred.heatmap:
            print(f"  heat map: {pred.heatmap}")
    if skipped:
        print(f"{len(skipped)} unreadable images skipped: {', '.join(skipped)}", file=sys.stderr)
    return 0 if predictions else 2


# -- parser and entry point ---------------------------------------------------------------


class UsageError(Exception):
    """Wrong or missing arguments: exit status 2, one line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The `vggnet` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="vggnet", description="The VGG paper, end to end.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

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
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("demo", help="the main job on built-in data")
    p.add_argument("--quick", action="store_true", help="a shorter run, for smoke tests")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", help="top-1/top-5 error with the paper's testing protocol (section 3.2)")
    p.add_argument("weights", nargs="+", help="run folders or weights files; several are an ensemble")
    p.add_argument("--data", default="digits", help="an image folder (ROOT/val used if present) or digits")
    p.add_argument("--out", help="folder for the JSON, Markdown and confusion PNG (default: RUN/eval for a run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, EvalConfig)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-5 classes of images, optionally a dense score-map heat map")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--weights", action="append", required=True, help="run folder or weights file (repeat: ensemble)")
    p.add_argument("--top", type=int, default=5, help="how many classes to list (default: 5)")
    p.add_argument("--heatmap", help="PNG path: the top class's dense score map over the image")
    add_dataclass_args(p, EvalConfig, skip=("split", "limit", "workers"))
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vggnet` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        parser.error(str(e))  # exits 2
    except (ValueError, FileNotFoundError, NotADirectoryError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vggnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vggnet: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
