"""Commands over a photo collection: `embed`, `merge`, `index`, `search`, `duplicates` (docs/collections.md)."""

from __future__ import annotations

import argparse
import sys

from .options import UsageError, add_dataclass_args, dataclass_from_args


def cmd_embed(args: argparse.Namespace) -> int:
    from ..collection import EmbedConfig, embed

    cfg = dataclass_from_args(EmbedConfig, args)
    if cfg.shard and args.merge:
        raise UsageError("--merge joins finished parts; give --shard to the embed runs, not to the merge")
    if args.merge:
        return cmd_merge(argparse.Namespace(parts=args.source, out=args.out))
    if len(args.source) != 1:
        raise UsageError("embed takes one DIR or FILELIST (several folders are --merge's parts)")
    if not args.weights:
        raise UsageError("embed needs --weights (a weights file, run folder, catalogue name such as vgg16, or URL)")
    r = embed(args.source[0], args.weights, args.out, cfg, progress=not args.quiet)
    part = f" (part {r.part[0]}/{r.part[1]})" if r.part[1] > 1 else ""
    print(
        f"{r.folder}: {r.written} shard(s) written{part}, {r.done_before} already done; {r.embedded} photos described "
        f"in {r.seconds:.1f} s; {len(r.unreadable)} unreadable skipped"
    )
    if r.unreadable:
        print(f"{len(r.unreadable)} unreadable images skipped: {', '.join(r.unreadable[:20])}", file=sys.stderr)
    if not r.complete:
        print(f"{r.folder}: not complete yet: other parts hold shards still missing (`vggnet index` checks)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..collection import merge

    c = merge(args.out, args.parts)
    print(f"{c.folder}: {c.manifest['shards']} shards from {len(args.parts)} part(s), {len(c.paths)} photos")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from ..collection import build_index

    info = build_index(args.emb, whiten=args.whiten, whiten_from=args.whiten_from, whiten_dim=args.whiten_dim)
    if info.note:
        print(info.note, file=sys.stderr)
    white = ", PCA-whitened" if info.whitened else ""
    print(f"{info.folder}: {info.kind} index of {info.vectors} vectors of {info.dim} dims{white}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ..collection import search_photo
    from ..collection.page import write_results_page

    searcher, found = search_photo(args.emb, args.query, args.k, args.weights, args.descriptor, args.device)
    for n in found:
        print(f"{n.rank:3d}  cos {n.similarity:.4f}  distance {n.distance:.4f}  {n.path}")
    if args.html:
        note = f"{searcher.collection.settings['descriptor']} descriptors of {searcher.collection.settings['config']}"
        print(f"wrote {write_results_page(args.html, args.query, searcher.collection.root, found, note)}")
    return 0


def cmd_duplicates(args: argparse.Namespace) -> int:
    from ..collection import find_duplicates

    groups = find_duplicates(args.emb, args.threshold)
    for i, g in enumerate(groups, 1):
        print(f"group {i} ({len(g)} photos): " + "  ".join(g))
    print(f"{len(groups)} group(s) of near-duplicates at cosine >= {args.threshold}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the `vggnet` parser."""
    from ..collection import EmbedConfig

    p = sub.add_parser("embed", help="one descriptor per photo of a folder or file list, into resumable shards")
    p.add_argument("source", nargs="+", metavar="DIR|FILELIST", help="a folder (read recursively) or a file of paths")
    p.add_argument("--weights", help="weights file, run folder, catalogue name (vgg16) or URL")
    p.add_argument("--out", required=True, help="the descriptors' folder (EMB/); rerunning the command resumes it")
    p.add_argument("--merge", action="store_true", help="join the folders of finished --shard parts into --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, EmbedConfig)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "merge", help="join the folders of `embed --shard i/N` parts, checking none is missing or doubled"
    )
    p.add_argument("parts", nargs="+", metavar="PART")
    p.add_argument("--out", required=True, help="the merged descriptors' folder")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("index", help="check a collection's shards and build its search index (FAISS if installed)")
    p.add_argument("emb", metavar="EMB")
    p.add_argument("--whiten", action="store_true", help="PCA-whiten the descriptors, fitted on this collection")
    p.add_argument("--whiten-from", metavar="EMB2", help="PCA-whiten with a whitening fitted on another collection")
    p.add_argument("--whiten-dim", type=int, help="dimensions kept by the whitening (default: all it can estimate)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="the photos of a collection nearest to a query photo")
    p.add_argument("emb", metavar="EMB")
    p.add_argument("query", metavar="QUERY", help="an image file")
    p.add_argument("-k", type=int, default=10, help="how many neighbours (default: 10)")
    p.add_argument("--html", help="also write a self-contained page with the thumbnails")
    p.add_argument("--descriptor", help="refuse unless the collection holds this descriptor")
    p.add_argument("--weights", help="where the collection's weights are now, if they moved (checked by hash)")
    p.add_argument("--device", default="auto", help="torch device for the query (default: auto)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("duplicates", help="groups of near-duplicate photos in a collection")
    p.add_argument("emb", metavar="EMB")
    p.add_argument(
        "--threshold", type=float, default=0.9, help="cosine similarity from which two photos group (default: 0.9)"
    )
    p.set_defaults(func=cmd_duplicates)
