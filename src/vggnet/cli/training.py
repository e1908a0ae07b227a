"""Commands that train: `vggnet train` (section 3.1) and the training-set statistics it uses."""

from __future__ import annotations

import argparse
import os

from ..configs import TrainConfig
from .options import add_dataclass_args, dataclass_from_args


def cmd_train(args: argparse.Namespace) -> int:
    from ..configs import TrainConfig
    from ..metrics import errors_text
    from ..train import WEIGHTS, best_record, load_config, train
    from ..weights import read_meta

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
    classes = read_meta(run / WEIGHTS, verify=False).model.num_classes
    errors = errors_text({1: best["val_top1"], 5: best["val_top5"]}, classes)
    print(f"best epoch {best['epoch']}: validation {errors}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ..data import compute_stats, open_dataset

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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the `vggnet` parser."""
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
