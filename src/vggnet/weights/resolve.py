"""The one resolver of a weights argument: a file, a run folder, a catalogue name or a URL, to a local file.

Every reader of weights (`load_weights`, evaluate, predict, features, view, probe, compress, convert,
export, `train --init-from`) goes through `resolve_weights`. Names (`vggnet weights list`) and URLs are
fetched once: first from where the peers keep the same file (torch hub's checkpoints, Keras's models folder,
the Hugging Face cache) when its hash matches, else downloaded (`vggnet.download`), then converted to the
project format in $VGGNET_CACHE/weights, so every later load is a project-format load with content hashes.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path

import torch

from ..catalogue import Entry, lookup, unknown
from ..download import cache_dir, check_hashes, fetch, locked
from ..model import VGG
from ..runs import weights_file
from .format import NoClassifier, Preprocessing, WeightsMeta, has_classifier, save_weights
from .integrity import check, file_sha256
from .sources import import_weights, read_weights

URL = re.compile(r"^(https?|file)://", re.IGNORECASE)
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar", ".safetensors", ".h5", ".hdf5", ".caffemodel")
HTML_START = (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")


def resolve_weights(weights: str | os.PathLike[str], *, sha256: str | None = None, progress: bool = True) -> Path:
    """A local weights file for `weights`: a file as given, a run folder's model.safetensors, or the cached
    project-format file of a catalogue name or URL (fetched, checked and converted on first use).

    `sha256` (or `weights` ending in #sha256=HEX, pip's spelling): what the file's or URL's sha256 must start with.
    """
    text, fragment = _split_hash(os.fspath(weights))
    sha256 = _checked_sha256(sha256 or fragment)
    if URL.match(text):
        return _from_url(text, sha256, progress)
    path = Path(text).expanduser()
    if path.exists():
        path = weights_file(path)
        if sha256:
            check(file_sha256(path), sha256, path, "the file")
        return path
    entry = lookup(text, "weights")
    if entry is not None:
        if sha256:
            raise ValueError(
                f"{text}: a catalogue name is checked against its publisher's hash; --sha256 is for files and URLs"
            )
        return cached_weights(entry) or _from_catalogue(entry, progress)
    if os.sep in text or "/" in text or path.suffix.lower() in FILE_SUFFIXES:
        raise FileNotFoundError(f"{text}: no such file")
    raise unknown(text, "weights", "weights file, run folder or catalogue name")


def load_weights(
    weights: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    source: str = "auto",
    *,
    verify: bool = True,
    sha256: str | None = None,
    progress: bool = True,
) -> tuple[VGG, WeightsMeta]:
    """Any weights, by file, run folder, catalogue name ("vgg16") or URL; returns (model in eval mode, metadata).

    `sha256`: what the file's (or the URL's download's) sha256 must start with; `verify`: check content hashes.
    """
    path = resolve_weights(weights, sha256=sha256, progress=progress)
    return read_weights(path, device, source, verify=verify)


def cached_weights(entry: Entry) -> Path | None:
    """The converted file of a catalogue entry if it is in the cache already, else None."""
    path = cache_dir("weights") / f"{entry.name}.safetensors"
    return path if path.is_file() else None


# -- catalogue names ------------------------------------------------------------------------------------


def _from_catalogue(entry: Entry, progress: bool) -> Path:
    """Fetch (or find at a peer), check and convert one catalogue entry, under a lock; returns the converted file."""
    folder = cache_dir("weights")
    target = folder / f"{entry.name}.safetensors"
    with locked(folder / ".locks" / f"{entry.name}.lock", entry.name):
        if target.is_file():  # another process finished it while this one waited
            return target
        raw, ours, sha = _raw_file(entry, progress)
        _convert(raw, target, entry, sha, entry.urls[0], ours)
    return target


def _raw_file(entry: Entry, progress: bool) -> tuple[Path, bool, str]:
    """(the release's file, whether it is ours to delete, its sha256): our downloads folder, a peer's cache, or the network."""
    own = cache_dir("weights") / "downloads" / entry.file
    if not own.exists():
        for peer in peer_files(entry):
            sha = _peer_matches(peer, entry)
            if sha:
                return peer, False, sha
    sha = fetch(entry.urls, own, entry.hash, what=entry.name, progress=progress)
    return own, True, sha


def peer_files(entry: Entry) -> list[Path]:
    """Where torch hub, Keras and the Hugging Face cache would keep this entry's file, where such a file exists."""
    url, name = entry.urls[0], urllib.parse.unquote(entry.urls[0].rsplit("/", 1)[-1])
    places = [Path(torch.hub.get_dir()) / "checkpoints" / name]
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    places.append(keras_home / "models" / name)
    hub = re.match(r"https://huggingface\.co/([^/]+)/([^/]+)/resolve/[^/]+/(.+)$", url)
    if hub:
        repo = _hf_cache() / f"models--{hub.group(1)}--{hub.group(2)}" / "snapshots"
        places += sorted(repo.glob(f"*/{hub.group(3)}")) if repo.is_dir() else []
    return [p for p in places if p.is_file()]


def _hf_cache() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, $HF_HOME/hub, or ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def _peer_matches(peer: Path, entry: Entry) -> str | None:
    """The sha256 of a peer's file when it is the published one, else None (it is then left alone and downloaded).

    Without a published hash, a Hugging Face cache file is checked against the sha256 its blob is named by.
    """
    expected = dict(entry.hash)
    blob = peer.resolve().name
    if not expected and re.fullmatch(r"[0-9a-f]{64}", blob):
        expected = {"sha256": blob}
    if not expected:
        return None
    try:
        return check_hashes(peer, expected, str(peer))
    except (ValueError, OSError):
        return None


def _convert(raw: Path, target: Path, entry: Entry, sha: str, url: str, ours: bool) -> None:
    """Import the release's file into the project format at `target`, with the catalogue's preprocessing.

    The file must hold the configuration the catalogue names; a features-only entry keeps no classifier.
    A file that is not what it should be is deleted (when it is ours) and named in a one-line error.
    """
    f = entry.facts
    pre = f.get("preprocessing") or {}
    preprocessing = Preprocessing(pre["color"], pre["scale"], pre["mean"], pre["std"]) if pre else None
    try:
        _refuse_html(raw)
        model, meta = import_weights(raw, preprocessing=preprocessing, verify=False)
        cfg = model.cfg
        if "arch" in f and (cfg.arch, cfg.batch_norm) != (f["arch"], f.get("batch_norm", False)):
            raise ValueError(
                f"{raw}: holds configuration {cfg.display_name()}, but the catalogue's {entry.name} is {f['arch']}"
                + ("_bn" if f.get("batch_norm") else "")
            )
    except (ValueError, OSError) as e:
        if ours:
            raw.unlink(missing_ok=True)
        raise ValueError(f"{entry.name}: {e}; nothing kept" if ours else f"{entry.name}: {e}") from None
    if not f.get("include_top", True) and has_classifier(model):
        model.classifier = NoClassifier()  # torchvision's vgg16_features: its classifier holds no trained values
    extra = {**meta.extra, "file_sha256": sha, "catalogue": entry.name, "url": url, "publisher": entry.publisher}
    save_weights(model, target, preprocessing=meta.preprocessing, source=meta.source, extra=extra)
    if ours:
        raw.unlink(missing_ok=True)  # the converted file is what every later load reads


# -- URLs -----------------------------------------------------------------------------------------------


def _from_url(url: str, sha256: str | None, progress: bool) -> Path:
    """Download a URL's weights once (checked against `sha256` when given, else by their format) and convert them."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]) or "weights"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "weights"
    key = hashlib.sha256(f"{url}#{sha256 or ''}".encode()).hexdigest()[:12]
    folder = cache_dir("weights") / "urls"
    target = folder / f"{key}-{Path(name).stem}.safetensors"
    if target.is_file():
        return target
    hashes = {} if not sha256 else {"sha256" if len(sha256) == 64 else "sha256_prefix": sha256}
    entry = Entry(name=url, kind="weights", file=f"{key}-{name}", urls=(url,), hash=hashes)
    with locked(folder / ".locks" / f"{key}.lock", url):
        if target.is_file():
            return target
        raw = cache_dir("weights") / "downloads" / entry.file
        sha = fetch([url], raw, hashes, what=name, progress=progress)
        _convert(raw, target, entry, sha, url, ours=True)
    return target


def _split_hash(text: str) -> tuple[str, str | None]:
    """('https://.../f.pth', 'abc...') from 'https://.../f.pth#sha256=abc...' (pip's spelling; files too); else (text, None)."""
    found = re.match(r"^(.*)#sha256=([0-9A-Za-z]*)$", text)
    return (found.group(1), found.group(2)) if found else (text, None)


def _checked_sha256(sha256: str | None) -> str | None:
    if sha256 and not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256):
        raise ValueError(f"sha256 {sha256!r}: expected 8 to 64 hexadecimal digits")
    return sha256.lower() if sha256 else None


def _refuse_html(path: Path) -> None:
    """A one-line error when a server sent a web page (a login or error page) where weights were expected."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith(HTML_START) or b"<html" in head:
        raise ValueError("the server sent a web page (HTML), not weights")
