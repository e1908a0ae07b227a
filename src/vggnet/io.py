"""File output that survives a kill, and the one-line reports a user sees on stderr.

Nothing here imports the rest of vggnet, so every module can use it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[str], None], keep: str | os.PathLike[str] | None = None
) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    A reader sees the old file or the new one, never half of one (a killed run included); a failed
    write leaves the old file as it was. `keep`: where the file being replaced stays (previous.pt).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private (0600): give it an ordinary file's mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if keep is not None and path.exists():
            _link_over(path, Path(keep))
        os.replace(tmp, path)
        _sync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _link_over(src: Path, dst: Path) -> None:
    """Make `dst` another name of `src`'s file, atomically: `dst` is always a whole file, old or new."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:  # a filesystem without hard links: a copy does the same, slower
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so its renames survive a power cut (where the OS allows opening folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return Path(path)


def report(message: str) -> None:
    """One line to stderr, for things the user should see even in quiet mode."""
    print(message, file=sys.stderr)


def reporting_warnings(load: Callable[[], T]) -> T:
    """Call `load`, turning its warnings (an unreadable image, by path) into one plain stderr line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = load()
    for w in caught:
        report(str(w.message))
    return value


def silently(load: Callable[[], T]) -> T:
    """Call `load` with its warnings suppressed (the caller reports unreadable files itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load()


def needs(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency, or raise a one-line error saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModuleNotFoundError(
            f"{what} needs {module.split('.')[0]}, which is not installed: pip install 'vggnet[{extra}]'"
        ) from None


_told: set[str] = set()


def report_once(message: str) -> None:
    """`report(message)` the first time this process sees it; later calls say nothing."""
    if message not in _told:
        _told.add(message)
        report(message)


def optional(module: str, extra: str, skipped: str) -> Any | None:
    """Import an optional dependency, or return None after saying once on stderr what is skipped and what to install.

    `optional("matplotlib", "plots", "metrics.png not drawn")` prints, the first time only:
    metrics.png not drawn: matplotlib is not installed (pip install 'vggnet[plots]')
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        report_once(f"{skipped}: {module.split('.')[0]} is not installed (pip install 'vggnet[{extra}]')")
        return None
