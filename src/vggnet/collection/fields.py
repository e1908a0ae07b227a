"""The fields of a collection's JSON files, checked before use: a collection folder may come from someone else."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .photos import CONTROL, shard_count


def read_json(path: Path) -> Any:
    """A JSON file of a collection; a one-line error naming it when it is not JSON (or nested past Python's stack)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: unreadable ({type(e).__name__}: {str(e)[:200]})") from None


def shown(value: Any) -> str:
    """A value from a file, for a one-line error: a short plain string as it is, anything else as repr, cut."""
    plain = isinstance(value, str) and 0 < len(value) <= 60 and not CONTROL.search(value)
    return value if plain else repr(value)[:60]


def check_manifest(path: Path, m: dict[str, Any]) -> None:
    """Each field of collection.json of its type and range, and the shard count the photos and shard size make."""

    def count(key: str, low: int) -> int:
        value = m.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{path}: {key} {shown(value)} is not a whole number from {low}")
        return value

    photos, size = count("photos", 0), count("shard_size", 1)
    count("dim", 1)
    if count("shards", 0) != shard_count(photos, size):
        raise ValueError(
            f"{path}: {m['shards']} shards, but {photos} photos {size} to a shard make {shard_count(photos, size)}"
        )
    for key in ("root", "photos_sha256"):
        text_field(path, key, m.get(key))
    s = m.get("settings")
    if not isinstance(s, dict):
        raise ValueError(f"{path}: settings {shown(s)} is not an object")
    from .descriptors import DESCRIPTORS

    for key in ("weights", "weights_sha256", "config", "layer"):
        text_field(path, f"settings.{key}", s.get(key))
    if s.get("descriptor") not in DESCRIPTORS:
        raise ValueError(
            f"{path}: settings.descriptor {shown(s.get('descriptor'))} is none of {', '.join(DESCRIPTORS)}"
        )
    scales, gem_p, side = s.get("scales"), s.get("gem_p"), s.get("size")
    if not isinstance(side, int) or isinstance(side, bool) or side < 1:
        raise ValueError(f"{path}: settings.size {shown(side)} is not a side in pixels")
    if not isinstance(scales, list) or not scales or not all(finite(v) and v > 0 for v in scales):
        raise ValueError(f"{path}: settings.scales {shown(scales)} is not a list of positive factors")
    if gem_p is not None and not (finite(gem_p) and gem_p > 0):
        raise ValueError(f"{path}: settings.gem_p {shown(gem_p)} is not a positive number")


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def text_field(path: Path, key: str, value: Any) -> None:
    if not isinstance(value, str) or not value or CONTROL.search(value):
        raise ValueError(f"{path}: {key} {shown(value)} is not a line of text")
