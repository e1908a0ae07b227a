"""File output that survives a kill, and the one-line reports a user sees on stderr.

Nothing here imports the rest of vggnet, so every module can use it.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    A reader sees the old file or the new one, never half of one (a killed run included).
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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def optional(module: str, extra: str, skipped: str) -> Any | None:
    """Import an optional dependency, or return None after saying once on stderr what is skipped and what to install.

    `optional("matplotlib", "plots", "metrics.png not drawn")` prints, the first time only:
    metrics.png not drawn: matplotlib is not installed (pip install 'vggnet[plots]')
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        note = f"{skipped}: {module.split('.')[0]} is not installed (pip install 'vggnet[{extra}]')"
        if note not in _told:
            _told.add(note)
            report(note)
        return None
