"""Hostile files of what vggnet keeps on disk between runs: a photo collection's folder, a frozen prefix's cache.

Both may come from someone else (a shared index, a cache folder others write to), so each reader of them
is fed these, by its tests and by the fuzzer (tests/fuzz_hostile.py), which draws their free values.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hostile_files import zip_bomb_pth

# -- a photo collection's folder (vggnet embed | index) ---------------------------------------------------------

# What a collection folder from someone else can hold, as edits of a good one (tests/fuzz_hostile.py draws
# the `value`s). Where a file is checked against another (photos.txt against collection.json's fingerprint),
# the crafter recomputes what it must, as anyone can.
COLLECTION_TRICKS = (
    "npy shape", "npy dtype", "npy truncated", "npy rows", "npy values",
    "csv row", "csv shard", "csv field", "csv rows", "csv bytes",
    "manifest field", "manifest text", "plan path",
    "whitening array", "whitening bomb", "index json", "faiss bytes", "faiss field",
)  # fmt: skip


def npy_bytes(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
    """A version 1.0 .npy file declaring `shape` of `descr`, followed by `data` whatever its length."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def _csv_lines(path: Path) -> list[list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _write_csv(path: Path, lines: list[list[str]]) -> None:
    import csv

    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(lines)
    path.write_text(text.getvalue(), encoding="utf-8", errors="surrogateescape")


def _deflated_npy(inflated: int) -> bytes:
    """A zip member's body: a float64 .npy header declaring `inflated` bytes, then that many zeros, deflated."""
    header = npy_bytes((inflated // 8,), "<f8", b"")
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = min(16 << 20, inflated)
    block = squeeze.compress(header + bytes(chunk)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    rest = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = rest.compress(bytes(chunk)) + rest.flush(zlib.Z_FULL_FLUSH)
    return block + tail * (inflated // chunk - 1) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def hostile_collection(emb: Path, trick: str, value: Any = None, shard: int = 0) -> Path:
    """Edit the collection folder `emb` (a copy of a good one) in place by `trick`; returns the file it changed.

    npy *: shard `shard`'s descriptors declare shape `value`, are of dtype `value` ("object" pickles), are cut
    to `value` bytes, hold `value` rows more (or fewer), or hold `value` (NaN, 1e30) in one entry. csv *: its
    index gets `value` as a row or shard number, a path `value` characters long, `value` extra rows, or the
    bytes `value` inserted. manifest field: `value` = (key, new) with "settings." keys inside settings;
    manifest text: collection.json becomes `value`. plan path: the shard's first readable photo's path becomes
    `value` in photos.txt and the index, the fingerprints recomputed. whitening array: `value` = (name, array) replaced in
    whitening.npz; whitening bomb: its projection a deflated member inflating to `value` bytes. index json:
    `value` = (key, new) or the text; faiss bytes: index.faiss becomes `value`; faiss field: `value` =
    (byte offset, struct format, number) written over index.faiss.
    """
    import hashlib
    import zipfile

    npy, index = emb / f"shard-{shard:05d}.npy", emb / f"shard-{shard:05d}.csv"
    if trick.startswith("npy"):
        x = np.load(npy)
        if trick == "npy shape":
            data = npy_bytes(value, "<f4", x.tobytes())
        elif trick == "npy dtype":
            array = np.array([{"row": 0}] * len(x), dtype=object) if value == "object" else x.astype(value)
            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=True)
            data = buf.getvalue()
        elif trick == "npy truncated":
            data = npy.read_bytes()[:value]
        elif trick == "npy rows":
            rows = np.concatenate([x, x[:1].repeat(value, 0)]) if value > 0 else x[:value]
            data = npy_bytes(rows.shape, "<f4", rows.tobytes())
        else:
            x = x.copy()
            x[0, len(x[0]) // 2] = value
            data = npy_bytes(x.shape, "<f4", x.tobytes())
        npy.write_bytes(data)
        return npy
    if trick.startswith("csv"):
        lines = _csv_lines(index)
        if trick == "csv row":
            lines[-1][2] = value
        elif trick == "csv shard":
            lines[-1][1] = value
        elif trick == "csv field":
            lines[-1][0] = "x" * value
        elif trick == "csv rows":
            lines += [lines[-1]] * value
        if trick != "csv bytes":
            _write_csv(index, lines)
        else:
            data = index.read_bytes()
            index.write_bytes(data[: len(data) // 2] + value + data[len(data) // 2 :])
        return index
    manifest_path = emb / "collection.json"
    manifest = json.loads(manifest_path.read_text())
    if trick == "manifest field":
        key, new = value
        (manifest["settings"] if key.startswith("settings.") else manifest)[key.removeprefix("settings.")] = new
        manifest_path.write_text(json.dumps(manifest))
        return manifest_path
    if trick == "manifest text":
        manifest_path.write_text(value, encoding="utf-8", errors="surrogateescape")
        return manifest_path
    if trick == "plan path":
        plan = (emb / "photos.txt").read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        old = next(line[0] for line in _csv_lines(index)[1:] if line[2])  # the shard's first readable photo
        k = plan.index(old)
        plan[k] = value
        (emb / "photos.txt").write_text("".join(p + "\n" for p in plan), encoding="utf-8", errors="surrogateescape")
        _write_csv(index, [[value if cell == old else cell for cell in line] for line in _csv_lines(index)])
        h = hashlib.sha256()
        for p in plan:
            h.update(p.encode("utf-8", "surrogateescape") + b"\n")
        manifest_path.write_text(json.dumps({**manifest, "photos_sha256": h.hexdigest()}))
        if (emb / "index.json").exists():  # the index's record of the collection, made to match
            info = json.loads((emb / "index.json").read_text())
            info["collection"]["photos_sha256"] = h.hexdigest()
            (emb / "index.json").write_text(json.dumps(info))
        return emb / "photos.txt"
    if trick.startswith("whitening"):
        path = emb / "whitening.npz"
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        if trick == "whitening array":
            arrays[value[0]] = value[1]
            with open(path, "wb") as f:
                _savez_any(f, arrays)
        else:
            with zipfile.ZipFile(path, "w") as z:
                for name, array in arrays.items():
                    if name != "projection":
                        buf = io.BytesIO()
                        np.save(buf, array)
                        z.writestr(name + ".npy", buf.getvalue())
            _append_deflated(path, "projection.npy", _deflated_npy(value), value)
        return path
    if trick == "index json":
        path = emb / "index.json"
        if isinstance(value, str):
            path.write_text(value)
        else:
            path.write_text(json.dumps({**json.loads(path.read_text()), value[0]: value[1]}))
        return path
    path = emb / "index.faiss"
    if trick == "faiss bytes":
        path.write_bytes(value)
    else:
        data = bytearray(path.read_bytes())
        offset, fmt, number = value
        data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, number)
        path.write_bytes(bytes(data))
    return path


def _savez_any(f: Any, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, object arrays (pickles) included: a stranger's file is written however it likes."""
    import zipfile

    with zipfile.ZipFile(f, "w") as z:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(array), allow_pickle=True)
            z.writestr(name + ".npy", buf.getvalue())


def _append_deflated(path: Path, name: str, body: bytes, size: int) -> None:
    """Add to a zip a deflated member `name` whose stored body is `body` and whose declared size is `size` (CRC 0)."""
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    count, central_size, central_at = struct.unpack("<HII", data[end + 10 : end + 20])
    central, local = data[central_at : central_at + central_size], data[:central_at]
    offset = len(local)
    size32 = min(size, 0xFFFFFFFF)
    fields = (20, 0, 8, 0, 0, 0, len(body), size32, len(name), 0)
    local += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + name.encode() + body
    central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, offset) + name.encode()
    tail = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count + 1, count + 1, len(central), len(local), 0)
    path.write_bytes(bytes(local + central + tail))


# -- a frozen prefix's cached outputs (vggnet.frozen) -------------------------------------------------------------

FROZEN_TRICKS = (
    "truncated", "pickle", "not a dict", "values shape", "values dtype", "rows", "values nan", "labels",
    "readable", "zip bomb", "legacy storage",
)  # fmt: skip


class _Calls:
    """Pickles as a call of `function(*args)`: what a file that runs code when loaded holds."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return self.function, self.args


def hostile_cache_entry(path: Path, trick: str, value: Any = None) -> Path:
    """Rewrite the good cache entry at `path` ({"values", "readable", "labels"}) by `trick`.

    truncated: cut to `value` bytes; pickle: a file whose pickle calls os.system(`value`); not a dict: a
    tensor, a list, a dict lacking "labels" or with one key more (`value`); values shape: values reshaped
    with `value` more features per item; values dtype: values of dtype `value`; rows: `value` items more (or
    fewer) in all three; values nan: `value` in a readable item's values; labels: labels "shifted" or "float";
    readable: "int" (indices, not a mask) or "none"; zip bomb: a record inflating to `value` bytes; legacy
    storage: the pre-zip format declaring a storage of `value` floats.
    """
    import os

    good = torch.load(path, weights_only=True)
    v, r, y = good["values"], good["readable"], good["labels"]
    if trick == "truncated":
        path.write_bytes(path.read_bytes()[:value])
        return path
    if trick == "zip bomb":
        return zip_bomb_pth(path, value)
    if trick == "legacy storage":
        torch.save({"values": torch.zeros(3, 5)}, path, _use_new_zipfile_serialization=False)
        data = bytearray(path.read_bytes())
        at = data.index(b"K\x0fN")  # the storage's element count, 15, as a one-byte int
        data[at : at + 2] = b"J" + struct.pack("<i", value)
        path.write_bytes(bytes(data))
        return path
    saved: Any = dict(good)
    if trick == "pickle":
        saved = {**good, "labels": _Calls(os.system, value)}
    elif trick == "not a dict":
        saved = {"tensor": v, "list": [v, r, y], "missing": {"values": v, "readable": r}}.get(value, {**good, value: y})
    elif trick == "values shape":
        saved["values"] = torch.zeros(len(v), v[0].numel() + value) if v[0].numel() + value > 0 else v.flatten()
    elif trick == "values dtype":
        saved["values"] = v.to(getattr(torch, value))
    elif trick == "rows":
        saved = {k: torch.cat([t, t[:value]]) if value > 0 else t[:value] for k, t in good.items()}
    elif trick == "values nan":
        saved["values"] = v.clone()
        saved["values"].view(len(v), -1)[int(r.nonzero()[0]), 0] = value
    elif trick == "labels":
        saved["labels"] = (y + 1) % (int(y.max()) + 1) if value == "shifted" else y.float()
    elif trick == "readable":
        saved["readable"] = r.nonzero().flatten() if value == "int" else torch.zeros_like(r)
    torch.save(saved, path)
    return path


def faiss_fields(data: bytes) -> dict[str, tuple[int, str]]:
    """Byte offset and struct format of each field of an IndexFlatIP or IndexHNSWFlat file (FAISS's layout)."""
    fields = {"d": (4, "<i"), "ntotal": (8, "<q"), "is_trained": (32, "<B"), "metric": (33, "<i")}
    at = 37
    if data[:4] == b"IHNf":
        for name, item in (("probas", 8), ("links per level", 4), ("levels", 4), ("offsets", 8), ("links", 4)):
            count = struct.unpack_from("<Q", data, at)[0]
            fields[f"{name} count"], fields[f"first of {name}"] = (
                (at, "<Q"),
                (at + 8, {"probas": "<d"}.get(name, {4: "<i", 8: "<q"}[item])),
            )
            at += 8 + count * item
        for name in ("entry point", "top level", "efConstruction", "efSearch"):
            fields[name], at = (at, "<i"), at + 4
        fields.update({f"storage {k}": (at + 4 + off, fmt) for k, (off, fmt) in faiss_fields(data[at + 4 :]).items()})
        return fields
    return {**fields, "vector count": (37, "<Q")}
