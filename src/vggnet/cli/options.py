"""Options from dataclasses: one `--field` per field of a job's config, typed and helped by its metadata.

The CLI cannot drift from the library's defaults: `vggnet train` and `vggnet evaluate` are generated from
`TrainConfig` and `EvalConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Sequence
from typing import Any


class UsageError(Exception):
    """Wrong or missing arguments: exit status 2, one line, no traceback."""


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


def add_verify_flag(parser: argparse.ArgumentParser) -> None:
    """--verify / --no-verify: check the content hashes of the weights loaded (on by default)."""
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check the weights' content hashes on load (default: on; docs/weights.md)",
    )


def add_sha256_flag(parser: argparse.ArgumentParser) -> None:
    """--sha256 HEX: what the weights file's (or URL's download's) sha256 must start with."""
    parser.add_argument(
        "--sha256",
        metavar="HEX",
        help="the sha256 the weights file or URL must have (its first 8 to 64 hex digits, as published); "
        "with several weights, write URL#sha256=HEX for each instead",
    )


def with_sha256(weights: list[str], sha256: str | None) -> list[str]:
    """The weights arguments with --sha256 attached (pip's URL#sha256=HEX), refused for an ensemble."""
    if not sha256:
        return weights
    if len(weights) != 1:
        raise UsageError("--sha256 names one file's hash; for several weights write each as URL#sha256=HEX")
    return [f"{weights[0]}#sha256={sha256}"]
