"""A collection's descriptors on disk: the folder every verb (embed, index, search, duplicates) reads and writes.

    EMB/collection.json     what was embedded and how: photos, shard size, weights, layer, descriptor, dim
    EMB/photos.txt          the planned photos, one a line, in shard order
    EMB/shard-00000.npy     (rows, dim) float32 L2-normalised descriptors of that shard's readable photos
    EMB/shard-00000.csv     path,shard,row for each planned photo of the shard; row is empty for an unreadable one
    EMB/whitening.npz       PCA whitening (`vggnet index --whiten`), if fitted
    EMB/index.json, index.faiss   the search index (`vggnet index`)

Each file is written atomically; a shard is done when its .csv exists (written after its .npy), so a killed
run leaves whole shards or none, and a rerun starts at the first shard that is not done.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write, write_text
from .fields import check_manifest, read_json, shown
from .photos import CONTROL, Photos, shard_count

FORMAT = "vggnet-embeddings"
VERSION = 1
MANIFEST = "collection.json"
PLAN = "photos.txt"
# The settings a descriptor depends on: two runs that differ in one of them made descriptors that do not compare.
SETTING_KEYS = ("weights_sha256", "config", "layer", "descriptor", "gem_p", "size", "scales")
ROW = re.compile(r"[0-9]{1,9}")  # a row number in a shard's index: ASCII digits ("²".isdigit() is true)
# Descriptors are stored L2-normalised (a zero vector stays zero): a longer row, or one not finite, was not
# written by `embed` or `index`, and would make every inner product with it meaningless.
UNIT_SLACK = 1e-3


def shard_name(k: int, suffix: str) -> str:
    return f"shard-{k:05d}{suffix}"


def photos_sha256(paths: Sequence[str]) -> str:
    """The fingerprint of a planned list of photos (order included)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def manifest_for(photos: Photos, shard_size: int, settings: dict[str, Any], dim: int) -> dict[str, Any]:
    """The collection.json of a plan: `settings` are SETTING_KEYS (plus `weights`, the name as given)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "root": str(photos.root),
        "photos": len(photos.paths),
        "photos_sha256": photos_sha256(photos.paths),
        "shard_size": shard_size,
        "shards": shard_count(len(photos.paths), shard_size),
        "dim": dim,
        "settings": settings,
    }


def same_plan(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """None when two manifests describe the same descriptors of the same photos, else what differs."""
    for key in ("photos_sha256", "shard_size", "dim"):
        if a.get(key) != b.get(key):
            return {"photos_sha256": "the list of photos", "shard_size": "the shard size", "dim": "the dimension"}[key]
    for key in SETTING_KEYS:
        if a["settings"].get(key) != b["settings"].get(key):
            return f"the {key} ({a['settings'].get(key)} vs {b['settings'].get(key)})"
    return None


def begin(out: str | os.PathLike[str], photos: Photos, manifest: dict[str, Any]) -> Path:
    """Create EMB/ (or check that the one there was made by the same plan) and write its manifest and plan."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    if (out / MANIFEST).exists():
        old = read_manifest(out)
        differs = same_plan(old, manifest)
        if differs:
            raise ValueError(
                f"{out}: holds descriptors made with another {differs.removeprefix('the ')}; use another --out"
            )
        return out
    # a run killed before its manifest leaves photos.txt and temporary files, which this run writes again
    if out.is_dir() and any(p.name != PLAN and not p.name.startswith(".") for p in out.iterdir()):
        raise ValueError(f"{out}: folder is not empty and holds no {MANIFEST}; use a new or empty --out")
    write_text(out / PLAN, "".join(p + "\n" for p in photos.paths))
    write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")  # last: the folder is a collection from here
    return out


def read_manifest(emb: str | os.PathLike[str]) -> dict[str, Any]:
    """EMB/collection.json, checked to be one; a one-line error naming the folder otherwise."""
    emb = Path(emb)
    path = emb / MANIFEST
    if not emb.is_dir():
        raise FileNotFoundError(f"{emb}: no such folder")
    if not path.is_file():
        raise ValueError(f"{emb}: not a collection's descriptors (no {MANIFEST}; make them with `vggnet embed`)")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path}: format version {shown(manifest.get('version'))}, this vggnet reads {VERSION}")
    check_manifest(path, manifest)
    return manifest


def read_plan(emb: Path, manifest: dict[str, Any]) -> list[str]:
    """EMB/photos.txt, checked against the manifest's fingerprint; a path with a control character (a terminal
    escape that `search` or `duplicates` would print) is refused whoever fingerprinted it."""
    text = (emb / PLAN).read_text(encoding="utf-8", errors="surrogateescape")
    paths = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    bad = CONTROL.search(text.replace("\n", ""))
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise ValueError(
            f"{emb / PLAN}: line {line} holds a control character ({bad.group()!r}); not a plan vggnet writes"
        )
    if photos_sha256(paths) != manifest["photos_sha256"] or len(paths) != manifest["photos"]:
        raise ValueError(f"{emb / PLAN}: does not match {MANIFEST} (edited or truncated)")
    return paths


def shard_done(emb: Path, k: int) -> bool:
    return (emb / shard_name(k, ".csv")).is_file() and (emb / shard_name(k, ".npy")).is_file()


def write_shard(emb: Path, k: int, descriptors: np.ndarray, paths: Sequence[str], rows: Sequence[int | None]) -> None:
    """Shard k: its descriptors (.npy), then its index (.csv: path, shard, row; row None = unreadable)."""
    atomic_write(emb / shard_name(k, ".npy"), lambda tmp: _save_npy(tmp, descriptors))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "shard", "row"])
    writer.writerows([p, k, "" if r is None else r] for p, r in zip(paths, rows, strict=True))
    write_text(emb / shard_name(k, ".csv"), text.getvalue())


def _save_npy(tmp: str, array: np.ndarray) -> None:
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array, dtype=np.float32))


def read_shard_index(emb: Path, k: int, count: int) -> tuple[list[str], list[int | None]]:
    """(paths, rows) of shard k's .csv, which lists the shard's `count` planned photos (no more is read)."""
    path = emb / shard_name(k, ".csv")
    paths: list[str] = []
    rows: list[int | None] = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            if next(reader, None) != ["path", "shard", "row"]:
                raise ValueError(f"{path}: not a shard index (expected the header path,shard,row)")
            for record in reader:
                if len(paths) == count:
                    raise ValueError(f"{path}: lists more than the {count} photos of shard {k}")
                if len(record) != 3 or record[1] != str(k) or not (record[2] == "" or ROW.fullmatch(record[2])):
                    raise ValueError(f"{path}: malformed line {len(paths) + 2} ({shown(record)})")
                paths.append(record[0])
                rows.append(int(record[2]) if record[2] else None)
    except (csv.Error, UnicodeDecodeError) as e:  # a NUL byte, a field past csv's limit, bytes that are not UTF-8
        raise ValueError(f"{path}: unreadable ({str(e)[:200]})") from None
    return paths, rows


def read_shard(emb: Path, k: int, dim: int) -> np.ndarray:
    """Shard k's descriptors, checked to be (rows, dim) float32 (memory-mapped: pages come in as read)."""
    path = emb / shard_name(k, ".npy")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{path}: holds {array.dtype} {array.shape}, expected (rows, {dim}) float32")
    return array


@dataclass
class Collection:
    """A complete collection's descriptors: the manifest and, for each stored row, its photo."""

    folder: Path
    manifest: dict[str, Any]
    paths: list[str]  # one per descriptor row, in shard order
    unreadable: list[str]

    @property
    def settings(self) -> dict[str, Any]:
        return self.manifest["settings"]

    @property
    def root(self) -> Path:
        return Path(self.manifest["root"])

    def descriptors(self) -> np.ndarray:
        """Every descriptor (N, dim) float32, shard after shard, each checked to be a unit vector (or zero)."""
        dim = self.manifest["dim"]
        for k in range(self.manifest["shards"]):
            check_unit_rows(read_shard(self.folder, k, dim), self.folder / shard_name(k, ".npy"))
        parts = [read_shard(self.folder, k, dim) for k in range(self.manifest["shards"])]
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def check_unit_rows(x: np.ndarray, where: Path, block: int = 1 << 16) -> None:
    """A one-line error naming `where` unless every row of `x` is finite with an L2 norm of at most 1 (+ slack)."""
    for start in range(0, x.shape[0], block):
        part = np.asarray(x[start : start + block], np.float64)
        norms = np.sqrt((part * part).sum(axis=1))
        bad = np.flatnonzero(~(norms <= 1 + UNIT_SLACK))  # NaN compares false: caught too
        if bad.size:
            row = start + int(bad[0])
            raise ValueError(
                f"{where}: row {row} is not an L2-normalised descriptor (norm {norms[bad[0]]:.4g}); not written by vggnet"
            )


def check_shards(emb: Path, manifest: dict[str, Any], plan: list[str]) -> tuple[list[str], list[str]]:
    """(paths of the stored rows, unreadable paths) after checking every shard is present and holds its own
    photos, rows 0..n-1 in order; a one-line error naming the missing or overlapping shards otherwise."""
    shards, size, dim = manifest["shards"], manifest["shard_size"], manifest["dim"]
    missing = [k for k in range(shards) if not shard_done(emb, k)]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{emb}: {len(missing)} of {shards} shards missing ({shown}): run `vggnet embed` again for them "
            "(each --shard i/N part that did not finish), or merge the folders that hold them"
        )
    extra = sorted(p.name for p in emb.glob("shard-*.csv") if _shard_number(p) not in range(shards))
    if extra:
        raise ValueError(f"{emb}: {extra[0]} is beyond the {shards} shards of {MANIFEST} (another plan's shard)")
    stored, unreadable = [], []
    for k in range(shards):
        paths, rows = check_shard(emb, k, plan[k * size : (k + 1) * size], dim)
        stored += [p for p, r in zip(paths, rows, strict=True) if r is not None]
        unreadable += [p for p, r in zip(paths, rows, strict=True) if r is None]
    return stored, unreadable


def check_shard(emb: Path, k: int, planned: list[str], dim: int) -> tuple[list[str], list[int | None]]:
    """Shard k's (paths, rows), checked to list exactly its `planned` photos, rows 0..n-1 in order, as many as its
    descriptors (rows, dim) float32."""
    paths, rows = read_shard_index(emb, k, len(planned))
    if paths != planned:
        raise ValueError(f"{emb / shard_name(k, '.csv')}: holds other photos than shard {k} of the plan (overlap)")
    kept = [r for r in rows if r is not None]
    if kept != list(range(len(kept))):
        raise ValueError(f"{emb / shard_name(k, '.csv')}: rows are not 0..{len(kept) - 1} in order")
    n = read_shard(emb, k, dim).shape[0]
    if n != len(kept):
        raise ValueError(
            f"{emb / shard_name(k, '.npy')}: {n} rows, its index {shard_name(k, '.csv')} lists {len(kept)}"
        )
    return paths, rows


def _shard_number(path: Path) -> int:
    """k of shard-k.csv; -1 for a name that is not one (ASCII digits only)."""
    digits = path.stem[6:]
    return int(digits) if ROW.fullmatch(digits) else -1


def open_collection(emb: str | os.PathLike[str]) -> Collection:
    """A finished collection, every shard checked against the plan (gaps and overlaps are one-line errors)."""
    emb = Path(emb)
    manifest = read_manifest(emb)
    stored, unreadable = check_shards(emb, manifest, read_plan(emb, manifest))
    if not stored:
        raise ValueError(f"{emb}: none of its {manifest['photos']} photos was readable")
    return Collection(emb, manifest, stored, unreadable)


def merge(out: str | os.PathLike[str], parts: Sequence[str | os.PathLike[str]]) -> Collection:
    """One collection folder from the folders of its parts (`--shard i/N` runs that wrote to separate --out):
    shards are hard-linked (copied across filesystems); a shard in two parts or in none is a one-line error."""
    if not parts:
        raise ValueError("merge needs the part folders")
    parts = [Path(p) for p in parts]
    manifests = [read_manifest(p) for p in parts]
    for p, m in zip(parts[1:], manifests[1:], strict=True):
        differs = same_plan(manifests[0], m)
        if differs:
            raise ValueError(
                f"{p}: made with another {differs.removeprefix('the ')} than {parts[0]}; not parts of one run"
            )
    owner: dict[int, Path] = {}
    for p in parts:
        for csv_file in sorted(p.glob("shard-*.csv")):
            k = _shard_number(csv_file)
            if not shard_done(p, k):
                continue
            if k in owner and owner[k].resolve() != p.resolve():
                raise ValueError(
                    f"shard {k} is in both {owner[k]} and {p}: the parts overlap (one --shard i/N run twice?)"
                )
            owner[k] = p
    shards = manifests[0]["shards"]
    missing = [k for k in range(shards) if k not in owner]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{len(missing)} of {shards} shards are in no part ({shown}): a part did not finish or was not given"
        )
    out = Path(out)
    plan = read_plan(parts[0], manifests[0])
    if out.exists() and any(out.iterdir()) and out.resolve() not in {p.resolve() for p in parts}:
        raise ValueError(f"{out}: folder is not empty; merge into a new folder")
    size, dim = manifests[0]["shard_size"], manifests[0]["dim"]
    for k, src in sorted(owner.items()):  # every part's shard checked before anything is written
        check_shard(src, k, plan[k * size : (k + 1) * size], dim)
    out.mkdir(parents=True, exist_ok=True)
    for k, src in sorted(owner.items()):
        if src.resolve() == out.resolve():
            continue
        for suffix in (".npy", ".csv"):  # .csv last: the shard is done once it is there
            _link_or_copy(src / shard_name(k, suffix), out / shard_name(k, suffix))
    if not (out / MANIFEST).exists():
        write_text(out / PLAN, "".join(p + "\n" for p in plan))
        write_text(out / MANIFEST, json.dumps(manifests[0], indent=1) + "\n")
    return open_collection(out)


def _link_or_copy(src: Path, dst: Path) -> None:
    def write(tmp: str) -> None:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)

    atomic_write(dst, write)


def iter_paths(collection: Collection) -> Iterator[tuple[int, Path]]:
    """(row, the photo's path on this machine) for every stored descriptor."""
    for i, p in enumerate(collection.paths):
        yield i, collection.root / p
