"""What `vggnet index` writes beside the shards, read back checked: index.json, whitening.npz, index.faiss.

A collection folder may come from someone else (a shared index), so each file is checked against the
collection before it is used: index.json's fields; whitening.npz's three float64 arrays, of the shapes the
collection implies, stored uncompressed (what they declare is what is on disk) and finite; index.faiss is
parsed here before FAISS sees a byte of it. FAISS's reader allocates whatever lengths a file declares, reads
other files a file names (on-disk inverted lists), and takes the search breadth from the file; so only the
two layouts `vggnet index` writes are accepted (IndexFlatIP, IndexHNSWFlat over one), every length checked
against the collection, the HNSW graph's node ids and levels in range, and the breadth set here.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write
from .descriptors import Whitening
from .fields import read_json, shown
from .store import Collection, check_unit_rows

INDEX_JSON = "index.json"
INDEX_FAISS = "index.faiss"
WHITENING = "whitening.npz"
KINDS = ("faiss-flat-ip", "faiss-hnsw", "numpy-exact")
HNSW_LINKS = 32  # HNSW's M: neighbours per node (FAISS's recommended 16-64; recall above 0.95 at efSearch 128)
HNSW_EF_SEARCH = 128
HNSW_MAX_LEVELS = 64  # FAISS draws a node's level with probability M^-level: 64 levels is far past any collection


def fingerprint(manifest: dict[str, Any]) -> dict[str, Any]:
    """What an index depends on: the collection's photos and descriptor settings."""
    return {k: manifest[k] for k in ("photos_sha256", "shard_size", "dim")} | {"settings": manifest["settings"]}


def read_index_info(c: Collection) -> dict[str, Any]:
    """index.json, checked to describe an index of this collection as it is now (stale: a one-line error)."""
    path = c.folder / INDEX_JSON
    info = read_json(path)
    if not isinstance(info, dict) or not isinstance(info.get("collection"), dict):
        raise ValueError(f"{path}: not an index description written by `vggnet index`")
    built = info["collection"]
    if built != fingerprint(c.manifest):
        settings = built.get("settings") if isinstance(built.get("settings"), dict) else {}
        raise ValueError(
            f"{path}: built from other descriptors ({shown(settings.get('descriptor', '?'))} of "
            f"{shown(built.get('dim', '?'))} dims; the collection now holds {c.settings['descriptor']} of "
            f"{c.manifest['dim']}): run `vggnet index {c.folder}` again"
        )
    kind, vectors, dim, whitened = (info.get(k) for k in ("kind", "vectors", "dim", "whitened"))
    if kind not in KINDS:
        raise ValueError(f"{path}: kind {shown(kind)} is none of {', '.join(KINDS)}")
    if vectors != len(c.paths) or isinstance(vectors, bool):
        raise ValueError(f"{path}: {shown(vectors)} vectors for the {len(c.paths)} stored photos; index again")
    if not isinstance(whitened, bool):
        raise ValueError(f"{path}: whitened {shown(whitened)} is not true or false")
    top = c.manifest["dim"]
    if not isinstance(dim, int) or isinstance(dim, bool) or not (1 <= dim <= top if whitened else dim == top):
        raise ValueError(f"{path}: dim {shown(dim)} does not fit descriptors of {top} dims")
    return info


def write_whitening(folder: Path, w: Whitening, fitted_on: str) -> Path:
    path = folder / WHITENING

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, mean=w.mean, projection=w.projection, eigenvalues=w.eigenvalues, fitted_on=np.array(fitted_on))

    atomic_write(path, save)
    return path


def read_whitening(folder: Path, dim_in: int, dim_out: int) -> Whitening:
    """whitening.npz: a (dim_out, dim_in) projection, its mean (dim_in,) and eigenvalues (dim_out,), float64, checked."""
    path = folder / WHITENING
    shapes = {"mean": (dim_in,), "projection": (dim_out, dim_in), "eigenvalues": (dim_out,)}
    arrays = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name, shape in shapes.items():
                arrays[name] = _stored_array(path, z, name, shape)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise ValueError(f"{path}: missing, and {INDEX_JSON} says the index is whitened; index again") from None
        raise ValueError(f"{path}: unreadable ({str(e)[:200]})") from None
    for name, a in arrays.items():
        if not np.isfinite(a).all() or (name == "eigenvalues" and not (a > 0).all()):
            raise ValueError(f"{path}: {name} holds values that are not finite (or eigenvalues not positive)")
    return Whitening(arrays["mean"], arrays["projection"], arrays["eigenvalues"])


def _stored_array(path: Path, z: zipfile.ZipFile, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Member NAME.npy of an npz: stored (not deflated), a float64 header of `shape`, exactly that many bytes."""
    try:
        info = z.getinfo(name + ".npy")
    except KeyError:
        raise ValueError(f"{path}: holds no {name}") from None
    want = 8 * int(np.prod(shape))
    # np.save's header is at most a few hundred bytes here: anything longer declares more than it holds
    if info.compress_type != zipfile.ZIP_STORED or not want <= info.file_size <= want + 4096:
        raise ValueError(
            f"{path}: {name} declares {info.file_size} bytes ({'compressed' if info.compress_type else 'stored'}); "
            f"expected {shape} float64 stored ({want} bytes and a header)"
        )
    fmt = np.lib.format
    with z.open(info) as f:
        try:
            version = fmt.read_magic(f)
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"format version {version}")
            header = read(f)  # (shape, fortran_order, dtype): nothing allocated yet
        except ValueError as e:
            raise ValueError(f"{path}: {name} is not a .npy array ({str(e)[:120]})") from None
        if header[0] != shape or header[2] != np.dtype("<f8"):
            raise ValueError(f"{path}: {name} holds {header[2]} {header[0]}, expected float64 {shape}")
        data = f.read(want + 1)
    if len(data) != want:
        raise ValueError(f"{path}: {name} holds {len(data)} bytes of data, its header declares {want}")
    return np.frombuffer(data, "<f8").reshape(shape, order="F" if header[1] else "C").copy()


# -- index.faiss ------------------------------------------------------------------------------------------------


class _Reader:
    """Little-endian fields of a byte buffer, each length checked against what is left before it is sliced."""

    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.at, self.path = data, 0, path

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > len(self.data) - self.at:
            raise ValueError(f"{self.path}: {what} declares {n} bytes, {len(self.data) - self.at} are left")
        self.at += n
        return self.data[self.at - n : self.at]

    def field(self, fmt: str, what: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def vector(self, dtype: str, count: int | None, what: str) -> np.ndarray:
        """A FAISS vector: its length (uint64), then the items; `count`: the length it must have."""
        n, item = self.field("Q", what), np.dtype(dtype).itemsize
        if count is not None and n != count:
            raise ValueError(f"{self.path}: {what} holds {n} items, expected {count}")
        if n > (len(self.data) - self.at) // item:
            raise ValueError(
                f"{self.path}: {what} declares {n} items, the file holds at most {(len(self.data) - self.at) // item}"
            )
        return np.frombuffer(self.take(n * item, what), dtype)


def _header(r: _Reader, fourcc: bytes, dim: int, n: int) -> None:
    """A FAISS index header: the type's four letters, d, ntotal, two unused counts, is_trained, inner product."""
    found = bytes(r.take(4, "the index type"))
    if found != fourcc:
        raise ValueError(f"{r.path}: a FAISS index of type {found!r}, expected {fourcc!r} (what index.json names)")
    d, ntotal = r.field("i", "d"), r.field("q", "ntotal")
    r.take(16, "the header")
    trained, metric = r.field("B", "is_trained"), r.field("i", "the metric")
    if (d, ntotal, trained, metric) != (dim, n, 1, 0):
        raise ValueError(
            f"{r.path}: {ntotal} vectors of {d} dims (trained {trained}, metric {metric}); expected {n} of {dim}, "
            "trained, inner product"
        )


def check_faiss_file(path: Path, kind: str, dim: int, n: int) -> bytes:
    """The bytes of index.faiss, once parsed as the `kind` index.json names over `n` vectors of `dim` dims."""
    size = path.stat().st_size
    # the largest well-formed file: the vectors, and per node its level, offset and every link of 64 levels
    biggest = 4096 + n * (4 * dim + 12 + 4 * HNSW_LINKS * (HNSW_MAX_LEVELS + 1))
    if size > biggest:
        raise ValueError(f"{path}: {size} bytes, more than any index of {n} vectors of {dim} dims")
    data = path.read_bytes()
    r = _Reader(memoryview(data), path)
    if kind == "faiss-hnsw":
        _header(r, b"IHNf", dim, n)
        _check_hnsw(r, n)
    _header(r, b"IxFI", dim, n)
    vectors = r.vector("<f4", n * dim, "the stored vectors").reshape(n, dim)
    if r.at != len(data):
        raise ValueError(f"{path}: {len(data) - r.at} bytes after the index")
    check_unit_rows(vectors, path)
    return data


def _check_hnsw(r: _Reader, n: int) -> None:
    """The graph of an IndexHNSWFlat as `vggnet index` builds it: levels, offsets and links all in range."""
    probas = r.vector("<f8", None, "the level probabilities")
    if not 1 <= len(probas) <= HNSW_MAX_LEVELS or not ((probas >= 0) & (probas <= 1)).all():
        raise ValueError(f"{r.path}: {len(probas)} level probabilities, not 1 to {HNSW_MAX_LEVELS} in [0, 1]")
    cum = r.vector("<i4", len(probas) + 1, "the links per level").astype(np.int64)
    want = [0] + [HNSW_LINKS * (level + 2) for level in range(len(probas))]  # 2M at level 0, then M a level
    if cum.tolist() != want:
        raise ValueError(f"{r.path}: links per level {cum.tolist()[:8]}, not those of M = {HNSW_LINKS}")
    levels = r.vector("<i4", n, "the node levels").astype(np.int64)
    if n and not ((levels >= 1) & (levels < len(cum))).all():
        raise ValueError(f"{r.path}: a node level outside 1..{len(cum) - 1}")
    offsets = r.vector("<u8", n + 1, "the link offsets")
    if offsets[0] != 0 or (n and not (np.diff(offsets.astype(np.int64)) == cum[levels]).all()):
        raise ValueError(f"{r.path}: link offsets that do not follow the node levels")
    links = r.vector("<i4", int(offsets[-1]), "the links")
    if not ((links >= -1) & (links < n)).all():
        raise ValueError(f"{r.path}: a link to a node outside 0..{n - 1}")
    entry, top = r.field("i", "the entry point"), r.field("i", "the top level")
    r.take(12, "the build and search breadths")  # efConstruction, efSearch, a retired field: set on reading
    if n and not (0 <= entry < n and top == levels.max() - 1 == levels[entry] - 1):
        raise ValueError(f"{r.path}: entry point {entry} at level {top} is not the graph's top node")


def read_faiss(faiss: Any, path: Path, kind: str, dim: int, n: int) -> Any:
    """The FAISS index of a collection, its file checked first (`check_faiss_file`); HNSW searches HNSW_EF_SEARCH wide."""
    data = check_faiss_file(path, kind, dim, n)
    index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
    if kind == "faiss-hnsw":
        index.hnsw.efSearch = HNSW_EF_SEARCH  # never the file's: a search allocates a queue of that length
    return index
