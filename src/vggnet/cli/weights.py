"""Commands on weights: the catalogue (`weights list`, `weights fetch`), import from every source, features, export."""

from __future__ import annotations

import argparse

from .options import add_sha256_flag, add_verify_flag, with_sha256


def _read_class_names(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def cmd_convert(args: argparse.Namespace) -> int:
    from ..weights import Preprocessing, convert, resolve_weights

    names = _read_class_names(args.class_names) if args.class_names else None
    pre = {"torchvision": Preprocessing.torchvision, "caffe": Preprocessing.caffe}.get(args.preprocessing)
    src = resolve_weights(args.src, sha256=args.sha256)  # a file, run folder, catalogue name or URL
    meta = convert(
        src, args.dst, args.source, head=args.head, class_names=names, preprocessing=pre and pre(), verify=args.verify
    )  # fmt: skip
    cfg, p = meta.model, meta.preprocessing
    name = cfg.display_name() + (f" width {cfg.width:g}" if cfg.width != 1 else "")
    top = f"{cfg.head} head, {cfg.num_classes} classes" if meta.include_top else "no classifier (features only)"
    print(
        f"{args.src} ({meta.source}) -> {args.dst}: VGG {name}, {top}, {meta.params:,} parameters, "
        f"input {p.color} x{p.scale:g} mean {list(p.mean)} std {list(p.std)}"
    )
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    import numpy as np

    from ..features import extract_features
    from ..io import atomic_write

    layers = [n.strip() for n in args.layers.split(",") if n.strip()]
    size = args.size or None
    result = extract_features(
        args.images,
        with_sha256([args.weights], args.sha256)[0],
        layers,
        size=size,
        device=args.device,
        progress=not args.quiet,
        verify=args.verify,
    )

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, paths=np.array(result.paths), **result.features)

    atomic_write(args.out, write)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in result.features.items())
    skipped = f"; skipped {len(result.skipped)} unreadable: {', '.join(result.skipped)}" if result.skipped else ""
    print(f"{len(result.paths)} image(s) -> {args.out}: {shapes}{skipped}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_weights

    weights = with_sha256([args.weights], args.sha256)[0]
    report = export_weights(
        weights, args.out, format=args.format, optimize=args.optimize, verify=args.verify,
        with_preprocessing=args.with_preprocessing,
    )  # fmt: skip
    print(
        f"wrote {report.path} ({report.format}, dense net, dynamic batch/height/width{', BN folded' if report.optimized else ''})"
    )
    print(f"  expects {report.input}")
    for size, err in report.max_abs_error.items():
        print(f"  checked at {size}: max |export - torch| of logits = {err:.2e}")
    return 0


def cmd_weights_list(args: argparse.Namespace) -> int:
    from ..weights.listing import catalogue_markdown, dataset_rows, text_table, weights_rows

    if args.markdown:
        print(catalogue_markdown())
        return 0
    print(text_table(weights_rows()))
    print("\ndatasets (vggnet train NAME, --data NAME):")
    print(text_table(dataset_rows()))
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from ..catalogue import lookup
    from ..data import fetch_dataset
    from ..weights import resolve_weights

    for name in args.names:
        dataset = lookup(name, "datasets")
        path = fetch_dataset(dataset) if dataset and not lookup(name) else resolve_weights(name)
        print(f"{name}: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the `vggnet` parser."""
    p = sub.add_parser("weights", help="the catalogue of published weights and datasets: list, fetch")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    q = actions.add_parser("list", help="every name `--weights` and `--data` accept, and whether it is cached")
    q.add_argument("--markdown", action="store_true", help="the Markdown table of docs/weights.md (no cached column)")
    q.set_defaults(func=cmd_weights_list)
    q = actions.add_parser("fetch", help="fetch names into the cache now (before going offline); prints each path")
    q.add_argument("names", nargs="+", metavar="NAME", help="catalogue names: vgg16, vgg16_keras, imagenette, ...")
    q.set_defaults(func=cmd_weights_fetch)

    p = sub.add_parser("convert", help="import torchvision / timm / Keras / Caffe weights into the project format")
    p.add_argument(
        "src", help="weights file (.pth/.pt, .safetensors, Keras .h5, .caffemodel), run folder, catalogue name or URL"
    )
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
    add_sha256_flag(p)
    add_verify_flag(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("features", help="activations at named layers (relu1_2, ...) of images, to an .npz")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--weights", required=True, help="weights file (any source `convert` reads), run folder, catalogue name or URL"
    )
    add_sha256_flag(p)
    p.add_argument("--layers", required=True, help="comma-separated layer names, e.g. relu1_2,relu2_2,relu3_3,relu4_3")
    p.add_argument("--out", required=True, help="output .npz: one array (N, C, H, W) per layer, plus `paths`")
    p.add_argument(
        "--size", type=int, default=224, help="resize shorter side + centre crop (0: keep size; default 224)"
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verify_flag(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("export", help="export the dense net (section 3.2) to ONNX or torch.export, dynamic shapes")
    p.add_argument("weights", help="weights file (any source `convert` reads), run folder, catalogue name or URL")
    add_sha256_flag(p)
    p.add_argument("out", help="output file (.onnx, or .pt2 for torch.export)")
    p.add_argument("--format", choices=("onnx", "pt2"), default=None, help="(default: from OUT's suffix, else onnx)")
    p.add_argument(
        "--optimize", action="store_true", help="fold BatchNorm into the convs (exact; the ONNX exporter folds it too)"
    )
    p.add_argument(
        "--with-preprocessing",
        action="store_true",
        help="the graph takes (N, H, W, 3) uint8 RGB as a decoder gives it and applies the weights' preprocessing "
        "itself (default: a preprocessed float (N, 3, H, W) input; docs/export.md)",
    )
    p.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check the weights' content hashes on load and compare the export with PyTorch at two sizes",
    )
    p.set_defaults(func=cmd_export)
