"""Commands that test: `vggnet evaluate` (section 3.2) and `vggnet predict`."""

from __future__ import annotations

import argparse
import sys

from ..configs import EvalConfig
from .options import add_dataclass_args, add_sha256_flag, dataclass_from_args, with_sha256


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluate import evaluate, results_table, save_result
    from ..evaluate.report import errors_of
    from ..metrics import errors_text

    weights = with_sha256(args.weights, args.sha256)
    result = evaluate(weights, args.data, dataclass_from_args(EvalConfig, args), progress=not args.quiet)
    print(results_table([result]))
    print(f"{errors_text(errors_of(result), len(result.class_names))} on {result.images} images")
    if result.skipped:
        print(f"{len(result.skipped)} unreadable images skipped (listed in the JSON report)", file=sys.stderr)
    out = args.out or (str(Path(args.weights[0]) / "eval") if Path(args.weights[0]).is_dir() else None)
    if out:
        print("wrote " + ", ".join(str(p) for p in save_result(result, out)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..evaluate import predict

    cfg = dataclass_from_args(EvalConfig, args)
    predictions, skipped = predict(
        args.images, with_sha256(args.weights, args.sha256), cfg, top=args.top, heatmap=args.heatmap, cam=args.cam, layer=args.layer,
        progress=not args.quiet,
    )  # fmt: skip
    for pred in predictions:
        print(f"{pred.path}  ({pred.protocol})")  # the protocol behind the probabilities below
        for rank, (label, prob) in enumerate(pred.top, 1):
            print(f"  {rank}. {prob:7.2%}  {label}")
        if pred.folder_class:
            print(f"  folder: {pred.folder_class}, rank {pred.folder_rank}")
        if pred.heatmap:
            print(f"  heat map: {pred.heatmap}")
    if skipped and predictions:  # each skipped image already has its line; this sums them up after the results
        print(f"{len(skipped)} unreadable images skipped: {', '.join(skipped)}", file=sys.stderr)
    return 0 if predictions else 2


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the `vggnet` parser."""
    p = sub.add_parser("evaluate", help="top-1/top-5 error with the paper's testing protocol (section 3.2)")
    p.add_argument(
        "weights",
        nargs="+",
        help="run folders, weights files, catalogue names (vgg16) or URLs; several are an ensemble",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="an image folder (ROOT/val used if present), digits, or a dataset name fetched once: imagenette, "
        "imagenette-160, cifar10, cifar100 (default: digits)",
    )
    add_sha256_flag(p)
    p.add_argument("--out", help="folder for the JSON, Markdown and confusion PNG (default: RUN/eval for a run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, EvalConfig)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-5 classes of images, optionally a dense score-map heat map")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--weights",
        action="append",
        required=True,
        help="run folder, weights file, catalogue name (vgg16; `vggnet weights list`) or URL (repeat: ensemble)",
    )
    add_sha256_flag(p)
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, EvalConfig, skip=("split", "limit", "workers", "decode"))
    p.set_defaults(func=cmd_predict)
