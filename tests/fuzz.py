"""Seeded fuzzing of the files the package reads: weights of every source, checkpoints, images.

tests/test_fuzz.py runs each part in a subprocess with a timeout and its address space capped, so an
interpreter crash, a hang or a decompression bomb shows as a failed test, not a dead test run:

    python tests/fuzz.py weights --seed 0 --count 30 --dir DIR
    python tests/fuzz.py images --seed 0 --count 48 --dir DIR
    python tests/fuzz.py hostile --seed 0 --count 60 --dir DIR   # crafted files (tests/fuzz_hostile.py)

Each case prints "case <what> <i>" before it runs (the last one names a crash); the last line is a
JSON summary. Mutation i of a file is drawn from random.Random(f"{seed}/{what}/{i}"): any case
reruns alone.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import resource
import struct
import sys
import traceback
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vggnet import build  # noqa: E402
from vggnet.cli import main  # noqa: E402
from vggnet.weights import digest, file_sha256, load_weights, save_weights  # noqa: E402
from weights_files import keras_layers, to_timm, write_caffemodel, write_keras_h5  # noqa: E402

MUTATIONS = ("flip", "flip-header", "overwrite", "truncate", "insert", "delete", "zero-run")
MEMORY_CAP = 6 << 30  # bytes of address space: a bomb fails with MemoryError instead of exhausting the machine


def mutate(data: bytes, rng: random.Random, header: int) -> tuple[str, bytes]:
    """(mutation name, a changed copy of `data`); `header`: how many leading bytes hold the file's structure."""
    while True:
        kind, b, n = rng.choice(MUTATIONS), bytearray(data), len(data)
        i = rng.randrange(n)
        if kind == "flip":
            for _ in range(rng.randint(1, 4)):
                j = rng.randrange(n)
                b[j] ^= 1 << rng.randrange(8)
        elif kind == "flip-header":
            b[rng.randrange(min(n, header))] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            k = min(rng.randint(1, 16), n - i)
            b[i : i + k] = bytes(rng.randrange(256) for _ in range(k))
        elif kind == "truncate":
            b = b[:i]
        elif kind == "insert":
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == "delete":
            del b[i : i + rng.randint(1, 8)]
        else:
            k = min(rng.randint(8, 512), n - i)
            b[i : i + k] = bytes(k)
        if bytes(b) != data:
            return kind, bytes(b)


def run_cli(args: list[str]) -> tuple[int | None, str]:
    """(exit status, stderr) of `vggnet ARGS` in this process; status None and a traceback if anything escaped."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return main(args), err.getvalue()
    except BaseException:  # whatever escapes `main` is the finding
        return None, err.getvalue() + traceback.format_exc()


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


# -- weights ------------------------------------------------------------------------------------


def weight_files(folder: Path) -> dict[str, Path]:
    """One small file per source (VGG A at width 1/16, 32-pixel input: a 1x1 grid into FC6)."""
    torch.manual_seed(0)
    model = build("A", width=1 / 16, num_classes=3, input_size=32)
    files = {
        "vggnet": folder / "w.safetensors",
        "torchvision": folder / "tv.pth",
        "timm": folder / "timm.pth",
        "keras": folder / "k.h5",
        "caffe": folder / "c.caffemodel",
    }
    save_weights(model, files["vggnet"], class_names=["cat", "dog", "owl"])
    torch.save(model.state_dict(), files["torchvision"])
    torch.save(to_timm(model), files["timm"])
    write_keras_h5(files["keras"], keras_layers(model), "keras2")
    write_caffemodel(files["caffe"], model, "v1")
    return files


def header_size(path: Path, data: bytes) -> int:
    """Leading bytes that hold a file's structure: a safetensors header exactly, else the first 1 KiB."""
    if path.suffix == ".safetensors":
        return 8 + struct.unpack("<Q", data[:8])[0]
    return 1024


def classify(original: Path, mutated: Path, args: list[str], out: Path, reference: tuple) -> tuple[str, str]:
    """Convert a mutated file: ("refused" | "harmless" | "silent" | "broken", detail)."""
    out.unlink(missing_ok=True)
    status, err = run_cli(["convert", str(mutated), str(out), *args])
    if status == 2:
        lines = err.strip().splitlines()
        ok = len(lines) == 1 and lines[0].startswith("vggnet convert: error: ") and mutated.name in lines[0]
        return (
            ("refused", lines[0])
            if ok and not out.exists()
            else ("broken", f"refusal not one line naming the file: {err!r}")
        )
    if status != 0:
        return "broken", err[-2000:]
    model, meta = load_weights(out)
    state, (ref_state, ref_meta) = model.state_dict(), reference
    same_meta = (meta.model, meta.class_names, meta.preprocessing, meta.include_top) == ref_meta
    return ("harmless", "") if same_weights(state, ref_state) and same_meta else ("silent", "loaded other weights")


def fuzz_weights(folder: Path, seed: int, count: int) -> dict:
    files = weight_files(folder)
    summary: dict = {}
    for source, path in files.items():
        data = path.read_bytes()
        ref_model, ref_meta = load_weights(path)
        reference = (
            ref_model.state_dict(),
            (ref_meta.model, ref_meta.class_names, ref_meta.preprocessing, ref_meta.include_top),
        )
        known = file_sha256(path)
        mutated = folder / f"mutated{path.suffix}"
        modes = {"verified": []} if source == "vggnet" else {"with --sha256": ["--sha256", known], "no reference": []}
        for mode, args in modes.items():
            counts: dict[str, int] = {}
            examples: dict[str, str] = {}
            for i in range(count):
                print(f"case {source} {mode} {i}", flush=True)
                kind, bad = mutate(data, random.Random(f"{seed}/{source}/{i}"), header_size(path, data))
                mutated.write_bytes(bad)
                outcome, detail = classify(path, mutated, args, folder / "out.safetensors", reference)
                counts[outcome] = counts.get(outcome, 0) + 1
                if outcome == "broken":  # kept for a look: .pth files differ run to run (torch's serialization id)
                    (folder / f"broken-{source}-{i}{path.suffix}").write_bytes(bad)
                if outcome in ("broken", "silent") or outcome not in examples:
                    examples.setdefault(outcome, f"#{i} {kind}: {detail}"[:400])
            summary[f"{source} ({mode})"] = {"counts": counts, "examples": examples}
    summary["checkpoint (verified)"] = fuzz_checkpoint(folder, seed, count)
    return summary


def fuzz_checkpoint(folder: Path, seed: int, count: int) -> dict:
    """Mutated last.pt files through load_checkpoint: refused in one line, or loaded with the same content."""
    from vggnet.train import load_checkpoint, rng_state, save_checkpoint

    torch.manual_seed(0)
    model = build("A", width=1 / 16, num_classes=3, input_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "position": {"epoch": 0, "step": 3},
        "ranks": [{"rng": rng_state(torch.device("cpu")), "sums": {"loss": 1.5}}],
    }  # fmt: skip
    path = folder / "ckpt" / "last.pt"
    save_checkpoint(path, state)
    data, want = path.read_bytes(), digest(load_checkpoint(path))
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    mutated = folder / "ckpt" / "mutated.pt"
    for i in range(count):
        print(f"case checkpoint {i}", flush=True)
        kind, bad = mutate(data, random.Random(f"{seed}/checkpoint/{i}"), 1024)
        mutated.write_bytes(bad)
        try:
            outcome = "harmless" if digest(load_checkpoint(mutated)) == want else "silent"
            detail = ""
        except ValueError as e:
            outcome, detail = ("refused" if "\n" not in str(e) and mutated.name in str(e) else "broken"), str(e)
        except BaseException:
            outcome, detail = "broken", traceback.format_exc()[-2000:]
        counts[outcome] = counts.get(outcome, 0) + 1
        examples.setdefault(outcome, f"#{i} {kind}: {detail}"[:400])
    return {"counts": counts, "examples": examples}


# -- images -------------------------------------------------------------------------------------


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims another size (its CRC recomputed, so only the size is wrong)."""
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + data[33:]


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose SOF0 frame header claims another size."""
    at = data.index(b"\xff\xc0") + 5
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4 :]


def image_bytes(rng: np.random.Generator) -> dict[str, bytes]:
    """Seed images of each kind: JPEG, PNG, 16-bit PNG, CMYK JPEG, palette PNG; bombs and slivers."""
    pixels = np.asarray(
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((64, 48), Image.BICUBIC)
    )

    def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format=fmt, **kw)
        return buf.getvalue()

    rgb = Image.fromarray(pixels)
    deep = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)  # mode I;16
    seeds = {
        "jpeg": encoded(rgb, "JPEG", quality=90),
        "png": encoded(rgb, "PNG"),
        "png16": encoded(deep, "PNG"),
        "cmyk": encoded(rgb.convert("CMYK"), "JPEG"),
        "palette": encoded(rgb.convert("P"), "PNG"),
    }
    specials = {
        "bomb.png": png_with_size(seeds["png"], 40000, 40000),  # 1.6 G pixels: Pillow's bomb error
        "bomb.jpg": jpeg_with_size(seeds["jpeg"], 65000, 65000),
        "bomb-warning.png": png_with_size(seeds["png"], 10000, 10000),  # 100 M pixels: only a warning, then no data
        "sliver.png": encoded(Image.new("RGB", (300000, 1), (90, 20, 200)), "PNG"),  # 300 k pixels; at Q=40: 480 M
        "empty.jpg": b"",
        "text.png": b"this is not an image\n" * 4,
    }
    return seeds, specials


def fuzz_images(folder: Path, seed: int, count: int) -> dict:
    """Mutated images through predict, evaluate, features and training's data path: every one read or skipped, counted."""
    from vggnet.configs import EvalConfig
    from vggnet.data import ImageFolder, TrainTransform, Transformed, collate_skipping, compute_stats
    from vggnet.evaluate import evaluate, predict
    from vggnet.features import extract_features

    seeds, specials = image_bytes(np.random.default_rng(seed))
    root = folder / "images"
    names = list(seeds)
    written: dict[Path, bytes] = {}
    for i in range(count):
        kind = names[i % len(names)]
        mutation, data = mutate(seeds[kind], random.Random(f"{seed}/image/{i}"), 256)
        written[root / f"c{i % 3}" / f"{i:03d}-{kind}-{mutation}.{'jpg' if kind in ('jpeg', 'cmyk') else 'png'}"] = data
    for i, (name, data) in enumerate(specials.items()):
        written[root / f"c{i % 3}" / name] = data
    for path, data in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    files = list(written)
    decodable = set()
    for path in files:
        with contextlib.suppress(Exception), Image.open(path) as im:
            im.load()
            decodable.add(path.name)

    torch.manual_seed(0)
    weights = folder / "net.safetensors"
    save_weights(build("A", width=1 / 16, num_classes=3, input_size=32), weights, extra={"scale": [40, 40]})
    cfg = EvalConfig(method="center", flip=False, batch_size=8)
    found: dict[str, dict] = {}

    def record(name: str, run) -> None:
        print(f"case images {name}", flush=True)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                read, skipped = run()
            found[name] = {"read": read, "skipped": sorted(Path(p).name for p in skipped)}
        except BaseException:
            found[name] = {"broken": traceback.format_exc()[-3000:]}
        found[name]["stderr lines"] = len(err.getvalue().splitlines())

    def run_predict():
        preds, skipped = predict([str(p) for p in files], [weights], cfg, progress=False)
        return len(preds), skipped

    def run_evaluate():
        result = evaluate([weights], str(root), cfg, progress=False)
        return result.images, result.skipped

    def run_features():
        result = extract_features([str(p) for p in files], weights, ["relu1_1"], size=32, progress=False)
        return len(result.paths), result.skipped

    def run_training_data():
        dataset = ImageFolder(root)
        stats = compute_stats(dataset, samples=len(dataset))
        data = Transformed(dataset, TrainTransform((32, 40), 32, stats), seed=0)
        loader = torch.utils.data.DataLoader(data, batch_size=4, collate_fn=collate_skipping)
        read, skipped = 0, []
        for _, y, bad in loader:
            read += len(y)
            skipped += [dataset.samples[j][0] for j in bad]
        return read, skipped

    for name, run in (
        ("predict", run_predict),
        ("evaluate", run_evaluate),
        ("features", run_features),
        ("training data", run_training_data),
    ):
        record(name, run)
    return {"files": len(files), "decodable": sorted(decodable), "all": sorted(p.name for p in files), "paths": found}


def main_(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["weights", "images", "hostile"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    torch.set_num_threads(1)
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    from fuzz_hostile import fuzz_hostile

    part = {"weights": fuzz_weights, "images": fuzz_images, "hostile": fuzz_hostile}[args.part]
    summary = part(folder, args.seed, args.count)
    print(json.dumps(summary))


if __name__ == "__main__":
    main_(sys.argv[1:])
