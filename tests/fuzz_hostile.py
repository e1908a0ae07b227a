"""Seeded variants of the hostile files of issue 33, for tests/fuzz.py's `hostile` part.

Each case draws one shape (tests/hostile_files.py) and its free parameters from
random.Random(f"{seed}/hostile/{i}"): which dataset of a Keras file reads outside it or declares
what size and type, which zip record inflates to how much, which metadata field takes which wrong
value, which Caffe blob takes which shape, how thin an image is; which file of a photo collection's folder
holds what, which frozen-cache entry is damaged how (tests/fuzz_stores.py). Every case runs through the
CLI and must end in exit 0 (where the variant is harmless) or in one stderr line naming the file, exit 2
and nothing written; a shape that can never be harmless must be refused every time, and a damaged cache
entry is said in one line and computed again. The budgets are lowered here (the files are a narrow net's),
so reaching one costs megabytes, and the peak memory of the whole run is reported: a variant that
allocates past its budget shows there.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import traceback
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fuzz_stores import collection_case, collection_outcome, frozen_case, frozen_outcome, store_files
from hostile_files import (
    caffe_reshaped_blob,
    h5_datasets,
    hostile_h5,
    rewrite_meta,
    thin_png,
    zip_bomb_pth,
)
from vggnet import build
from vggnet.cli import main
from vggnet.weights import save_weights

# The budgets the run works under, standing for full-size ones on a narrow net's files.
BUDGETS = {
    "VGGNET_MAX_WEIGHTS_BYTES": 64 << 20, "VGGNET_MAX_ACTIVATION_BYTES": 8 << 20,
    "VGGNET_MAX_FROZEN_CACHE_BYTES": 64 << 20,
}  # fmt: skip
SHAPES = (
    "h5 outside", "h5 declared", "zip bomb", "metadata", "caffe blob", "thin image",
    "collection", "collection path", "frozen cache",
)  # fmt: skip
ALWAYS_REFUSED = ("h5 outside", "h5 declared", "zip bomb")  # no variant of these is a VGG to load

# Values a crafted metadata field takes: wrong types, extremes, non-finite numbers, control characters.
WRONG_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 3, 2**31, 10**12, 10**400, 0.0, 1e-300, 1e308, math.inf, -math.inf, math.nan,
    "", "A", "D_bn", "RGB", "BGR", "conv", "x" * 5000, "a\nb", "\x1b[31mred", "a|b", [], [1, 2, 3], [0.5] * 3,
    ["a"] * 3, [0.0, 0.0, 0.0], {}, {"a": 1},
]  # fmt: skip


def leaves(doc: Any, path: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) to a value inside a JSON document, containers included."""
    found = [path] if path else []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found += leaves(value, (*path, key))
    return found


def mutate_meta(rng: random.Random) -> Any:
    """An edit for hostile_files.rewrite_meta: one field replaced, removed or nested too deep."""

    def edit(meta: dict) -> str | None:
        path = rng.choice(leaves(meta))
        parent = meta
        for key in path[:-1]:
            parent = parent[key]
        roll = rng.random()
        if roll < 0.1 and isinstance(parent, dict):
            del parent[path[-1]]
        elif roll < 0.15:
            parent[path[-1]] = json.loads("[" * 40 + "]" * 40)
        else:
            parent[path[-1]] = rng.choice(WRONG_VALUES)
        return None

    return edit


def build_case(shape: str, rng: random.Random, folder: Path, files: dict[str, Path]) -> tuple[list[str], str, Path]:
    """(CLI arguments, what was drawn, the hostile file) for one case of `shape`."""
    model, out = files["model"], folder / "out.safetensors"
    if shape == "h5 outside":
        trick = rng.choice(["external storage", "virtual dataset", "external link", "soft link"])
        with contextlib.closing(_h5(files["keras"])) as f:
            target = rng.choice(h5_datasets(f))
        path = hostile_h5(folder / "k.h5", model, trick, files["secret"], target=target)
        return ["convert", str(path), str(out)], f"{trick} at {target}", path
    if shape == "h5 declared":
        with contextlib.closing(_h5(files["keras"])) as f:
            target = rng.choice(h5_datasets(f))
        declared, dtype, ndim = (
            int(2 ** rng.uniform(10, 46)),
            rng.choice(["f2", "f4", "f8", "i1", "u8"]),
            rng.randint(1, 4),
        )
        path = hostile_h5(folder / "k.h5", model, "declared", folder, declared, target, dtype, ndim)
        return ["convert", str(path), str(out)], f"{target} declared {declared} bytes of {dtype}, {ndim}-D", path
    if shape == "zip bomb":
        record, inflated = rng.choice(["data/0", "data.pkl", "version", "byteorder"]), int(2 ** rng.uniform(10, 31))
        path = zip_bomb_pth(folder / "bomb.pth", inflated, record)
        return ["convert", str(path), str(out)], f"{record} inflating to {inflated} bytes", path
    if shape == "metadata":
        path = rewrite_meta(files["vggnet"], folder / "meta.safetensors", mutate_meta(rng))
        command = rng.choice(["predict", "view", "convert"])
        args = {
            "predict": ["predict", str(files["photo"]), "--weights", str(path), "--heatmap", str(folder / "h.png")],
            "view": ["view", str(files["photo"]), "--weights", str(path), "--out", str(folder / "v.html")],
            "convert": ["convert", str(path), str(out)],
        }[command]
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        return args, f"{command}: {header['__metadata__']['vggnet'][:300]}", path
    if shape == "caffe blob":
        layer, blob = rng.randrange(11), rng.randrange(2)  # net A: 8 convolutions and 3 inner products
        dims = [rng.choice([0, 1, 2, 3, 4, 5, 8, 9, 16, 32, 256]) for _ in range(rng.randint(1, 4))]
        path = caffe_reshaped_blob(folder / "c.caffemodel", model, layer, blob, dims)
        return ["convert", str(path), str(out)], f"layer {layer} blob {blob} shaped {dims}", path
    width, height = int(2 ** rng.uniform(1, 16)), rng.choice([1, 1, 2, 3])
    path = thin_png(folder / "thin.png", width, height)
    cam = rng.choice([["--cam", "dense"], ["--cam", "gradcam"]])
    args = ["predict", str(path), "--weights", str(files["vggnet"]), *cam, "--heatmap", str(folder / "h.png")]
    return args, f"{width}x{height} {cam[1]}", path


def _h5(path: Path) -> Any:
    import h5py

    return h5py.File(path, "r")


def outcome(args: list[str], path: Path, folder: Path) -> tuple[str, str]:
    """Run `vggnet ARGS`: ("refused" | "harmless" | "broken", detail)."""
    outputs = [folder / "out.safetensors", folder / "h.png", folder / "v.html"]
    for p in outputs:
        p.unlink(missing_ok=True)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(args)
    except BaseException:  # whatever escapes `main` is the finding
        return "broken", traceback.format_exc()[-2000:]
    lines = err.getvalue().strip().splitlines()
    if status == 0:
        return "harmless", ""
    one_line = len(lines) == 1 and path.name in lines[0]
    if status == 2 and one_line and not any(p.exists() for p in outputs):
        return "refused", lines[0]
    return (
        "broken",
        f"exit {status}, stderr {err.getvalue()[-2000:]!r}, wrote {[p.name for p in outputs if p.exists()]}",
    )


def peak_rss() -> int:
    """This program's peak resident bytes (VmHWM; ru_maxrss would count the parent's pages held before exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def fuzz_hostile(folder: Path, seed: int, count: int) -> dict:
    """`count` hostile variants, each shape in turn: counts per shape and outcome, examples, the peak memory."""
    import os

    from weights_files import keras_layers, write_keras_h5

    os.environ.update({k: str(v) for k, v in BUDGETS.items()})
    torch.manual_seed(0)
    model = build("A", width=1 / 16, num_classes=3, input_size=32)
    files = {"model": model, "keras": folder / "ref.h5", "vggnet": folder / "w.safetensors"}
    write_keras_h5(files["keras"], keras_layers(model), "keras2")
    save_weights(model, files["vggnet"], class_names=["cat", "dog", "owl"], extra={"scale": [40, 40]})
    files["secret"] = folder / "secret.txt"
    files["secret"].write_bytes(b"root:x:0:0:secret\n" * 4096)
    files["photo"] = folder / "photo.png"
    Image.effect_noise((48, 40), 60).convert("RGB").save(files["photo"])
    os.environ["VGGNET_FROZEN_CACHE"] = str(folder / "cache")
    store_files(folder, files)
    summary: dict[str, Any] = {shape: {"counts": {}, "examples": {}} for shape in SHAPES}
    summary["peak rss rises"] = []  # the cases that raised the peak by more than 32 MiB: where memory went
    summary["rss before the cases"] = peak_rss()
    for i in range(count):
        before = peak_rss()
        shape = SHAPES[i % len(SHAPES)]
        print(f"case hostile {shape} {i}", flush=True)
        rng = random.Random(f"{seed}/hostile/{i}")
        if shape == "frozen cache":
            args, drawn, path, layer = frozen_case(rng, folder, files)
            kind, detail = frozen_outcome(args, path, layer, folder, files)
        elif shape.startswith("collection"):
            args, drawn, path, must = collection_case(shape, rng, folder, files)
            kind, detail = collection_outcome(args, path, folder, files, must)
        else:
            args, drawn, path = build_case(shape, rng, folder, files)
            kind, detail = outcome(args, path, folder)
            if kind == "harmless" and shape in ALWAYS_REFUSED:
                kind, detail = "broken", "loaded"
        found = summary[shape]
        found["counts"][kind] = found["counts"].get(kind, 0) + 1
        if kind == "broken" or kind not in found["examples"]:
            found["examples"].setdefault(kind, f"#{i} {drawn}: {detail}"[:600])
        rise = peak_rss() - before
        if rise > 32 << 20:
            summary["peak rss rises"].append(f"#{i} {shape} ({drawn[:120]}): +{rise >> 20} MiB")
    summary["peak rss"] = peak_rss()
    return summary
