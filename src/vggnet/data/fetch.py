"""Datasets by name: `imagenette` (320 px), `imagenette-160`, `cifar10`, `cifar100`, fetched once and unpacked.

The archive is downloaded and checked as weights are (`vggnet.download`, hashes from the catalogue), then
unpacked as hostile input: only plain files and folders, every path inside the destination, the number of
members and the bytes they declare bounded before anything is written. The folder appears (one rename)
only once the whole archive is unpacked, in $VGGNET_CACHE/datasets/<name>/.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from ..catalogue import Entry, closest, lookup
from ..download import cache_dir, fetch, locked

# Imagenette's archives hold about 13,400 files, CIFAR's fewer than ten: a bound far above both.
MAX_MEMBERS = 200_000
# Bytes the members declare, summed: Imagenette 320 px (JPEGs, little compressible) unpacks to about the
# size of its archive, 0.33 GiB, and CIFAR-10 to 0.17 GiB; 8 GiB leaves room without letting a bomb fill a disk.
MAX_EXTRACTED_BYTES = 8 << 30


def dataset_folder(spec: str | os.PathLike[str], progress: bool = True) -> Path:
    """A dataset folder: `spec` itself where it exists, else the catalogue dataset it names, fetched once."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    entry = lookup(str(spec), "datasets")
    if entry is None:
        near = ", ".join(closest(str(spec), "datasets"))
        raise FileNotFoundError(
            f"{spec}: no such dataset folder (or use the built-in 'digits', or a name to download: {near}, ...)"
        )
    return fetch_dataset(entry, progress)


def dataset_path(entry: Entry) -> Path:
    """Where a catalogue dataset's folder is (or will be) in the cache: $VGGNET_CACHE/datasets/<name>/<folder>."""
    root, inner = cache_dir("datasets") / entry.name, str(entry.facts.get("folder", ""))
    return root / inner if inner else root


def fetch_dataset(entry: Entry, progress: bool = True) -> Path:
    """The unpacked folder of a catalogue dataset, downloading and unpacking it on first use (under a lock)."""
    home = cache_dir("datasets")
    root, inner, folder = home / entry.name, str(entry.facts.get("folder", "")), dataset_path(entry)
    if folder.is_dir():
        return folder
    with locked(home / ".locks" / f"{entry.name}.lock", entry.name):
        if folder.is_dir():
            return folder
        if root.exists():
            raise FileExistsError(
                f"{root}: an incomplete copy of {entry.name} (no {inner}/ inside); delete it to fetch again"
            )
        archive = home / "downloads" / entry.file
        fetch(entry.urls, archive, entry.hash, what=entry.name, progress=progress)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=home))
        try:
            extract_tar(archive, staging, progress)
            if inner and not (staging / inner).is_dir():
                raise ValueError(f"{archive}: holds no {inner}/ folder; not the {entry.name} archive")
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)  # the unpacked folder is what every later use reads
    return folder


def extract_tar(archive: Path, dest: Path, progress: bool = True) -> int:
    """Unpack a (compressed) tar into `dest`, refusing links, devices, paths leaving `dest` and oversized content.

    Each member is checked before it is written and copied as bytes (no modes, owners or times are taken
    from the archive). Returns the number of files written; raises a one-line ValueError naming the member.
    """
    dest = dest.resolve()
    count, declared, files = 0, 0, 0
    try:
        with (
            tarfile.open(archive, "r:*") as tar,
            tqdm(desc=f"unpacking {archive.name}", unit=" files", disable=not progress) as bar,
        ):
            for member in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise ValueError(f"{archive}: more than {MAX_MEMBERS:,} members; refused (MAX_MEMBERS)")
                target = _inside(dest, member.name, archive)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    kind = "link" if member.issym() or member.islnk() else "device or special file"
                    raise ValueError(f"{archive}: member {member.name!r} is a {kind}; refused")
                declared += member.size
                if declared > MAX_EXTRACTED_BYTES:
                    raise ValueError(f"{archive}: members declare more than {MAX_EXTRACTED_BYTES >> 30} GiB; refused")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise ValueError(f"{archive}: member {member.name!r} cannot be read")
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                files += 1
                bar.update()
    except (tarfile.TarError, EOFError) as e:
        raise ValueError(f"{archive}: not a readable tar archive ({e})") from None
    return files


def _inside(dest: Path, name: str, archive: Path) -> Path:
    """The path a member would be written to, or a one-line error when it would leave `dest`."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or name.startswith(("/", "\\")) or ".." in parts or any(":" in p for p in parts):
        raise ValueError(f"{archive}: member {name!r} points outside the folder; refused")
    target = dest.joinpath(*[p for p in parts if p != "."]).resolve()
    if target != dest and dest not in target.parents:
        raise ValueError(f"{archive}: member {name!r} points outside the folder; refused")
    return target
