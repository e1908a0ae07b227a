"""What vggnet can fetch by name: the published VGG weights and a few datasets, read from catalogue.json.

The catalogue is data (STYLE.md, "A catalogue is data"): one JSON file beside this module, each entry
with its URL(s), the hash its publisher gives, size, configuration, preprocessing, published accuracy and
where each fact came from (`facts_from`). $VGGNET_CATALOGUE names another file to read instead (a site's
own catalogue, or a test's). Nothing here imports the rest of vggnet.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

# What each kind of published hash looks like: the number of hex digits it has.
HASH_DIGITS = {"sha256": (64, 64), "sha256_prefix": (8, 63), "md5": (32, 32), "md5_first_mib": (32, 32)}
KINDS = ("weights", "datasets")


class UnknownName(ValueError):
    """A name that is neither a file nor a catalogue entry; the message lists the closest names."""


@dataclass(frozen=True)
class Entry:
    """One fetchable file: a weights release or a dataset archive, as the catalogue records it."""

    name: str
    kind: str  # "weights" or "datasets"
    file: str  # the local file name (downloads land as cache/<kind>/downloads/<file>)
    urls: tuple[str, ...]
    hash: dict[str, Any]  # sha256 | sha256_prefix | md5 | md5_first_mib (hex), size_bytes (int)
    publisher: str = ""
    aliases: tuple[str, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)  # every other field of the record, as written


def catalogue_path() -> Path:
    """The catalogue read: $VGGNET_CATALOGUE, else the one shipped with vggnet."""
    override = os.environ.get("VGGNET_CATALOGUE")
    return Path(override) if override else Path(str(resources.files("vggnet").joinpath("catalogue.json")))


def entries(kind: str = "weights") -> list[Entry]:
    """Every entry of one kind ("weights" or "datasets"), in the catalogue's order."""
    if kind not in KINDS:
        raise ValueError(f"unknown catalogue section {kind!r}; accepted: {', '.join(KINDS)}")
    path = catalogue_path()
    return list(_read(str(path), path.stat().st_mtime_ns if path.exists() else 0)[kind])


def lookup(name: str, kind: str = "weights") -> Entry | None:
    """The entry called `name` or one of its aliases (case-insensitive), else None."""
    wanted = name.strip().lower()
    for entry in entries(kind):
        if wanted == entry.name.lower() or wanted in (a.lower() for a in entry.aliases):
            return entry
    return None


def closest(name: str, kind: str = "weights", n: int = 3) -> list[str]:
    """The catalogue names most like `name` (for a one-line "did you mean")."""
    names = [e.name for e in entries(kind)]
    by_lower = {x.lower(): x for x in names}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.5)
    return [by_lower[x] for x in found] or names[:n]


def unknown(name: str, kind: str, what: str) -> UnknownName:
    """The one-line error for a name that is not in the catalogue (nor a file)."""
    near = ", ".join(closest(name, kind))
    listing = "vggnet weights list" if kind == "weights" else "vggnet weights list --datasets"
    return UnknownName(f"{name}: no such {what}; closest catalogue names: {near} (all: `{listing}`)")


@lru_cache(maxsize=4)
def _read(path: str, _mtime: int) -> dict[str, list[Entry]]:
    """Parse and check a catalogue file once per (path, modification time)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such catalogue file ($VGGNET_CATALOGUE)") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable catalogue ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a catalogue is a JSON object with 'weights' and 'datasets' lists")
    return {kind: [_entry(r, kind, path) for r in raw.get(kind, [])] for kind in KINDS}


def _entry(record: Any, kind: str, path: str) -> Entry:
    """One record checked: a name, a file name without folders, http(s)/file URLs, well-formed hashes."""
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        raise ValueError(f"{path}: a {kind} entry without a name: {str(record)[:80]}")
    name = record["name"]
    where = f"{path}: {kind} entry {name!r}"
    file, urls, hashes = record.get("file"), record.get("urls"), record.get("hash", {})
    if not isinstance(file, str) or not file or Path(file).name != file or file.startswith("."):
        raise ValueError(f"{where}: 'file' must be a plain file name, got {file!r}")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ValueError(f"{where}: 'urls' must be a non-empty list of URLs")
    for url in urls:
        if not re.match(r"^(https?|file)://", url):
            raise ValueError(f"{where}: {url!r} is not an http, https or file URL")
    if not isinstance(hashes, dict):
        raise ValueError(f"{where}: 'hash' must be an object")
    for key, value in hashes.items():
        if key == "size_bytes":
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{where}: size_bytes must be a positive integer")
            continue
        if key not in HASH_DIGITS:
            raise ValueError(f"{where}: unknown hash kind {key!r}; accepted: {', '.join(HASH_DIGITS)}, size_bytes")
        low, high = HASH_DIGITS[key]
        if not isinstance(value, str) or not re.fullmatch(f"[0-9a-f]{{{low},{high}}}", value):
            raise ValueError(f"{where}: {key} must be {low}-{high} lower-case hex digits, got {value!r}")
    known = {"name", "file", "urls", "hash", "publisher", "aliases"}
    return Entry(
        name=name,
        kind=kind,
        file=file,
        urls=tuple(urls),
        hash=dict(hashes),
        publisher=str(record.get("publisher", "")),
        aliases=tuple(record.get("aliases", ())),
        facts={k: v for k, v in record.items() if k not in known},
    )
