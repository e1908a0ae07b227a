"""`vggnet <command>`: parse, call the library, print.

One module per family of commands (`network`, `weights`, `training`, `testing`, `transfer`, `collection`,
`machine`), each adding its parsers; the options of a job come from its dataclass (`options.py`), so the CLI cannot drift from
the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import collection, machine, network, testing, training, transfer, weights
from .options import UsageError, add_dataclass_args, dataclass_from_args


def build_parser() -> argparse.ArgumentParser:
    """The `vggnet` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="vggnet", description="The VGG paper, end to end.")
    parser.add_argument("--version", action="version", version=version_text(), help="the version of vggnet and torch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for family in (network, weights, training, testing, transfer, collection, machine):
        family.register(sub)
    return parser


def version_text() -> str:
    """ "vggnet 0.1.0 (torch 2.x, Python 3.x)": the installed package's version and what it runs on."""
    import platform

    import torch

    from .. import __version__

    return f"vggnet {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


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
    except OSError as e:  # a failed write (a full disk): the library says what was kept
        print(f"vggnet {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vggnet: interrupted", file=sys.stderr)
        return 130
    return 0


__all__ = ["UsageError", "add_dataclass_args", "build_parser", "dataclass_from_args", "main"]
