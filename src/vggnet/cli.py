"""`vggnet <subcommand>`: parse, call the library, print.

Options of a job come from its dataclass (see `add_dataclass_args`), so the CLI
cannot drift from the library's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from .cli_transfer import add_transfer_commands
from .configs import HEADS, EvalConfig, ModelConfig, config_names

# -- dataclass <-> argparse -------------------------------------------------------------


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """Add one `--field` option per dataclass field, typed and defaulted from the class, helped by its metadata.

    A field renamed since (`renamed_fields`: old -> new) also answers to its old flag (`--model` for `--arch`).
    """
    hints = typing.get_type_hints(cls)
    old_names = {new: old for old, new in getattr(cls, "renamed_fields", {}).items()}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flags = ["--" + f.name.replace("_", "-")]
        if f.name in old_names:
            flags.append("--" + old_names[f.name].replace("_", "-"))
        kind = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        comment = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        help_text = f"{comment} (default: {shown})".strip() if comment else f"(default: {shown})"
        common = {"dest": f.name, "default": None, "help": help_text}
        if kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
            continue
        origin = typing.get_origin(kind)
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if origin in (list, tuple):
            elem = args[0] if args else str
            parser.add_argument(*flags, type=_list_of(elem), **{**common, "help": f"comma-separated; {help_text}"})
            continue
        if origin is typing.Union or (origin is not None and len(args) == 1):
            kind = args[0]
        parser.add_argument(*flags, type=kind, **common)


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
        model = VGG(ModelConfig(arch=args.config, batch_norm=args.bn, head=args.head, num_classes=args.classes))
    name = model.cfg.display_name()
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


def cmd_convert(args: argparse.Namespace) -> int:
    from .weights import Preprocessing, convert

    names = _read_class_names(args.class_names) if args.class_names else None
    pre = {"torchvision": Preprocessing.torchvision, "caffe": Preprocessing.caffe}.get(args.preprocessing)
    meta = convert(args.src, args.dst, args.source, head=args.head, class_names=names, preprocessing=pre and pre())
    cfg, p = meta.model, meta.preprocessing
    name = cfg.display_name() + (f" width {cfg.width:g}" if cfg.width != 1 else "")
    top = f"{cfg.head} head, {cfg.num_classes} classes" if meta.include_top else "no classifier (features only)"
    print(
        f"{args.src} ({meta.source}) -> {args.dst}: VGG {name}, {top}, {meta.params:,} parameters, "
        f"input {p.color} x{p.scale:g} mean {list(p.mean)} std {list(p.std)}"
    )
    return 0


def _read_class_names(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def cmd_features(args: argparse.Namespace) -> int:
    import numpy as np

    from .features import extract_features
    from .io import atomic_write

    layers = [n.strip() for n in args.layers.split(",") if n.strip()]
    size = args.size or None
    result = extract_features(args.images, args.weights, layers, size=size, device=args.device, progress=not args.quiet)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, paths=np.array(result.paths), **result.features)

    atomic_write(args.out, write)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in result.features.items())
    skipped = f"; skipped {len(result.skipped)} unreadable: {', '.join(result.skipped)}" if result.skipped else ""
    print(f"{len(result.paths)} image(s) -> {args.out}: {shapes}{skipped}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .configs import TrainConfig
    from .train import best_record, load_config, train

    base = TrainConfig()
    if args.resume:  # a resumed run starts from its own saved configuration
        if not os.path.isdir(args.resume):
            raise FileNotFoundError(f"{args.resume}: no such run directory")
        base = load_config(args.resume, base)
    if args.config_file:
        base = load_config(args.config_file, base)
    cfg = dataclass_from_args(TrainConfig, args, base)
    run = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    best = best_record(run)
    print(f"run: {run}")
    print(
        f"best epoch {best['epoch']}: validation top-1 error {best['val_top1']:.2f}%, top-5 error {best['val_top5']:.2f}%"
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .data import compute_stats, open_dataset

    dataset = open_dataset(args.data, "train", args.digits_size)
    stats = compute_stats(dataset, args.samples, args.seed, args.workers, progress=not args.quiet)
    if args.out:
        stats.save(args.out)
    print(f"{stats.images} images, {stats.pixels:,} pixels of {args.data} (training split)")
    print("mean RGB (0-255):        " + "  ".join(f"{v:8.3f}" for v in stats.mean))
    print("covariance eigenvalues:  " + "  ".join(f"{v:8.3f}" for v in stats.eigval))
    for i, row in enumerate(stats.eigvec):
        print(("eigenvectors (columns):  " if i == 0 else " " * 25) + "  ".join(f"{v:8.4f}" for v in row))
    if args.out:
        print(f"written to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate import evaluate, results_table, save_result

    result = evaluate(args.weights, args.data, dataclass_from_args(EvalConfig, args), progress=not args.quiet)
    print(results_table([result]))
    print(f"top-1 error {result.top1_error:.2f}%, top-5 error {result.top5_error:.2f}% on {result.images} images")
    if result.skipped:
        print(f"{len(result.skipped)} unreadable images skipped (listed in the JSON report)", file=sys.stderr)
    out = args.out or (str(Path(args.weights[0]) / "eval") if Path(args.weights[0]).is_dir() else None)
    if out:
        print("wrote " + ", ".join(str(p) for p in save_result(result, out)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .evaluate import predict

    cfg = dataclass_from_args(EvalConfig, args)
    predictions, skipped = predict(
        args.images, args.weights, cfg, top=args.top, heatmap=args.heatmap, cam=args.cam, layer=args.layer
    )
    for pred in predictions:
        print(pred.path)
        for rank, (label, prob) in enumerate(pred.top, 1):
            print(f"  {rank}. {prob:7.2%}  {label}")
        if pred.folder_class:
            print(f"  folder: {pred.folder_class}, rank {pred.folder_rank}")
        if pred.heatmap:
            print(f"  heat map: {pred.heatmap}")
    if skipped:
        print(f"{len(skipped)} unreadable images skipped: {', '.join(skipped)}", file=sys.stderr)
    return 0 if predictions else 2


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_weights

    report = export_weights(args.weights, args.out, format=args.format, optimize=args.optimize, verify=args.verify)
    print(
        f"wrote {report.path} ({report.format}, dense net, dynamic batch/height/width{', BN folded' if report.optimized else ''})"
    )
    for size, err in report.max_abs_error.items():
        print(f"  checked at {size}: max |export - torch| of logits = {err:.2e}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from .view import write_view

    path = write_view(
        args.out, args.network, batch_norm=args.bn, head=args.head, weights=args.weights, images=args.images
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed")
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

    p = sub.add_parser("explain", help="illustrated report: architecture, receptive fields, parameters, compute")
    p.add_argument(
        "--out", default="docs/explain", help="output folder for README.md and figures (default: docs/explain)"
    )
    p.add_argument("--network", default="D", help="network for the block diagram and per-layer table (default: D)")
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("convert", help="import torchvision / timm / Keras / Caffe weights into the project format")
    p.add_argument("src", help="weights file: .pth/.pt, .safetensors, Keras .h5, .caffemodel")
    p.add_argument("dst", help="output .safetensors (weights + metadata)")
    p.add_argument(
        "--from",
        dest="source",
        choices=["auto", "torchvision", "timm", "keras", "caffe", "vggnet"],
        default="auto",
        help="the file's convention (default: auto, from its content)",
    )
    p.add_argument("--head", choices=["fc", "conv"], help="classifier layout (default: the source's own)")
    p.add_argument("--class-names", help="text file with one class name per line, in output order")
    p.add_argument(
        "--preprocessing",
        choices=["torchvision", "caffe"],
        help="override the input convention recorded (default: the source's: torchvision or caffe BGR 0-255)",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("features", help="activations at named layers (relu1_2, ...) of images, to an .npz")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--weights", required=True, help="weights file (any source `convert` reads)")
    p.add_argument("--layers", required=True, help="comma-separated layer names, e.g. relu1_2,relu2_2,relu3_3,relu4_3")
    p.add_argument("--out", required=True, help="output .npz: one array (N, C, H, W) per layer, plus `paths`")
    p.add_argument(
        "--size", type=int, default=224, help="resize shorter side + centre crop (0: keep size; default 224)"
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_features)

    from .configs import TrainConfig

    p = sub.add_parser("train", help="train a VGG as in section 3.1 (resumable; runs under torchrun)")
    p.add_argument("data", nargs="?", help="digits | image folder | cifar10:PATH | cifar100:PATH (default: digits)")
    p.add_argument(
        "--config", dest="config_file", metavar="FILE", help="JSON or TOML file of options (the command line wins)"
    )
    add_dataclass_args(p, TrainConfig, skip=("data",))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("stats", help="mean RGB and RGB-covariance eigen-decomposition of a training set")
    p.add_argument("data", help="digits | image folder | cifar10:PATH | cifar100:PATH")
    p.add_argument(
        "--samples", type=int, default=TrainConfig.stats_samples, help="images sampled (default: %(default)s)"
    )
    p.add_argument("--out", help="write the statistics as JSON (for `vggnet train --stats FILE`)")
    p.add_argument("--digits-size", type=int, default=TrainConfig.digits_size, help="side of the built-in digits")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (default: 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_stats)

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
    p.add_argument("--heatmap", help="PNG path: the top class's map over the image (see --cam)")
    p.add_argument(
        "--cam",
        choices=("dense", "gradcam", "cam"),
        default="dense",
        help="the heat map: dense class score map (section 3.2), Grad-CAM at --layer, or CAM of a gap head "
        "(default: dense)",
    )
    p.add_argument("--layer", help="Grad-CAM's conv layer by its paper name, e.g. conv5_3 (default: the last conv)")
    add_dataclass_args(p, EvalConfig, skip=("split", "limit", "workers"))
    p.set_defaults(func=cmd_predict)
    add_transfer_commands(sub)

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

    p = sub.add_parser("view", help="one self-contained HTML page: the network, its numbers, what it sees in photos")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="photos to show top-5, feature maps and Grad-CAM for")
    p.add_argument("--network", help="configuration (default: D, or the weights' own; must match them)")
    p.add_argument("--bn", action="store_true", help="batch-normalised variant")
    p.add_argument("--head", choices=HEADS, help="classifier head (default: fc, or the weights' own)")
    p.add_argument("--weights", help="weights file (any source `convert` reads); needed for photos")
    p.add_argument("--out", required=True, help="output .html")
    p.set_defaults(func=cmd_view)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vggnet` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        parser.error(str(e))  # exits 2
    except (ValueError, FileNotFoundError, NotADirectoryError, KeyError, ModuleNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vggnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vggnet: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
