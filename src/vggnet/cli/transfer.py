"""`vggnet probe` and `vggnet compress`: the transfer-learning subcommands (parse, call the library, print).

`vggnet train --init-from W` (fine-tuning) and `vggnet predict --cam` live with their commands (training.py, testing.py).
"""

from __future__ import annotations

import argparse
import sys

from .options import add_sha256_flag, with_sha256


def cmd_probe(args: argparse.Namespace) -> int:
    from ..metrics import errors_text
    from ..probe import linear_probe, probe_table, save_probe

    result = linear_probe(
        with_sha256([args.weights], args.sha256)[0], args.data, args.layer, c=args.c, scale=args.scale or None, batch_size=args.batch_size,
        workers=args.workers, device=args.device, progress=not args.quiet, fast=args.fast, cache=args.cache,
    )  # fmt: skip
    print(probe_table([result]))
    errors = {1: result.top1_error, 5: result.top5_error}
    print(f"{errors_text(errors, len(result.class_names))} on {result.images} images")
    if result.skipped:
        print(f"{len(result.skipped)} unreadable images skipped (listed in the JSON report)", file=sys.stderr)
    if args.out:
        print("wrote " + ", ".join(str(p) for p in save_probe(result, args.out)))
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from ..compress import compress, parse_size
    from ..tables import human_bytes

    layers = tuple(n.strip() for n in args.layers.split(",") if n.strip())
    target = parse_size(args.target_size) if args.target_size else None
    r = compress(
        with_sha256([args.weights], args.sha256)[0],
        args.out,
        rank=args.rank,
        energy=args.energy,
        target_size=target,
        int8=args.int8,
        layers=layers,
        progress=not args.quiet,
    )
    done = [f"{n} rank {k} ({100 * r.energy[n]:.1f}% of the squared singular values)" for n, k in r.ranks.items()]
    done += ["int8 weights (float32 again on load)"] if r.int8 else []
    print(f"{r.src} -> {r.dst}: " + "; ".join(done))
    print(
        f"parameters {r.params_before:,} -> {r.params_after:,}; file {human_bytes(r.file_bytes_before)} -> "
        f"{human_bytes(r.file_bytes_after)} ({r.file_bytes_after / r.file_bytes_before:.1%})"
    )
    for note in r.notes:
        print(note, file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands (`probe`, `compress`) to the `vggnet` parser."""
    p = sub.add_parser("probe", help="linear probe: a logistic regression on a frozen network's features at a layer")
    p.add_argument("data", help="an image folder with train/ and val/ (or digits, cifar10:PATH)")
    p.add_argument(
        "--weights", required=True, help="run folder, weights file (any source `convert` reads), catalogue name or URL"
    )
    add_sha256_flag(p)
    p.add_argument(
        "--layer", default="fc7", help="paper name of the layer: fc7, fc6, relu5_3 (pooled), ... (default: fc7)"
    )
    p.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression (default: 1)")
    p.add_argument("--scale", type=int, default=0, help="shorter side before the centre crop (default: the weights' S)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--workers", type=int, default=0, help="image decoding processes (default: 0)")
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N (default: auto)")
    p.add_argument(
        "--fast",
        action="store_true",
        help="on a CPU: BatchNorm folded, Winograd 3x3 convs and the compiled FC kernels up to --layer "
        "(features within about 1e-5 of the direct path's)",
    )
    p.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the features on disk ($VGGNET_CACHE/frozen or $VGGNET_FROZEN_CACHE), keyed by the weights, files and settings, "
        "so the next probe of the same images skips the network (default: on)",
    )
    p.add_argument(
        "--out", help="folder for probe_<layer>.json and .md (default: none; the table is printed, nothing written)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("compress", help="smaller weights: FC6/FC7 by truncated SVD and/or int8 storage")
    p.add_argument("weights", help="run folder, weights file (any source `convert` reads), catalogue name or URL")
    p.add_argument("out", help="output .safetensors (loads like any project weights file)")
    add_sha256_flag(p)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--rank", type=int, help="keep this many singular values of each factorised layer")
    size.add_argument("--energy", type=float, help="keep this fraction of the squared singular values (e.g. 0.9)")
    size.add_argument("--target-size", help="the largest common rank whose file fits, e.g. 100MB")
    p.add_argument("--int8", action="store_true", help="store conv and FC weights as int8 with per-channel scales")
    p.add_argument("--layers", default="fc6,fc7", help="FC layers to factorise (default: fc6,fc7)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_compress)
