"""Which photos a collection holds, in a fixed order, and which of its shards one process takes.

A collection is a folder read recursively or a text file listing photos (one path a line, relative to the
list's own folder; blank lines and #-comments ignored). Either way it becomes a root folder and the sorted,
de-duplicated paths under it, so the same input on any machine gives the same list and the same shards.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..data.datasets import IMAGE_EXTENSIONS

# Unicode's control characters (category Cc): a line break would split a one-path-a-line plan, a terminal
# escape would forge what `search` and `duplicates` print. No plan holds them; none is read back from one.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Photos:
    """The photos of a collection: `root` and the paths relative to it (or absolute, from a list), sorted."""

    root: Path
    paths: list[str]

    def full(self, path: str) -> Path:
        """Where a listed photo is on this machine."""
        return self.root / path


def list_photos(source: str | os.PathLike[str]) -> Photos:
    """The photos of a folder (recursively: files with an image extension) or of a file list, sorted.

    Raises a one-line error for a missing source, an empty folder, a folder without images or an empty list.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such folder or file list")
    if source.is_dir():
        files = [p for p in source.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if not files:
            raise ValueError(f"{source}: the folder is empty")
        images = sorted({p.relative_to(source).as_posix() for p in files if p.suffix.lower() in IMAGE_EXTENSIONS})
        if not images:
            raise ValueError(f"{source}: no images among its {len(files)} file(s) ({', '.join(IMAGE_EXTENSIONS)})")
        return Photos(source.resolve(), _usable(source, images))
    lines = source.read_text(encoding="utf-8", errors="replace").splitlines()
    listed = sorted({s for s in (line.strip() for line in lines) if s and not s.startswith("#")})
    if not listed:
        raise ValueError(f"{source}: the file list names no photos (one path a line)")
    return Photos(source.resolve().parent, _usable(source, listed))


def _usable(source: Path, paths: list[str]) -> list[str]:
    """`paths`, or a one-line error for a name a plan cannot hold (a control character: a line break, an escape)."""
    bad = next((p for p in paths if CONTROL.search(p)), None)
    if bad is not None:
        raise ValueError(f"{source}: file name {bad!r} holds a control character; rename it")
    return paths


def parse_part(text: str) -> tuple[int, int]:
    """`--shard i/N` -> (i, N), 0 <= i < N; a one-line error otherwise."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/N, e.g. 0/4 for the first of four parts") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: expected 0 <= i < N")
    return i, n


def part_from_environment() -> tuple[int, int]:
    """(rank, world size) under torchrun (RANK, WORLD_SIZE) or a Slurm array (SLURM_ARRAY_TASK_ID and
    SLURM_ARRAY_TASK_COUNT); (0, 1) otherwise."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return parse_part(f"{env['RANK']}/{env['WORLD_SIZE']}")
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return parse_part(f"{int(env['SLURM_ARRAY_TASK_ID']) - first}/{env['SLURM_ARRAY_TASK_COUNT']}")
    return 0, 1


def shard_count(photos: int, shard_size: int) -> int:
    """How many shards `photos` photos make, `shard_size` to a shard (the last one may be short)."""
    return -(-photos // shard_size)


def shards_of_part(shards: int, part: tuple[int, int]) -> list[int]:
    """The shards part i of N takes: every N-th from i (round robin, so the parts stay even as shards finish)."""
    i, n = part
    return list(range(i, shards, n))
