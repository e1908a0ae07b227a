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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write, write_text
from .photos import Photos, shard_count

FORMAT = "vggnet-embeddings"
VERSION = 1
MANIFEST = "collection.json"
PLAN = "photos.txt"
# The settings a descriptor depends on: two runs that differ in one of them made descriptors that do not compare.
SETTING_KEYS = ("weights_sha256", "config", "layer", "descriptor", "gem_p", "size", "scales")


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
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path}: format version {manifest.get('version')}, this vggnet reads {VERSION}")
    return manifest


def read_plan(emb: Path, manifest: dict[str, Any]) -> list[str]:
    """EMB/photos.txt, checked against the manifest's fingerprint."""
    paths = (emb / PLAN).read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    if photos_sha256(paths) != manifest["photos_sha256"]:
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


def read_shard_index(emb: Path, k: int) -> tuple[list[str], list[int | None]]:
    """(paths, rows) of shard k's .csv."""
    with open(emb / shard_name(k, ".csv"), encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        if next(reader, None) != ["path", "shard", "row"]:
            raise ValueError(f"{emb / shard_name(k, '.csv')}: not a shard index (expected the header path,shard,row)")
        paths, rows = [], []
        for record in reader:
            if len(record) != 3 or record[1] != str(k) or not (record[2] == "" or record[2].isdigit()):
                raise ValueError(f"{emb / shard_name(k, '.csv')}: malformed line {record}")
            paths.append(record[0])
            rows.append(int(record[2]) if record[2] else None)
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
        """Every descriptor (N, dim) float32, shard after shard."""
        dim = self.manifest["dim"]
        parts = [read_shard(self.folder, k, dim) for k in range(self.manifest["shards"])]
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


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
    extra = sorted(p.name for p in emb.glob("shard-*.csv") if not p.stem[6:].isdigit() or int(p.stem[6:]) >= shards)
    if extra:
        raise ValueError(f"{emb}: {extra[0]} is beyond the {shards} shards of {MANIFEST} (another plan's shard)")
    stored, unreadable = [], []
    for k in range(shards):
        paths, rows = read_shard_index(emb, k)
        if paths != plan[k * size : (k + 1) * size]:
            raise ValueError(f"{emb / shard_name(k, '.csv')}: holds other photos than shard {k} of the plan (overlap)")
        kept = [r for r in rows if r is not None]
        if kept != list(range(len(kept))):
            raise ValueError(f"{emb / shard_name(k, '.csv')}: rows are not 0..{len(kept) - 1} in order")
        n = read_shard(emb, k, dim).shape[0]
        if n != len(kept):
            raise ValueError(f"{emb / shard_name(k, '.npy')}: {n} rows, its index lists {len(kept)}")
        stored += [p for p, r in zip(paths, rows, strict=True) if r is not None]
        unreadable += [p for p, r in zip(paths, rows, strict=True) if r is None]
    return stored, unreadable


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
            k = int(csv_file.stem[6:]) if csv_file.stem[6:].isdigit() else -1
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
