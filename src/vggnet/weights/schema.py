"""The schema of the project format's metadata, checked when a file is read, not where a field is used.

Whoever crafts a file can recompute its metadata hash, so the JSON is as hostile as any input: every
field a reader uses is checked here for its type and range (class names matching the class count,
finite preprocessing numbers with a non-zero std, a known configuration), and nesting is bounded.
Fields this version does not know are left alone at the top level and in `extra`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from typing import Any

from ..configs import HEADS, INITS, ModelConfig, resolve

MAX_DEPTH = 16  # what vggnet writes nests 3 deep (extra.compression.low_rank); deeper is crafted
MAX_CLASSES = 1_000_000  # ImageNet-21k has 21,841 classes; beyond this a class list is a bomb, not labels
MAX_SIDE = 8192  # input size and training scales, in pixels (export's dynamic shapes stop here too)
MAX_TEXT = 1000  # characters in a class name or a source: a line of a report, not a payload


class SchemaError(ValueError):
    """A metadata field of the wrong type or out of range; the message names the field."""


def parse_meta(text: str) -> dict[str, Any]:
    """The metadata JSON as a dict whose fields the readers use are checked; a SchemaError names the first bad one."""
    try:
        raw = json.loads(text)
    except RecursionError:
        raise SchemaError(f"JSON nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:
        raise SchemaError(f"not JSON ({e})") from None
    _check_depth(raw)
    top = _object(raw, "metadata")
    if "model" not in top:
        raise SchemaError("model: missing (the configuration to rebuild the network)")
    model = _object(top["model"], "model")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(model) - fields)
    if unknown:
        raise SchemaError(f"model: unknown fields {unknown} (written by a newer vggnet?)")
    _text(model.get("arch", "D"), "model.arch")
    try:
        resolve(model.get("arch", "D"))
    except ValueError as e:
        raise SchemaError(f"model.arch: {e}") from None
    classes = _integer(model.get("num_classes", 1000), "model.num_classes", 1, MAX_CLASSES)
    _boolean(model.get("batch_norm", False), "model.batch_norm")
    _choice(model.get("head", "fc"), "model.head", HEADS)
    _number(model.get("width", 1.0), "model.width", 0.0, 16.0, low_open=True)
    _number(model.get("dropout", 0.5), "model.dropout", 0.0, 1.0)
    _integer(model.get("in_channels", 3), "model.in_channels", 1, 1024)
    _integer(model.get("input_size", 224), "model.input_size", 32, MAX_SIDE)
    _choice(model.get("init", "kaiming"), "model.init", INITS)
    _number(model.get("init_std", 0.01), "model.init_std", 0.0, 1e3)

    pre = _object(top.get("preprocessing", {}), "preprocessing")
    if set(pre) - {"color", "scale", "mean", "std"}:
        raise SchemaError(f"preprocessing: unknown fields {sorted(set(pre) - {'color', 'scale', 'mean', 'std'})}")
    _choice(pre.get("color", "RGB"), "preprocessing.color", ("RGB", "BGR"))
    _number(pre.get("scale", 1.0), "preprocessing.scale", 0.0, 1e6, low_open=True)
    for key in ("mean", "std"):
        if key in pre:
            values = pre[key]
            if not isinstance(values, list) or len(values) != 3:
                raise SchemaError(f"preprocessing.{key}: expected 3 numbers (R, G, B or B, G, R), got {_shown(values)}")
            for i, v in enumerate(values):
                _number(v, f"preprocessing.{key}[{i}]", *((0.0, 1e6) if key == "std" else (-1e6, 1e6)), low_open=True)

    names = top.get("class_names")
    if names is not None:
        if not isinstance(names, list):
            raise SchemaError(f"class_names: expected a list of strings, got {_shown(names)}")
        if len(names) != classes:
            raise SchemaError(f"class_names: {len(names)} names for a model with {classes} classes")
        for i, name in enumerate(names):
            _text(name, f"class_names[{i}]")
    _text(top.get("source", "vggnet"), "source")
    _integer(top.get("params", 0), "params", 0, 1 << 40)
    _boolean(top.get("include_top", True), "include_top")
    extra = _object(top.get("extra", {}), "extra")
    if "scale" in extra:  # the training scale S or [Smin, Smax]; the default test scales derive from it
        scale = extra["scale"]
        values = scale if isinstance(scale, list) else [scale]
        if not 1 <= len(values) <= 2:
            raise SchemaError(f"extra.scale: expected S or [Smin, Smax], got {_shown(scale)}")
        for v in values:
            _number(v, "extra.scale", 1, MAX_SIDE)
    if "crop" in extra:
        _integer(extra["crop"], "extra.crop", 1, MAX_SIDE)
    digest = top.get("tensors_sha256", "")
    if not isinstance(digest, str) or len(digest) > 64 or any(c not in "0123456789abcdef" for c in digest):
        raise SchemaError(f"tensors_sha256: expected up to 64 hex digits, got {_shown(digest)}")
    return top


def _check_depth(raw: Any) -> None:
    stack = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SchemaError(f"JSON nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(f"{field}: expected an object, got {_shown(value)}")
    return value


def _boolean(value: Any, field: str) -> None:
    if not isinstance(value, bool):
        raise SchemaError(f"{field}: expected true or false, got {_shown(value)}")


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SchemaError(f"{field}: expected an integer from {low} to {high}, got {_shown(value)}")
    return value


def _number(value: Any, field: str, low: float, high: float, low_open: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and math.isfinite(value)
    if not ok or not (low < value if low_open else low <= value) or value > high:
        bound = f"over {low:g}" if low_open else f"from {low:g}"
        raise SchemaError(f"{field}: expected a finite number {bound} up to {high:g}, got {_shown(value)}")


def _choice(value: Any, field: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted or not isinstance(value, str):
        raise SchemaError(f"{field}: expected one of {', '.join(accepted)}, got {_shown(value)}")


def _text(value: Any, field: str) -> None:
    """A string of a line: no control characters (a newline or a terminal escape would forge output)."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise SchemaError(f"{field}: expected a string of at most {MAX_TEXT} characters, got {_shown(value)}")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise SchemaError(f"{field}: control characters in {_shown(value)}")
