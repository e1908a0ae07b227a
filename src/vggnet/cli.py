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

from .configs import HEADS, ModelConfig, config_names

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


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_weights

    report = export_weights(args.weights, args.out, format=args.format, optimize=args.optimize, verify=args.verify)
    print(
        f"wrote {report.path} ({report.format}, dense net, dynamic batch/height/width{', BN folded' if report.optimized else ''})"
    )
    for size, err in report.max_abs_error.items():
        print(f"  checked at {size}: max |export - torch| of logits = {err:.2e}")
    return 0


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

    p = sub.add_parser("demo", help="the main job on built-in data")
    p.add_argument("--quick", action="store_true", help="a shorter run, for smoke tests")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export the dense net (section 3.2) to ONNX or torch.export, dynamic shapes")
    p.add_argument("weights", help="weights in the project format (.safetensors)")
    p.add_argument("out", help="output file (.onnx, or .pt2 for torch.export)")
    p.add_argument("--format", choices=("onnx", "pt2"), default=None, help="(default: from OUT's suffix, else onnx)")
    p.add_argument(
        "--optimize", action="store_true", help="fold BatchNorm into the convs (exact; the ONNX exporter folds it too)"
    )
    p.add_argument(
        "--verify", action=argparse.BooleanOptionalAction, default=True, help="compare with PyTorch at two sizes"
    )
    p.set_defaults(func=cmd_export)
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
