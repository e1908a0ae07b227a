"""Downloads: a cache folder, a lock, a temporary file renamed after the hash check, Range to resume, offline and mirror.

The one place vggnet opens a network connection (STYLE.md, "Downloads are one small module"). A file is
fetched into $VGGNET_CACHE (default ~/.cache/vggnet) as `<dest>.part`, resumed with an HTTP Range request
after a cut, checked against every hash its publisher gives, and only then renamed to `<dest>`. Switches:

VGGNET_OFFLINE=1 (or HF_HUB_OFFLINE=1)  never open a connection; only files already on disk are used
VGGNET_MIRROR=URL                       fetch `URL/<file name>` instead of the publisher's URLs
VGGNET_TIMEOUT=SECONDS                  give up on a server silent this long (default 30)

Nothing here imports the rest of vggnet but `io`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .io import report

try:
    import fcntl
except ImportError:  # no POSIX locks (Windows): two processes may both download; each renames a whole file
    fcntl = None  # type: ignore[assignment]

CHUNK = 1 << 20  # bytes read per call, and the span fastai's md5_first_mib covers
ATTEMPTS = 4  # tries per URL while each try brings bytes (a cut connection resumes where it stopped)
DEFAULT_TIMEOUT = 30.0  # seconds without a byte before a server counts as stalled
TRUE = ("1", "true", "yes", "on")


class DownloadError(OSError):
    """A file that could not be had: offline, not found, refused, stalled. The message is one line."""


class HashMismatch(ValueError):
    """A file whose bytes are not the ones its publisher (or the user) named: refused, not kept."""


# -- where files go, and the switches ---------------------------------------------------------------------


def cache_root() -> Path:
    """$VGGNET_CACHE, else ~/.cache/vggnet: downloads (weights/, datasets/) and the compiled kernels' builds."""
    return Path(os.environ.get("VGGNET_CACHE") or Path.home() / ".cache" / "vggnet").expanduser()


def cache_dir(kind: str) -> Path:
    """The cache's folder for one kind of download: cache_root()/weights or cache_root()/datasets."""
    return cache_root() / kind


def offline() -> bool:
    """True when VGGNET_OFFLINE or HF_HUB_OFFLINE is set (1, true, yes, on): no connection may be opened."""
    return any(os.environ.get(v, "").strip().lower() in TRUE for v in ("VGGNET_OFFLINE", "HF_HUB_OFFLINE"))


def mirror() -> str | None:
    """The mirror base URL ($VGGNET_MIRROR) without its trailing slash, or None."""
    base = os.environ.get("VGGNET_MIRROR", "").strip()
    return base.rstrip("/") or None


def timeout() -> float:
    """Seconds a server may stay silent ($VGGNET_TIMEOUT, default 30)."""
    text = os.environ.get("VGGNET_TIMEOUT", "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise ValueError(f"VGGNET_TIMEOUT={text!r}: expected a number of seconds") from None
    return value if value > 0 else DEFAULT_TIMEOUT


def is_local_url(url: str) -> bool:
    """file:// URLs open no connection, so they are allowed offline."""
    return url.lower().startswith("file://")


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block: one process fetches, the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                report(f"vggnet: waiting for another process fetching {what}")
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# -- hashes -----------------------------------------------------------------------------------------------


def hash_text(hashes: Mapping[str, Any]) -> str:
    """The expected hash as one would check it by hand: 'sha256 397923af...' or 'md5 6437...' or 'no published hash'."""
    for kind in ("sha256", "sha256_prefix", "md5"):
        if hashes.get(kind):
            return f"{kind.replace('_prefix', '')} {hashes[kind]}" + ("..." if kind == "sha256_prefix" else "")
    return "no published hash"


def file_hashes(path: Path) -> dict[str, Any]:
    """sha256, md5, md5 of the first MiB and size of a file, in one pass."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    first, size = "", 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            if not size:
                first = hashlib.md5(chunk).hexdigest()  # the first read is the first MiB (or the whole file)
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest(), "md5_first_mib": first, "size_bytes": size}


def check_hashes(path: Path, expected: Mapping[str, Any], where: str) -> str:
    """Compare a file with every hash in `expected`; returns its sha256, or raises HashMismatch naming the first that differs."""
    found = file_hashes(path)
    for kind, want in expected.items():
        got = found["sha256"] if kind == "sha256_prefix" else found.get(kind)
        ok = got == want if kind == "size_bytes" else isinstance(got, str) and got.startswith(str(want).lower())
        if not ok:
            shown = f"{want} bytes" if kind == "size_bytes" else f"{kind.replace('_prefix', '')} {want}"
            got_text = f"{got} bytes" if kind == "size_bytes" else f"{str(got)[: max(12, len(str(want)))]}"
            raise HashMismatch(f"{where}: expected {shown}, found {got_text}")
    return found["sha256"]


# -- fetching ---------------------------------------------------------------------------------------------


def fetch(
    urls: Sequence[str],
    dest: Path,
    hashes: Mapping[str, Any],
    *,
    what: str,
    progress: bool = True,
) -> str:
    """Put the file at `dest`, from the first of `urls` (or the mirror) that serves it; returns its sha256.

    A file already at `dest` is checked, not fetched. A download goes to `dest`.part (kept after a cut, so the
    next try resumes it with Range) and is renamed to `dest` only when every hash in `hashes` matches; a
    mismatch deletes it and raises HashMismatch. With no published hash, a 64-digit sha256 that the server
    states (the Hugging Face hub's X-Linked-Etag) is checked instead. Other failures raise one-line DownloadErrors
    that say where to put the file by hand.
    """
    if dest.exists():
        return check_hashes(dest, hashes, f"{dest}: not the published file ({what})")
    base = mirror()
    sources = [f"{base}/{dest.name}"] if base else list(urls)
    hint = f"put the file from {sources[0]} ({hash_text(hashes)}) at {dest}"
    dest.parent.mkdir(parents=True, exist_ok=True)  # made even offline: it is where the message says to put the file
    if offline() and not all(is_local_url(u) for u in sources):
        raise DownloadError(f"cannot get {what}: offline (VGGNET_OFFLINE or HF_HUB_OFFLINE) and not cached; {hint}")
    part = dest.with_name(dest.name + ".part")
    reasons = []
    for url in sources:
        try:
            stated = _download(url, part, dest.name, progress)
        except DownloadError as e:
            reasons.append(str(e))
            continue
        expected = dict(hashes) or ({"sha256": stated} if stated else {})
        try:
            sha = check_hashes(part, expected, f"{url}: refused, nothing kept: the download is not the published file")
        except HashMismatch:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        return sha
    raise DownloadError(f"cannot get {what}: {'; '.join(reasons)}; {hint}")


def _download(url: str, part: Path, label: str, progress: bool) -> str | None:
    """Stream `url` into `part`, resuming what is there; returns a sha256 the server states, if any."""
    wait, stated = timeout(), None
    for _ in range(ATTEMPTS):
        offset = part.stat().st_size if part.exists() else 0
        try:
            done, stated = _attempt(url, part, offset, label, progress, wait)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url} (HTTP {e.code} {e.reason})") from None
        except urllib.error.URLError as e:
            reason = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else e.reason
            raise DownloadError(f"{url} ({_timeout_text(wait) if _is_timeout(e.reason) else reason})") from None
        except TimeoutError:
            done = None
            if (part.stat().st_size if part.exists() else 0) == offset:
                raise DownloadError(f"{url} ({_timeout_text(wait)})") from None
        except (http.client.HTTPException, ConnectionError) as e:
            done = None
            if (part.stat().st_size if part.exists() else 0) == offset:
                raise DownloadError(f"{url} (the connection failed: {type(e).__name__})") from None
        if done:
            return stated
    raise DownloadError(f"{url} (cut {ATTEMPTS} times; run again to resume from {part})")


def _attempt(url: str, part: Path, offset: int, label: str, progress: bool, wait: float) -> tuple[bool, str | None]:
    """One request; True when the whole file is in `part`. A server that ignores Range starts it afresh."""
    headers = {"User-Agent": "vggnet", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=wait)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the part already holds the whole file
            return True, None
        raise
    with response:
        status = getattr(response, "status", None) or 200
        start = offset if status == 206 and _range_start(response.headers.get("Content-Range")) == offset else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        stated = _stated_sha256(response.headers)
        with (
            open(part, "ab" if start else "wb") as f,
            tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=not progress, file=sys.stderr, leave=False,
            ) as bar,
        ):  # fmt: skip
            f.truncate(start)
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        size = part.stat().st_size
    return total is None or size >= total, stated


def _range_start(content_range: str | None) -> int | None:
    found = re.match(r"bytes (\d+)-", content_range or "")
    return int(found.group(1)) if found else None


def _stated_sha256(headers: Any) -> str | None:
    """The sha256 the Hugging Face hub states for a file it serves (X-Linked-Etag, else ETag), if it is one."""
    for key in ("X-Linked-Etag", "ETag"):
        value = (headers.get(key) or "").removeprefix("W/").strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{64}", value):
            return value
    return None


def _is_timeout(reason: Any) -> bool:
    return isinstance(reason, TimeoutError) or "timed out" in str(reason)


def _timeout_text(wait: float) -> str:
    return f"no answer for {wait:g} s; VGGNET_TIMEOUT sets the limit"
