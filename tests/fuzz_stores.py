"""Seeded variants of hostile collection folders and frozen-cache entries (tests/hostile_stores.py) for fuzz_hostile.

A collection case copies a good folder (raw shards, a flat FAISS index, or a whitened HNSW one), edits one of its
files with a drawn value and runs `index`, `search` (with or without --html), `duplicates` or `merge` on it: the
edit is refused in one line naming that file, exit 2 and nothing written; where the file is not used by the
command (a shard's values under a FAISS search), or the edit is a photo path outside the root, the command may
also run (exit 0), and then its page holds nothing of a file that is not an image. A frozen-cache case damages
one cached entry of a `vggnet probe` run: the next probe says so in one line naming the file, computes the
outputs again, prints what the clean run printed and leaves a good entry; nothing in the file runs.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import random
import shutil
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hostile_stores import COLLECTION_TRICKS, FROZEN_TRICKS, faiss_fields, hostile_cache_entry, hostile_collection
from vggnet.cli import main

DEEP = "[" * 100_000 + "]" * 100_000
INDEX_TRICKS = ("whitening array", "whitening bomb", "index json", "faiss bytes", "faiss field")


def store_files(folder: Path, files: dict[str, Any]) -> None:
    """Add to `files` the reference collections and the clean probe runs the cases start from."""
    from vggnet.collection import EmbedConfig, build_index, embed

    photos = folder / "photos"
    for i in range(6):
        (photos / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.effect_noise((40 + i, 36), 40 + 10 * i).convert("RGB").save(photos / "ab"[i % 2] / f"p{i}.png")
    (photos / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # an unreadable photo: an empty row
    cfg = EmbedConfig(size=32, shard_size=4, batch=4, workers=0, device="cpu")
    refs = {name: folder / f"ref-{name}" for name in ("raw", "flat", "hnsw")}
    embed(photos, files["vggnet"], refs["raw"], cfg, progress=False)
    for name in ("flat", "hnsw"):
        shutil.copytree(refs["raw"], refs[name])
    build_index(refs["flat"])
    build_index(refs["hnsw"], whiten=True, exact_limit=1)  # HNSW from 2 vectors up
    files.update(refs=refs, query=photos / "a" / "p0.png")
    data = folder / "probe"
    for split, n in (("train", 3), ("val", 2)):
        for c, name in enumerate(("blue", "red")):
            (data / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.random.default_rng(10 * c + i).integers(0, 90, (36, 36, 3), dtype=np.uint8)
                a[..., 2 * (1 - c)] += 150
                Image.fromarray(a).save(data / split / name / f"{i}.png")
    files["probe data"], files["cache"] = data, folder / "cache"
    files["clean probe"], files["entries"] = {}, {}
    for layer in ("fc7", "relu5_2"):
        before = set(files["cache"].glob("*.pt"))
        status, out, err = run(probe_args(files, layer))
        assert status == 0 and not err, (status, err)
        entries = sorted(set(files["cache"].glob("*.pt")) - before)
        files["clean probe"][layer] = out
        files["entries"][layer] = {p: p.read_bytes() for p in entries}


def probe_args(files: dict[str, Any], layer: str) -> list[str]:
    return ["probe", str(files["probe data"]), "--weights", str(files["vggnet"]), "--layer", layer, "--scale", "36", "--quiet"]  # fmt: skip


def run(args: list[str]) -> tuple[int | None, str, str]:
    """(exit status, stdout, stderr) of `vggnet ARGS` in this process; status None, a traceback, if anything escaped."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            return main(args), out.getvalue(), err.getvalue()
    except BaseException:  # whatever escapes `main` is the finding
        return None, out.getvalue(), err.getvalue() + traceback.format_exc()


def collection_value(trick: str, rng: random.Random, emb: Path) -> Any:
    """A value for `hostile_collection(emb, trick, value)` that no good collection holds."""
    shard = np.load(emb / "shard-00000.npy", mmap_mode="r")
    rows, dim = shard.shape
    if trick == "npy shape":
        return rng.choice([(10**12, dim), (rows + 1, dim), (rows - 1, dim), (rows, dim + 1), (rows * dim,), (rows, dim, 1), (2**40, 2**20)])  # fmt: skip
    if trick == "npy dtype":
        return rng.choice(["object", "<f8", ">f4", "<f2", "<i4", "|u1", "<c8"])
    if trick == "npy truncated":
        return rng.randrange((emb / "shard-00000.npy").stat().st_size)
    if trick == "npy rows":
        return rng.choice([-3, -1, 1, 2, 5000])
    if trick == "npy values":
        return rng.choice([math.nan, math.inf, -math.inf, 1e30, 2.0, -3.0])
    if trick == "csv row":
        return rng.choice(["-1", "99", "\u00b2", "9" * 5000, "x", " 0", "1e3", ""])
    if trick == "csv shard":
        return rng.choice(["1", "-0", "00", "", "x", "\u00b2", "9" * 30])
    if trick == "csv field":
        return rng.choice([131_073, 500_000])
    if trick == "csv rows":
        return rng.choice([1, 10, 100_000])
    if trick == "csv bytes":
        return rng.choice([b"\x00", b"\xff\xfe", b'"', b"\r", b"\n\n", b","])
    if trick == "manifest field":
        return rng.choice([
            ("shards", "2"), ("shards", 10**9), ("shards", -1), ("shards", 2.0), ("dim", "64"), ("dim", 0),
            ("dim", 10**9), ("shard_size", 0), ("shard_size", -4), ("shard_size", 10**12), ("photos", -1),
            ("photos", 10**9), ("root", 5), ("root", None), ("photos_sha256", 5), ("settings", []), ("version", 2),
            ("settings.descriptor", "fc9"), ("settings.size", 0), ("settings.size", "48"), ("settings.scales", []),
            ("settings.scales", ["a"]), ("settings.scales", [0]), ("settings.gem_p", -1), ("settings.layer", 5),
            ("settings.weights", None), ("settings.config", "\x1b[2J"),
        ])  # fmt: skip
    if trick == "manifest text":
        return rng.choice(["", "{", "[]", "null", DEEP, '{"format": "vggnet-embeddings", "version": 1}', "\udcff"])
    if trick == "whitening array":
        with np.load(emb / "whitening.npz") as z:
            d, big = z["projection"].shape
            projection = z["projection"]
        return rng.choice([
            ("mean", np.zeros(big + 1)), ("mean", np.zeros(1)), ("projection", np.zeros((d, big + 1))),
            ("projection", np.zeros((d + 1, big))), ("eigenvalues", -np.ones(d)), ("mean", np.full(big, np.nan)),
            ("mean", np.array(["x"] * big, dtype=object)), ("projection", projection.astype(np.float32)),
        ])  # fmt: skip
    if trick == "whitening bomb":
        return int(2 ** rng.uniform(20, 33))
    if trick == "index json":
        return rng.choice([
            ("kind", "faiss-ivf"), ("kind", 5), ("vectors", 10**9), ("vectors", True), ("dim", 10**6), ("dim", "5"),
            ("dim", 0), ("whitened", "yes"), ("whitened", None), ("collection", 5), ("collection", {}), "", "[", "[]",
            "null", DEEP,
        ])  # fmt: skip
    if trick == "faiss bytes":
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        return rng.choice([b"", b"null", junk, b"IxFI" + junk, b"IHNf" + junk])
    fields = faiss_fields((emb / "index.faiss").read_bytes())
    name = rng.choice(sorted(fields))
    offset, fmt = fields[name]
    extremes = {"<i": [-5, 0, 10**6, 2**31 - 1], "<q": [-1, 10**12, 2**62], "<Q": [2**28, 2**36, 2**62, 0],
                "<B": [0, 2], "<d": [-1.0, math.nan, 2.0]}[fmt]  # fmt: skip
    if name.endswith("efSearch"):
        extremes = [2**26, 0, -1]
    return offset, fmt, rng.choice(extremes)


def collection_case(shape: str, rng: random.Random, folder: Path, files: dict[str, Any]) -> tuple:
    """(CLI arguments, what was drawn, the file changed, whether the command must refuse it)."""
    emb = folder / "emb"
    shutil.rmtree(emb, ignore_errors=True)
    trick = (
        "plan path" if shape == "collection path" else rng.choice([t for t in COLLECTION_TRICKS if t != "plan path"])
    )
    index_trick = trick in INDEX_TRICKS
    ref = "hnsw" if trick.startswith(("whitening", "faiss field")) else rng.choice(["flat", "hnsw"] if index_trick else ["raw", "flat", "hnsw"])  # fmt: skip
    shutil.copytree(files["refs"][ref], emb)
    shard = rng.randrange(2) if trick.startswith(("npy", "csv")) and trick != "npy truncated" else 0
    if trick == "plan path":
        value = rng.choice(["../../../etc/passwd", str(files["secret"]), "/dev/zero", "/proc/self/environ", "a/\x1b[31mred.png", "a/p\x07.png", "a/\tb.png", "b/\x9bc.png"])  # fmt: skip
    else:
        value = collection_value(trick, rng, emb)
    if trick == "faiss field" and ref == "hnsw" and value[0] < 37 and rng.random() < 0.5:
        value = (value[0] + faiss_fields((emb / "index.faiss").read_bytes())["storage d"][0] - 4, *value[1:])
    if trick == "csv shard" and value == str(shard):
        value = str(1 - shard)
    path = hostile_collection(emb, trick, value, shard)
    commands = ["search", "search --html", "duplicates"] + ([] if index_trick else ["index", "merge"])
    command = rng.choice(commands)
    args = {
        "index": ["index", str(emb)],
        "merge": ["merge", str(emb), "--out", str(folder / "merged")],
        "duplicates": ["duplicates", str(emb), "--threshold", "0.5"],
    }.get(command, ["search", str(emb), str(files["query"]), "-k", "10", "--device", "cpu"])
    if command == "search --html":
        args += ["--html", str(folder / "v.html")]
    # a shard's values are read by the commands that use the descriptors, not by a FAISS search or a merge
    reads_values = command in ("index", "duplicates") or (ref == "raw" and command.startswith("search"))
    control = trick == "plan path" and any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value)
    must = trick != "plan path" and (trick != "npy values" or reads_values) or control
    return args, f"{ref} {trick} {str(value)[:120]!r} in shard {shard}: {command}", path, must


def collection_outcome(args: list[str], path: Path, folder: Path, files: dict[str, Any], must: bool) -> tuple[str, str]:
    """("refused" | "harmless" | "broken", detail) of one collection case."""
    page, merged = folder / "v.html", folder / "merged"
    page.unlink(missing_ok=True)
    shutil.rmtree(merged, ignore_errors=True)
    status, _, err = run(args)
    lines = err.strip().splitlines()
    if status == 2 and len(lines) == 1 and path.name in lines[0] and not page.exists() and not merged.exists():
        return "refused", lines[0]
    if status == 0 and not must:
        secret = files["secret"].read_bytes()
        text = page.read_text() if page.exists() else ""
        if "root:x:0:0" in text or base64.b64encode(secret[:48]).decode() in text:
            return "broken", "the page holds the secret file's bytes"
        return "harmless", ""
    return "broken", f"exit {status}, stderr {err[-1500:]!r}, page {page.exists()}, merged {merged.exists()}"


def frozen_value(trick: str, rng: random.Random, entry: Path, marker: Path) -> Any:
    return {
        "truncated": lambda: rng.randrange(entry.stat().st_size),
        "pickle": lambda: f"touch {marker}",
        "not a dict": lambda: rng.choice(["tensor", "list", "missing", "extra"]),
        "values shape": lambda: rng.choice([1, -1, 5]),
        "values dtype": lambda: rng.choice(["float64", "float16", "bfloat16", "int64", "bool"]),
        "rows": lambda: rng.choice([-1, 1, 3, -2]),
        "values nan": lambda: rng.choice([math.nan, math.inf, -math.inf]),
        "labels": lambda: rng.choice(["shifted", "float"]),
        "readable": lambda: rng.choice(["int", "none"]),
        "zip bomb": lambda: int(2 ** rng.uniform(20, 31)),
        "legacy storage": lambda: int(2 ** rng.uniform(4, 30)),
    }[trick]()


def frozen_case(rng: random.Random, folder: Path, files: dict[str, Any]) -> tuple:
    """(CLI arguments, what was drawn, the damaged cache entry, its layer)."""
    layer = rng.choice(sorted(files["entries"]))
    for entries in files["entries"].values():  # every entry good again, then one damaged
        for p, data in entries.items():
            p.write_bytes(data)
    entry = rng.choice(sorted(files["entries"][layer]))
    trick = rng.choice(FROZEN_TRICKS)
    value = frozen_value(trick, rng, entry, folder / "ran-code")
    hostile_cache_entry(entry, trick, value)
    return probe_args(files, layer), f"{layer} {entry.name[:12]} {trick} {str(value)[:60]}", entry, layer


def frozen_outcome(args: list[str], entry: Path, layer: str, folder: Path, files: dict[str, Any]) -> tuple[str, str]:
    """("recomputed" | "broken", detail): said in one line naming the entry, the clean run's output, a good entry left."""
    status, out, err = run(args)
    lines = err.strip().splitlines()
    if (folder / "ran-code").exists():
        return "broken", "the cache file's pickle ran code"
    if status != 0 or out != files["clean probe"][layer]:
        return "broken", f"exit {status}, stdout {'same' if out == files['clean probe'][layer] else 'differs'}, stderr {err[-1500:]!r}"  # fmt: skip
    if len(lines) != 1 or entry.name not in lines[0]:
        return "broken", f"not said in one line naming the entry: {err[-600:]!r}"
    good = torch.load(io.BytesIO(files["entries"][layer][entry]), weights_only=True)
    again = torch.load(entry, weights_only=True)
    if not all(torch.equal(good[k], again[k]) for k in good):
        return "broken", "the entry left is not the computed outputs"
    return "recomputed", lines[0]
