"""A photo collection as VGG descriptors: extraction into shards, whitening, an index, search, duplicates.

The verbs share one folder on disk (`store.py`), so each can be rerun, resumed or run elsewhere:
`embed` (photos -> shards) -> `index` (shards -> whitening and FAISS index) -> `search` / `duplicates`.

- photos.py: which photos, in which order, and which shards a process takes (`--shard i/N`, torchrun, Slurm)
- descriptors.py: fc7, GAP, MAC, R-MAC, GeM, L2 and PCA whitening
- extract.py: the extraction job (loader processes, the network, shards written as they finish)
- store.py: the folder's files, resume, the check for gaps and overlaps, merging parts
- search.py: the index, nearest neighbours, near-duplicate groups
- page.py: the HTML page of a search
"""

from .descriptors import DESCRIPTORS, Whitening, fit_whitening, gap, gem, l2n, mac, pool, rmac, rmac_regions
from .extract import EmbedConfig, EmbedResult, describer, embed, load_photo
from .photos import Photos, list_photos, parse_part, shards_of_part
from .search import (
    EXACT_FLOATS,
    IndexInfo,
    Neighbour,
    build_index,
    duplicate_groups,
    find_duplicates,
    open_searcher,
    search_photo,
)
from .store import Collection, merge, open_collection

__all__ = [
    "DESCRIPTORS",
    "EXACT_FLOATS",
    "Collection",
    "EmbedConfig",
    "EmbedResult",
    "IndexInfo",
    "Neighbour",
    "Photos",
    "Whitening",
    "build_index",
    "describer",
    "duplicate_groups",
    "embed",
    "find_duplicates",
    "fit_whitening",
    "gap",
    "gem",
    "l2n",
    "list_photos",
    "load_photo",
    "mac",
    "merge",
    "open_collection",
    "open_searcher",
    "parse_part",
    "pool",
    "rmac",
    "rmac_regions",
    "search_photo",
    "shards_of_part",
]
