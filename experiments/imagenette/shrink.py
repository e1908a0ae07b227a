"""Copy an image folder with every photo shrunk so its shorter side is SIDE pixels (JPEG), to move it to a GPU.

The device machines take 64 MiB of files; Imagenette's 13,394 photos at 84 pixels, JPEG quality 85, are 42 MB.
Run: python experiments/imagenette/shrink.py ../shared/data/imagenette .gpudata --side 84
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

SUFFIXES = {".jpg", ".jpeg", ".png"}


def shrink(path: Path, src: Path, dst: Path, side: int, quality: int) -> str | None:
    """Write one shrunk copy under dst (same relative path); the error message for an unreadable photo."""
    out = dst / path.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = side / min(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im.resize(size, Image.BICUBIC).save(
                out.with_suffix(".jpg") if out.suffix == ".png" else out, quality=quality
            )
    except OSError as e:
        return f"{path}: skipped, unreadable ({e})"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="image folder (ROOT/split/class/photo)")
    p.add_argument("dst", type=Path, help="where the copies go (created)")
    p.add_argument("--side", type=int, default=84, help="shorter side in pixels (default: 84)")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality (default: 85)")
    args = p.parse_args(argv)
    if not args.src.is_dir():
        print(f"shrink.py: error: {args.src} is not a folder", file=sys.stderr)
        return 2
    files = sorted(f for f in args.src.rglob("*") if f.suffix.lower() in SUFFIXES)
    if not files:
        print(f"shrink.py: error: no .jpg/.jpeg/.png photos under {args.src}", file=sys.stderr)
        return 2
    with Pool() as pool:
        errors = [
            e
            for e in pool.map(
                partial(shrink, src=args.src, dst=args.dst, side=args.side, quality=args.quality), files, chunksize=64
            )
            if e
        ]
    for e in errors:
        print(e, file=sys.stderr)
    print(f"{len(files) - len(errors)} photos written under {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
