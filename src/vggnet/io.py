"""File output that survives a kill, and the one-line reports a user sees on stderr.

Nothing here imports the rest of vggnet, so every module can use it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[str], None], keep: str | os.PathLike[str] | None = None
) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`.

    A reader sees the old file or the new one, never half of one (a killed run included); a failed
    write leaves the old file as it was, and no temporary file (one a SIGKILL left is removed by the
    next write to `path`). `keep`: where the file being replaced stays (previous.pt).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    with _terminate_as_exit():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


# Temporary files are named .<name>.<host>-<pid>.<random>.tmp, so a later write to the same path can tell
# a dead writer's leftover (a SIGKILL, a power cut) from a live writer's file and remove it.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files an earlier write to `path` left when its process died; returns them.

    Only files of our own naming whose writer ran on this host and is gone are touched.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.{_HOST}-*.tmp"):
        pid = tmp.name[len(path.name) + len(_HOST) + 3 :].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM (a `kill`, a job scheduler's timeout) exits through Python, so `finally`
    blocks remove temporary files; outside the main thread, or with a handler already set, nothing changes."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def exit_(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _link_over(src: Path, dst: Path) -> None:
    """Make `dst` another name of `src`'s file, atomically: `dst` is always a whole file, old or new."""
    remove_stale_temporaries(dst)
    tmp = dst.with_name(f".{dst.name}.{_HOST}-{os.getpid()}.link.tmp")
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
