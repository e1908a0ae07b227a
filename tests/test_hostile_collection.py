"""Files from strangers: a photo collection's folder and a frozen prefix's cache, crafted hostile (tests/hostile_stores.py).

Each collection edit is refused by the command that reads it in one line naming the file, exit 2, nothing written;
a damaged cache entry is said in one line and computed again. tests/fuzz_stores.py draws variants of the same files.
"""

import math
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from fuzz_stores import DEEP, probe_args, run, store_files
from helpers import one_line_refusal
from hostile_stores import faiss_fields, hostile_cache_entry, hostile_collection
from vggnet import build
from vggnet.weights import save_weights


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The fuzzer's reference folders: a collection of 7 planned photos in 2 shards (raw, with a flat FAISS index,
    with a whitened HNSW one) and the cache entries of two clean probes."""
    folder = tmp_path_factory.mktemp("stores")
    torch.manual_seed(0)
    files = {"vggnet": folder / "w.safetensors", "secret": folder / "secret.txt"}
    save_weights(build("A", width=1 / 16, num_classes=3, input_size=32), files["vggnet"], class_names=["a", "b", "c"])
    files["secret"].write_bytes(b"root:x:0:0:secret\n" * 64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VGGNET_FROZEN_CACHE", str(folder / "cache"))
        store_files(folder, files)
    return files


@pytest.fixture
def emb(files, tmp_path):
    def copy(ref: str):
        shutil.copytree(files["refs"][ref], tmp_path / "emb")
        return tmp_path / "emb"

    return copy


def search(files, emb, *extra):
    return ["search", str(emb), str(files["query"]), "-k", "10", "--device", "cpu", *extra]


FAISS = {"flat": "vector count", "hnsw": "first of links"}
CASES = {  # trick, value, reference folder, command, what the one line says after the file's name
    "a shard declaring 10^12 rows": ("npy shape", (10**12, 32), "raw", "index", "unreadable (mmap length is greater"),
    "a shard of pickled objects": ("npy dtype", "object", "raw", "search", "unreadable (Array can't be memory-mapped"),
    "a shard with a row its index lacks": ("npy rows", 1, "raw", "index", "4 rows, its index shard-00000.csv lists 3"),
    "a NaN descriptor": (
        "npy values",
        math.nan,
        "flat",
        "duplicates",
        "row 0 is not an L2-normalised descriptor (norm nan)",
    ),
    "a descriptor of norm 1e30": ("npy values", 1e30, "raw", "index", "row 0 is not an L2-normalised descriptor"),
    "a negative row": ("csv row", "-1", "raw", "index", "malformed line 5"),
    "a superscript digit as row": ("csv row", "\u00b2", "raw", "merge", "malformed line 5"),
    "a 200k-character path": ("csv field", 200_000, "raw", "index", "unreadable (field larger than field limit"),
    "100k rows in a shard of 4": ("csv rows", 100_000, "raw", "index", "lists more than the 4 photos of shard 0"),
    "a NUL byte in the index": ("csv bytes", b"\x00", "raw", "merge", "holds other photos than shard 0 of the plan"),
    "10^9 shards declared": ("manifest field", ("shards", 10**9), "raw", "index", "1000000000 shards, but 7 photos 4"),
    "a shard size of 0": ("manifest field", ("shard_size", 0), "raw", "merge", "shard_size 0 is not a whole number"),
    "a terminal escape as config": (
        "manifest field",
        ("settings.config", "\x1b[2J"),
        "raw",
        "search",
        "settings.config '\\x1b[2J' is not a line",
    ),
    "scales of text": ("manifest field", ("settings.scales", ["a"]), "raw", "search", "settings.scales ['a'] is not"),
    "a manifest nested 100k deep": ("manifest text", DEEP, "raw", "index", "unreadable (RecursionError"),
    "a terminal escape in a path": (
        "plan path",
        "a/\x1b]0;owned\x07.png",
        "flat",
        "duplicates",
        "line 2 holds a control character ('\\x1b')",
    ),
    "a whitening of 1 GiB deflated": (
        "whitening bomb",
        1 << 30,
        "hnsw",
        "search",
        "projection declares 1073741824 bytes (compressed)",
    ),  # fmt: skip
    "a whitening mean of 1 value": (
        "whitening array",
        ("mean", np.zeros(1)),
        "hnsw",
        "duplicates",
        "mean declares 136 bytes (stored)",
    ),  # fmt: skip
    "a whitening of pickles": (
        "whitening array",
        ("mean", np.array(["x"] * 32, dtype=object)),
        "hnsw",
        "search",
        "mean holds object (32,)",
    ),
    "an index.json nested 100k deep": ("index json", DEEP, "flat", "search", "unreadable (RecursionError"),
    "an index of 10^9 vectors": (
        "index json",
        ("vectors", 10**9),
        "flat",
        "duplicates",
        "1000000000 vectors for the 6",
    ),
    "an empty FAISS file": ("faiss bytes", b"", "flat", "search", "the index type declares 4 bytes, 0 are left"),
    "a FAISS file of text": (
        "faiss bytes",
        b"null" * 40,
        "hnsw",
        "search",
        "a FAISS index of type b'null', expected b'IHNf'",
    ),
    "2^28 floats declared": (
        "faiss field",
        ("flat", "vector count", 2**28),
        "flat",
        "search",
        "the stored vectors holds 268435456 items, expected 192",
    ),  # fmt: skip
    "a link to node 10^6": (
        "faiss field",
        ("hnsw", "first of links", 10**6),
        "hnsw",
        "search",
        "a link to a node outside 0..5",
    ),  # fmt: skip
    "an HNSW over an L2 storage": (
        "faiss field",
        ("hnsw", "storage metric", 1),
        "hnsw",
        "duplicates",
        "6 vectors of 5 dims (trained 1, metric 1)",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_collection_file_is_refused_in_one_line_naming_it(case, files, emb, tmp_path, capsys):
    trick, value, ref, command, message = CASES[case]
    folder = emb(ref)
    if trick == "faiss field":
        _, name, number = value
        offset, fmt = faiss_fields((folder / "index.faiss").read_bytes())[name]
        value = (offset, fmt, number)
    path = hostile_collection(folder, trick, value)
    args = {
        "index": ["index", str(folder)],
        "merge": ["merge", str(folder), "--out", str(tmp_path / "merged")],
        "duplicates": ["duplicates", str(folder)],
        "search": search(files, folder, "--html", str(tmp_path / "hits.html")),
    }[command]
    status, _, err = run(args)
    one_line_refusal(status, err, command, f"{path}: {message}")
    assert not (tmp_path / "merged").exists() and not (tmp_path / "hits.html").exists()


def test_the_search_breadth_is_never_the_files(files, emb):
    """efSearch is the length of a queue HNSW allocates per query: a file's own value would size that allocation."""
    from vggnet.collection import open_searcher
    from vggnet.collection.index_files import HNSW_EF_SEARCH

    folder = emb("hnsw")
    offset, fmt = faiss_fields((folder / "index.faiss").read_bytes())["efSearch"]
    hostile_collection(folder, "faiss field", (offset, fmt, 2**30))
    assert open_searcher(folder).index.hnsw.efSearch == HNSW_EF_SEARCH == 128
    status, out, err = run(search(files, folder))
    assert status == 0 and out.splitlines()[0].split()[-1] == "a/p0.png", err


@pytest.mark.parametrize("where", ["secret", "../../../../etc/passwd", "/dev/zero", "fifo"])
def test_a_path_outside_the_collection_reaches_the_page_only_as_an_image(where, files, emb, tmp_path):
    """A collection's root and paths say where its photos are, anywhere on this machine: the page reads a
    listed path only if it is a regular file, only as an image, re-encoded; a FIFO would block for ever."""
    folder = emb("flat")
    if where == "fifo":
        os.mkfifo(tmp_path / "fifo")
    value = {"secret": str(files["secret"]), "fifo": str(tmp_path / "fifo")}.get(where, where)
    hostile_collection(folder, "plan path", value)
    page = tmp_path / "hits.html"
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail(f"reading {value} blocked"))
    signal.alarm(60)
    try:
        status, out, err = run(search(files, folder, "--html", str(page)))
    finally:
        signal.alarm(0)
    assert status == 0, err
    assert value in out  # listed among the neighbours (the collection holds 6)
    text = page.read_text()
    assert "root:x:0:0" not in text and text.count("unreadable</div>") == 1
    assert text.count("data:image/jpeg;base64,") == 6  # the query and the 5 photos


def test_a_bad_part_is_refused_before_merge_writes_anything(files, emb, tmp_path):
    folder = emb("raw")
    path = hostile_collection(folder, "csv row", "99", shard=1)
    status, _, err = run(["merge", str(folder), "--out", str(tmp_path / "merged")])
    one_line_refusal(status, err, "merge", f"{path}: rows are not 0..2 in order")
    assert not (tmp_path / "merged").exists()


def test_embed_refuses_a_file_name_with_a_terminal_escape(files, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 40)).save(photos / "a\x1b[31m.png")
    status, _, err = run(["embed", str(photos), "--weights", str(files["vggnet"]), "--out", str(tmp_path / "e")])
    one_line_refusal(status, err, "embed", "file name 'a\\x1b[31m.png' holds a control character; rename it")
    assert not (tmp_path / "e").exists()


# -- the frozen prefix's cache ------------------------------------------------------------------------------------

FROZEN = {  # trick, value, what the one line says after the entry's path
    "truncated": ("truncated", 300, "not a cache file vggnet writes"),
    "a pickle that runs a command": ("pickle", "touch {marker}", "refused: its pickle would run code"),
    "a tensor, not a dict": ("not a dict", "tensor", "not the values, readable and labels tensors"),
    "one feature more": ("values shape", 1, "values are torch.float32 ({n}, 257), expected float32 ({n}, 256)"),
    "float64 values": ("values dtype", "float64", "values are torch.float64"),
    "an item more": ("rows", 1, "values are torch.float32 ({n1}, 256), expected float32 ({n}, 256)"),
    "an infinite value": ("values nan", math.inf, "values that are not finite"),
    "labels shifted": ("labels", "shifted", "labels are not the dataset's"),
    "row indices as the mask": ("readable", "int", "readable is torch.int64"),
    "a record inflating to 1 GiB": ("zip bomb", 1 << 30, "its records declare 1073742"),
    "the pre-zip format declaring 2^30 floats": ("legacy storage", 1 << 30, "not a cache file vggnet writes"),
}


@pytest.mark.parametrize("case", FROZEN)
def test_a_damaged_cache_entry_is_said_in_one_line_and_computed_again(case, files, tmp_path, monkeypatch):
    trick, value, message = FROZEN[case]
    monkeypatch.setenv("VGGNET_FROZEN_CACHE", str(files["cache"]))
    for entry, data in files["entries"]["fc7"].items():
        entry.write_bytes(data)
    entry = sorted(files["entries"]["fc7"])[0]
    good = torch.load(entry, weights_only=True)
    n = len(good["labels"])
    hostile_cache_entry(entry, trick, value.format(marker=tmp_path / "ran") if isinstance(value, str) else value)
    status, out, err = run(probe_args(files, "fc7"))
    assert status == 0 and out == files["clean probe"]["fc7"], err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"frozen cache: {entry}: {message.format(n=n, n1=n + 1)}"), err
    assert lines[0].endswith("(computing it again)") and not (tmp_path / "ran").exists()
    again = torch.load(entry, weights_only=True)
    assert all(torch.equal(good[k], again[k]) for k in good)  # the computed outputs, written over the damaged ones
    status, _, err = run(probe_args(files, "fc7"))
    assert status == 0 and err == ""  # read back without a word


def test_a_collection_that_names_its_weights_by_url_starts_no_download(files, emb, monkeypatch):
    """A shared collection.json could name any address; search fetches only what --weights names."""
    import socket

    folder = emb("raw")
    hostile_collection(folder, "manifest field", ("settings.weights", "http://127.0.0.1:9/w.safetensors"))
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("a download started"))
    status, _, err = run(search(files, folder))
    one_line_refusal(status, err, "search", f"{folder}: its weights are a URL (http://127.0.0.1:9/w.safetensors)")
