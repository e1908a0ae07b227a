"""`index`, `search` and `duplicates` over a collection's descriptors.

The index is FAISS's (the optional extra `collection`) where it is installed: exact inner product
(IndexFlatIP) up to EXACT_FLOATS stored floats, HNSW above (docs/collections.md says why there). Without FAISS
the search is exact, in numpy, over the shards. Descriptors are L2-normalised, so scores are cosine
similarities and the distance printed is the Euclidean one between unit vectors, sqrt(2 - 2 cos).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write, optional, write_text
from .descriptors import Whitening, fit_whitening
from .index_files import (
    HNSW_EF_SEARCH,
    HNSW_LINKS,
    INDEX_FAISS,
    INDEX_JSON,
    WHITENING,
    fingerprint,
    read_faiss,
    read_index_info,
    read_whitening,
    write_whitening,
)
from .store import Collection, open_collection, same_plan

# Up to this many stored floats (vectors x dimensions) a query scans them all (IndexFlatIP): exact, and the
# scan's time grows with the floats read, so this bounds the time of one query; beyond, HNSW answers in about
# log(N) steps. 128 M floats: 250,000 vectors of 512 dims, 31,250 fc7 vectors of 4096. docs/collections.md
# derives the number from benchmarks/results/collection.md.
EXACT_FLOATS = 128 * 2**20


@dataclass
class IndexInfo:
    """What `vggnet index` built."""

    folder: Path
    vectors: int
    dim: int
    kind: str  # "faiss-flat-ip" | "faiss-hnsw" | "numpy-exact"
    whitened: bool
    note: str = ""


def build_index(
    emb: str | os.PathLike[str],
    whiten: bool = False,
    whiten_from: str | os.PathLike[str] | None = None,
    whiten_dim: int | None = None,
    exact_limit: int | None = None,
) -> IndexInfo:
    """Check the collection (every shard there, none overlapping), optionally fit PCA whitening on it or on
    the collection `whiten_from`, and build the search index beside the shards: exact up to `exact_limit`
    vectors (default: EXACT_FLOATS / dimensions), HNSW above."""
    c = open_collection(emb)
    x = c.descriptors()
    whitened = whiten or whiten_from is not None
    fitted_on = ""
    if whitened:
        source = c
        if whiten_from is not None:
            source = open_collection(whiten_from)
            differs = same_plan(
                {**c.manifest, "photos_sha256": "", "shard_size": 0},
                {**source.manifest, "photos_sha256": "", "shard_size": 0},
            )
            if differs:
                raise ValueError(
                    f"--whiten-from {whiten_from}: made with another {differs.removeprefix('the ')} than {emb}"
                )
        w = fit_whitening(source.descriptors(), whiten_dim)
        fitted_on = str(source.folder.resolve())
        write_whitening(c.folder, w, fitted_on)
        x = w.apply(x)
    faiss = optional("faiss", "collection", "exact numpy search instead of a FAISS index")
    index_path = c.folder / INDEX_FAISS
    note = ""
    exact_limit = EXACT_FLOATS // x.shape[1] if exact_limit is None else exact_limit
    if faiss is None:
        kind = "numpy-exact"
        note = "FAISS is not installed: searches scan every descriptor with numpy (exact; pip install 'vggnet[collection]')"
        if index_path.exists():
            index_path.unlink()
    else:
        index = _faiss_index(faiss, x, exact_limit)
        kind = "faiss-flat-ip" if x.shape[0] <= exact_limit else "faiss-hnsw"
        atomic_write(index_path, lambda tmp: faiss.write_index(index, tmp))
    info = {
        "kind": kind,
        "vectors": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "whitened": whitened,
        "whitening_fitted_on": fitted_on,
        "collection": fingerprint(c.manifest),
    }
    write_text(c.folder / INDEX_JSON, json.dumps(info, indent=1) + "\n")
    if not whitened and (c.folder / WHITENING).exists():
        (c.folder / WHITENING).unlink()
    return IndexInfo(c.folder, int(x.shape[0]), int(x.shape[1]), kind, whitened, note)


def _faiss_index(faiss: Any, x: np.ndarray, exact_limit: int) -> Any:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[0] <= exact_limit:
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
    index.add(x)
    return index


@dataclass
class Searcher:
    """A collection ready to answer queries: its descriptors (whitened as indexed) and its index, if any."""

    collection: Collection
    whitening: Whitening | None
    index: Any  # a FAISS index, or None: exact numpy search over `vectors`
    vectors: np.ndarray | None

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        """Query descriptors as the collection's were indexed (whitened or not), float32."""
        q = np.asarray(queries, np.float32)
        return self.whitening.apply(q) if self.whitening is not None else q

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities (Q, k), rows (Q, k)) of the k nearest descriptors to each prepared query, best first."""
        k = min(k, len(self.collection.paths))
        if self.index is not None:
            sims, rows = self.index.search(np.ascontiguousarray(queries, np.float32), k)
            return sims, rows
        sims = queries @ self.vectors.T  # (Q, N)
        rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, rows, axis=1), rows


def open_searcher(emb: str | os.PathLike[str], descriptor: str | None = None) -> Searcher:
    """The collection and its index, checked to belong together (an index of another descriptor or of the
    collection before it was re-embedded is a one-line error); without an index, exact search on the raw
    descriptors."""
    c = open_collection(emb)
    if descriptor is not None and descriptor != c.settings["descriptor"]:
        raise ValueError(
            f"{emb}: indexed descriptors are {c.settings['descriptor']}, not {descriptor}; embed again with --descriptor {descriptor}"
        )
    info_path = c.folder / INDEX_JSON
    if not info_path.exists():
        return Searcher(c, None, None, c.descriptors())
    info = read_index_info(c)
    whitening = read_whitening(c.folder, c.manifest["dim"], info["dim"]) if info["whitened"] else None
    if info["kind"].startswith("faiss"):
        from ..io import needs

        faiss = needs("faiss", "collection", f"{info_path} (a FAISS index)")
        index = read_faiss(faiss, c.folder / INDEX_FAISS, info["kind"], info["dim"], len(c.paths))
        return Searcher(c, whitening, index, None)
    x = c.descriptors()
    return Searcher(c, whitening, None, whitening.apply(x) if whitening is not None else x)


@dataclass
class Neighbour:
    rank: int
    path: str  # as listed in the collection (relative to its root)
    similarity: float  # cosine
    distance: float  # sqrt(2 - 2 cos): Euclidean between unit vectors


def neighbours(searcher: Searcher, query: np.ndarray, k: int) -> list[Neighbour]:
    """The k nearest photos to one raw query descriptor (D,), best first."""
    sims, rows = searcher.search(searcher.prepare(query[None]), k)
    return [
        Neighbour(i + 1, searcher.collection.paths[r], float(s), float(np.sqrt(max(0.0, 2 - 2 * float(s)))))
        for i, (s, r) in enumerate(zip(sims[0], rows[0], strict=True))
        if r >= 0
    ]


# -- near duplicates ----------------------------------------------------------------------------------------


def duplicate_groups(x: np.ndarray, threshold: float, block: int = 1024) -> list[list[int]]:
    """Groups (connected components) of rows whose cosine similarity is at least `threshold`, each sorted,
    groups ordered by their first row; singletons left out. Exact: every pair, `block` rows at a time."""
    if not -1 <= threshold <= 1:
        raise ValueError(f"--threshold {threshold}: a cosine similarity between -1 and 1 (e.g. 0.9)")
    n = x.shape[0]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    x = np.asarray(x, np.float32)
    for start in range(0, n, block):
        sims = x[start : start + block] @ x.T  # (b, N)
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows + start, cols, strict=True):
            if c > r:
                a, b = find(int(r)), find(int(c))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def find_duplicates(emb: str | os.PathLike[str], threshold: float) -> list[list[str]]:
    """Near-duplicate groups of a collection by path: photos whose descriptors' cosine is at least `threshold`
    (on the descriptors as indexed: whitened if the index is)."""
    s = open_searcher(emb)
    x = s.vectors if s.vectors is not None else s.prepare(s.collection.descriptors())
    return [[s.collection.paths[i] for i in g] for g in duplicate_groups(x, threshold)]


# -- a photo as the query -------------------------------------------------------------------------------------


def search_photo(
    emb: str | os.PathLike[str],
    query: str | os.PathLike[str],
    k: int = 10,
    weights: str | os.PathLike[str] | None = None,
    descriptor: str | None = None,
    device: str = "auto",
) -> tuple[Searcher, list[Neighbour]]:
    """The k photos of the collection nearest to the photo `query`, described as the collection was (same
    weights, layer, descriptor, size and scales; `weights` overrides where they were if they moved)."""
    from ..weights.resolve import URL
    from .extract import describer, load_photo, settings_from

    if k < 1:
        raise ValueError(f"-k {k}: ask for at least one neighbour")
    searcher = open_searcher(emb, descriptor)
    settings = searcher.collection.settings
    path = Path(query)
    if not path.is_file():
        raise FileNotFoundError(f"{query}: no such file")
    cfg = settings_from(searcher.collection.manifest, device=device)
    if weights is None and URL.match(str(settings["weights"])):  # a shared collection must not choose what is fetched
        raise ValueError(
            f"{emb}: its weights are a URL ({settings['weights']}); a collection's own files never start a download: "
            "pass --weights (the URL itself if you trust it)"
        )
    net = describer(weights or settings["weights"], cfg)
    if net.settings["weights_sha256"] != settings["weights_sha256"]:
        raise ValueError(
            f"{weights or settings['weights']}: other weights than {emb} was embedded with ({settings['config']})"
        )
    try:
        x = load_photo(path, net.size)
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(
            f"{query}: not a readable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    return searcher, neighbours(searcher, net(x[None]).numpy()[0], k)
