"""Fuzzing every file the package reads (tests/fuzz.py), each part in a subprocess with a timeout.

Weights: mutated files of each source through `vggnet convert`: every mutation of a project file, of a
checkpoint, or of a foreign file with its sha256 given is refused in one line naming the file, or is
harmless (it loads bit-identical tensors and equal metadata, compared with the original). Foreign files
without a reference hash are counted too: their formats carry no checksum, so some mutations load as
other weights ("silent"), which is what --sha256 is for. Images: mutated JPEG, PNG, 16-bit, CMYK and
palette images, bomb headers and a sliver through predict, evaluate, features and the training data
path: each file read or skipped and counted, the same files skipped everywhere, no traceback.
Hostile files (issue 33): seeded variants of crafted files through convert, predict and view, each refused in
one line or harmless, the shapes that are never a VGG refused every time, in bounded memory; and of a photo
collection's folder through index, search, duplicates and merge, and of frozen-cache entries through probe
(each damaged entry said in one line and computed again).
Run with -s to see the counts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = str(Path(__file__).resolve().parent / "fuzz.py")
SRC = str(Path(__file__).resolve().parents[1] / "src")
SEED, WEIGHTS_CASES, IMAGE_CASES, HOSTILE_CASES = 0, 30, 48, 270


def start(part: str, count: int, folder: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    cmd = [sys.executable, FUZZ, part, "--seed", str(SEED), "--count", str(count), "--dir", str(folder)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen, timeout: float) -> dict:
    """The summary a fuzz part printed; a crash or a hang fails the test naming the last case started."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        last = [line for line in out.splitlines() if line.startswith("case ")][-1:]
        pytest.fail(f"fuzzing hung at {last}: {err[-2000:]}")
    last = [line for line in out.splitlines() if line.startswith("case ")][-1:]
    assert proc.returncode == 0, f"the interpreter died ({proc.returncode}) at {last}: {err[-3000:]}"
    return json.loads(out.splitlines()[-1])


@pytest.mark.slow
def test_mutated_weights_and_images_are_refused_or_skipped_never_a_crash(tmp_path):
    weights_run = start("weights", WEIGHTS_CASES, tmp_path / "weights")
    images_run = start("images", IMAGE_CASES, tmp_path / "images")
    weights, images = finish(weights_run, 300), finish(images_run, 300)

    print(
        f"\nfuzz, seed {SEED}: mutated weights files through `vggnet convert` (and checkpoints through load_checkpoint)"
    )
    for name, result in weights.items():
        counts = result["counts"]
        print(f"  {name:34s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        assert "broken" not in counts, (name, result["examples"])
        assert sum(counts.values()) == WEIGHTS_CASES
        if "no reference" not in name:  # a hash to check against: nothing loads as other weights
            assert "silent" not in counts, (name, result["examples"])
            assert counts.get("refused", 0) >= WEIGHTS_CASES * 0.9
        else:
            assert counts.get("refused", 0) > 0
    assert set(weights) == {
        "vggnet (verified)", "checkpoint (verified)",
        *(f"{s} ({m})" for s in ("torchvision", "timm", "keras", "caffe") for m in ("with --sha256", "no reference")),
    }  # fmt: skip

    everything, decodable = set(images["all"]), set(images["decodable"])
    undecodable = everything - decodable
    print(f"fuzz, seed {SEED}: {images['files']} images ({len(undecodable)} that Pillow cannot decode)")
    for name, found in images["paths"].items():
        assert "broken" not in found, (name, found.get("broken"))
        skipped = set(found["skipped"])
        print(f"  {name:14s} read {found['read']}, skipped and counted {len(skipped)}")
        assert found["read"] + len(found["skipped"]) == images["files"], name
        # Training crops only what it needs; the others also refuse the sliver, whose full rescale is a bomb.
        assert skipped == undecodable | ({"sliver.png"} if name != "training data" else set()), name
    assert {"bomb.png", "bomb.jpg", "bomb-warning.png", "empty.jpg", "text.png"} <= undecodable
    assert 0 < len(undecodable) < images["files"] - 5


@pytest.mark.slow
def test_hostile_variants_are_refused_in_one_line_in_bounded_memory(tmp_path):
    from fuzz_hostile import ALWAYS_REFUSED, SHAPES

    found = finish(start("hostile", HOSTILE_CASES, tmp_path / "hostile"), 600)
    peak, rises, start_rss = found.pop("peak rss"), found.pop("peak rss rises"), found.pop("rss before the cases")
    print(
        f"\nfuzz, seed {SEED}: {HOSTILE_CASES} hostile variants, peak memory {peak / 2**20:.0f} MiB "
        f"({start_rss / 2**20:.0f} MiB before the first: the interpreter, torch, the reference files)"
    )
    assert set(found) == set(SHAPES)
    for shape, result in found.items():
        counts = result["counts"]
        print(f"  {shape:12s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        assert "broken" not in counts, (shape, result["examples"])
        assert sum(counts.values()) == HOSTILE_CASES // len(SHAPES)
        if shape == "frozen cache":  # never refused: said, and computed again
            assert counts.get("recomputed", 0) == sum(counts.values()), (shape, result["examples"])
        elif shape in ALWAYS_REFUSED:
            assert counts.get("refused", 0) == sum(counts.values())
        else:
            assert counts["refused"] > 0
    # The budgets are lowered to 64 MiB of weights and 8 MiB of activations, and a variant within them holds a
    # few copies of what it declares; one allocating from a declared size instead of refusing takes gigabytes.
    assert peak - start_rss < 512 << 20, rises
