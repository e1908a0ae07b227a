"""A photo collection's descriptors: extraction speed, memory, retrieval quality, duplicate finding.

- speed: `vggnet.collection.embed` (loader processes decoding, shards written) against the same net's bare
  forward pass over the same photos decoded beforehand (images/s, rounds alternated);
- memory: peak resident memory of `vggnet embed` on 1k and 10k photos (distinct Imagenette photos);
- retrieval: mAP and precision@10 on Imagenette val (every photo a query, its class the relevant set,
  itself left out) for fc7, GAP, MAC, R-MAC and GeM, raw and PCA-whitened (whitening fitted on a second
  collection: Imagenette train photos);
- duplicates: planted near-duplicates (resized, re-encoded, cropped, flipped copies) among distinct
  photos; pair precision and recall of `duplicates` at several thresholds.

Run: PYTHONPATH=src nice python benchmarks/collection.py --weights runs/collection-net   (about 8 minutes on 2 cores;
docs/collections.md says how runs/collection-net was trained)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, machine_line, publish  # noqa: E402

from vggnet.collection import (  # noqa: E402
    EmbedConfig,
    build_index,
    describer,
    duplicate_groups,
    embed,
    fit_whitening,
    load_photo,
    open_searcher,
)
from vggnet.collection.descriptors import l2n, pool  # noqa: E402
from vggnet.features import features_at  # noqa: E402
from vggnet.model import build  # noqa: E402
from vggnet.weights import Preprocessing, save_weights  # noqa: E402

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette"
DESCRIPTORS = ("fc7", "gap", "mac", "rmac", "gem")
PARTS = ("speed", "memory", "retrieval", "index", "duplicates")
MEMORY_SIZE = 32  # px: the memory runs measure the pipeline, so the photos are small and the net narrow


def photo_list(folder: Path, n: int | None = None, step: int = 1) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))[::step]
    return files[:n] if n else files


def evenly(paths: list[Path], n: int | None) -> list[Path]:
    """n of the (class-sorted) paths evenly spaced over the list, so every class is there; all for None."""
    if not n or n >= len(paths):
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]


def write_list(paths: list[Path], out: Path) -> Path:
    out.write_text("".join(f"{p}\n" for p in paths))
    return out


# -- speed -----------------------------------------------------------------------------------------------------


def speed(weights: str, photos: list[Path], size: int, batch: int, workers: int, rounds: int, tmp: Path) -> dict:
    """images/s of `embed` (wall time of the call, weights loading included) and of the bare forward pass."""
    listing = write_list(photos, tmp / "speed.txt")
    cfg = EmbedConfig(descriptor="gem", size=size, batch=batch, workers=workers, device="cpu", shard_size=256)
    net = describer(weights, cfg)
    decoded = torch.stack([load_photo(p, size) for p in photos])  # not timed: the baseline's photos in memory
    times: dict[str, list[float]] = {"embed": [], "forward": []}
    for r in range(rounds):
        for name in ("embed", "forward") if r % 2 == 0 else ("forward", "embed"):
            start = time.perf_counter()
            if name == "embed":
                embed(listing, weights, tmp / f"speed-{r}", cfg, progress=False)
            else:
                for i in range(0, len(photos), batch):
                    net(decoded[i : i + batch])
            times[name].append(time.perf_counter() - start)
    ips = {k: [len(photos) / t for t in v] for k, v in times.items()}
    ratios = [e / f for e, f in zip(ips["embed"], ips["forward"], strict=True)]
    return {"photos": len(photos), "size": size, "batch": batch, "workers": workers, "rounds": rounds,
            "images_per_s": ips, "ratio_per_round": ratios, "seconds": times}  # fmt: skip


# -- memory ------------------------------------------------------------------------------------------------------

PEAK = """
import resource, sys
from vggnet.cli import main
status = main(sys.argv[1:])
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"peak-kib {hwm[0]} {children}")
sys.exit(status)
"""


def memory(weights: str, photos: list[Path], counts: list[int], size: int, tmp: Path) -> dict:
    """Peak resident memory (main process; the largest loader process) of `vggnet embed` per photo count."""
    out = {}
    for n in counts:
        listing = write_list(photos[:n], tmp / f"mem-{n}.txt")
        args = ["embed", str(listing), "--weights", weights, "--out", str(tmp / f"mem-{n}"), "--size", str(size),
                "--workers", "1", "--batch", "64", "--shard-size", "1000", "--device", "cpu", "--quiet"]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PEAK, *args], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        main_kib, child_kib = (int(v) for v in proc.stdout.strip().splitlines()[-1].split()[1:])
        out[str(n)] = {"main_mib": main_kib / 1024, "loader_mib": child_kib / 1024, "seconds": seconds}
    return out


# -- retrieval ---------------------------------------------------------------------------------------------------


def all_descriptors(weights: str, photos: list[Path], size: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Every descriptor of every photo from one forward pass each (the conv map and fc7 tapped together),
    pooled and normalised by the functions `embed` uses."""
    net = describer(weights, EmbedConfig(descriptor="gem", size=size, device="cpu"))
    out: dict[str, list[np.ndarray]] = {d: [] for d in DESCRIPTORS}
    with torch.inference_mode():
        for i in range(0, len(photos), batch):
            x = torch.stack([load_photo(p, size) for p in photos[i : i + batch]]).float() / 255
            taps = features_at(net.model, x, [net.layer, "fc7"], preprocessing=net.preprocessing)
            for d in DESCRIPTORS:
                out[d].append(l2n(pool(taps["fc7" if d == "fc7" else net.layer].float(), d, 3.0)).numpy())
    return {d: np.concatenate(v) for d, v in out.items()}


def map_and_p10(x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean average precision and precision@10 with every row a query against the others."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :-1]  # the query itself (-inf) last, dropped
    hits = labels[order] == labels[:, None]  # (Q, N-1)
    ranks = np.arange(1, hits.shape[1] + 1)
    precision_at = np.cumsum(hits, axis=1) / ranks
    ap = (precision_at * hits).sum(axis=1) / hits.sum(axis=1)
    return float(ap.mean()), float(hits[:, :10].mean())


def retrieval(weights: str, data: Path, size: int, whiten_photos: int, limit: int | None) -> dict:
    val = evenly(photo_list(data / "val"), limit)
    labels = np.array([p.parent.name for p in val])
    train = evenly(photo_list(data / "train"), whiten_photos)
    start = time.perf_counter()
    queries, fitting = all_descriptors(weights, val, size), all_descriptors(weights, train, size)
    rows = {}
    for d in DESCRIPTORS:
        raw = map_and_p10(queries[d], labels)
        white = map_and_p10(fit_whitening(fitting[d]).apply(queries[d]), labels)
        rows[d] = {"dim": int(queries[d].shape[1]), "map": raw[0], "p10": raw[1], "map_whitened": white[0],
                   "p10_whitened": white[1]}  # fmt: skip
    return {"photos": len(val), "whitening_photos": len(train), "size": size, "seconds": time.perf_counter() - start,
            "chance_map": float(np.mean([np.mean(labels == c) for c in labels])), "descriptors": rows}  # fmt: skip


# -- duplicates --------------------------------------------------------------------------------------------------

VARIANTS = {
    "resized": lambda im: im.resize((im.width // 2, im.height // 2), Image.BILINEAR),
    "re-encoded": lambda im: im,  # saved at JPEG quality 30 below
    "cropped": lambda im: im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10)),
    "flipped": ImageOps.mirror,
}


# Raw descriptors of post-ReLU maps are all non-negative, so unrelated photos already sit at cosines near 0.9:
# their thresholds are high. Whitening centres them, so its cosines start near 0.
THRESHOLDS = {False: (0.95, 0.98, 0.99, 0.995, 0.998), True: (0.3, 0.5, 0.7, 0.8, 0.9)}


def duplicates(weights: str, data: Path, size: int, distinct: int, planted: int, tmp: Path) -> dict:
    """Pair precision and recall of `duplicate_groups` on `distinct` photos, `planted` of which get 4 variants."""
    folder = tmp / "dups"
    folder.mkdir()
    originals = evenly(photo_list(data / "val"), distinct)
    truth: dict[str, int] = {}
    for i, p in enumerate(originals):
        with Image.open(p) as im:
            rgb = im.convert("RGB")
        rgb.save(folder / f"{i:04d}.jpg", quality=95)
        truth[f"{i:04d}.jpg"] = i
        if i < planted:
            for name, change in VARIANTS.items():
                change(rgb).save(folder / f"{i:04d}-{name}.jpg", quality=30 if name == "re-encoded" else 90)
                truth[f"{i:04d}-{name}.jpg"] = i
    out = {}
    for d, whiten in (("gem", False), ("gem", True), ("rmac", False), ("rmac", True)):
        emb = tmp / f"dups-{d}"
        if not emb.exists():
            embed(folder, weights, emb, EmbedConfig(descriptor=d, size=size, workers=1, device="cpu"), False)
        build_index(emb, whiten=whiten)  # whitening fitted on the collection itself, as `vggnet index --whiten`
        s = open_searcher(emb)
        c, x = s.collection, s.vectors if s.vectors is not None else s.prepare(s.collection.descriptors())
        true_pairs = {(a, b) for a in c.paths for b in c.paths if a < b and truth[a] == truth[b]}
        per_threshold = {}
        for t in THRESHOLDS[whiten]:
            found = {(a, b) for g in duplicate_groups(x, t) for a in (c.paths[i] for i in g)
                     for b in (c.paths[i] for i in g) if a < b}  # fmt: skip
            hit = len(found & true_pairs)
            recall_by = {
                v: float(
                    np.mean([tuple(sorted((f"{i:04d}.jpg", f"{i:04d}-{v}.jpg"))) in found for i in range(planted)])
                )
                for v in VARIANTS
            }
            per_threshold[str(t)] = {"precision": hit / len(found) if found else 1.0, "recall": hit / len(true_pairs),
                                     "found_pairs": len(found), "recall_by_variant": recall_by}  # fmt: skip
        out[d + (" whitened" if whiten else "")] = per_threshold
    return {"photos": len(truth), "distinct": distinct, "planted": planted, "true_pairs": len(true_pairs),
            "by_descriptor": out}  # fmt: skip


# -- the index ----------------------------------------------------------------------------------------------------


def index_costs(sizes: list[int], dim: int, queries: int) -> dict:
    """Exact (IndexFlatIP) against HNSW (as `vggnet index` builds it above EXACT_FLOATS) on random unit vectors:
    one query at a time, milliseconds each; HNSW's build time and recall@10 of the exact answer."""
    import faiss

    from vggnet.collection.search import _faiss_index

    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        planted = rng.choice(n, queries, replace=False)
        q = x[planted] + 0.05 * rng.standard_normal((queries, dim), dtype=np.float32)  # its source: cos about 0.8
        row = {}
        for kind, limit in (("flat", n), ("hnsw", 0)):
            faiss.omp_set_num_threads(2)
            start = time.perf_counter()
            index = _faiss_index(faiss, x, limit)
            built = time.perf_counter() - start
            faiss.omp_set_num_threads(1)  # one query at a time: threads only add their start-up and waits
            found, start = [], time.perf_counter()
            for i in range(queries):
                found.append(index.search(q[i : i + 1], 10)[1][0])
            row[kind] = {"build_s": built, "ms_per_query": 1000 * (time.perf_counter() - start) / queries, "ids": found}
        exact = row["flat"].pop("ids")
        approx = row["hnsw"].pop("ids")
        row["hnsw"]["recall_at_10"] = float(
            np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
        )
        row["hnsw"]["source_found"] = float(np.mean([a[0] == p for a, p in zip(approx, planted, strict=True)]))
        out[str(n)] = row
    return {"dim": dim, "queries": queries, "faiss_threads": 1, "by_size": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the net trained on Imagenette (a run folder)")
    parser.add_argument("--data", type=Path, default=IMAGENETTE)
    parser.add_argument("--size", type=int, default=110, help="photos' side for the descriptors")
    parser.add_argument("--only", default=",".join(PARTS))
    parser.add_argument("--smoke", action="store_true", help="a tiny run of every part, for a quick check")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--name", default="collection")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"{args.data}: no Imagenette folder; nothing measured")
        return 0
    torch.set_num_threads(2)
    only = set(args.only.split(","))
    everything = photo_list(args.data / "train") + photo_list(args.data / "val")
    small = args.smoke
    results: dict = {"machine": machine(), "command": " ".join(sys.argv), "weights": args.weights}
    previous = (args.out or RESULTS) / f"{args.name}.json"
    if only != set(PARTS) and previous.exists():  # some parts again: keep the others' figures (and their command)
        kept = json.loads(previous.read_text())
        results = {**{k: v for k, v in kept.items() if k not in PARTS and k not in results}, **results}
        results |= {k: v for k, v in kept.items() if k in PARTS and k not in only}
        results["earlier_command"] = kept.get("earlier_command", kept["command"])
    with tempfile.TemporaryDirectory(prefix="vggnet-bench-") as tmp:
        tmp = Path(tmp)
        if "speed" in only:
            val = photo_list(args.data / "val", 64 if small else 384, 7)
            results["speed"] = speed(args.weights, val, args.size, 32, 1, 2 if small else 3, tmp)
        if "memory" in only:
            counts = [50, 200] if small else [1000, 10000]
            # the pipeline's memory, not the net's: a 1/16-width net A (random weights) at 32 px keeps 10k photos quick
            tiny = tmp / "tiny.safetensors"
            torch.manual_seed(0)
            save_weights(
                build("A", width=1 / 16, num_classes=10).eval(), tiny, preprocessing=Preprocessing.torchvision()
            )
            picked = everything[:: max(1, len(everything) // counts[-1])]
            results["memory"] = memory(str(tiny), picked, counts, MEMORY_SIZE, tmp)
            results["memory_net"] = f"VGG A at 1/16 width, random weights, {MEMORY_SIZE} px"
        if "retrieval" in only:
            whitening, limit = (100, 200) if small else (1000, 2000)
            results["retrieval"] = retrieval(args.weights, args.data, args.size, whitening, limit)
        if "index" in only:
            results["index"] = index_costs([2000, 10000] if small else [10000, 50000], 512, 20 if small else 50)
        if "duplicates" in only:
            distinct, planted = (40, 10) if small else (300, 60)
            results["duplicates"] = duplicates(args.weights, args.data, args.size, distinct, planted, tmp)
    results["peak_rss_benchmark_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.out is not None:
        import common

        common.RESULTS = args.out
    return publish(args.name, results, markdown(results))


def _spread(values: list[float]) -> str:
    return f"{np.median(values):.2f} (range {min(values):.2f}-{max(values):.2f})"


def markdown(r: dict) -> str:
    """The results as Markdown tables."""
    cmd = "PYTHONPATH=src nice python benchmarks/" + r["command"].split("benchmarks/")[-1]
    lines = ["# A photo collection's descriptors: speed, memory, retrieval, duplicates", "",
             f"Machine: {machine_line(r['machine'])}.  ", f"Command: `{cmd}`.  ",
             f"Weights: `{r['weights']}` (see docs/collections.md for how they were trained).", ""]  # fmt: skip
    if "earlier_command" in r:
        earlier = "PYTHONPATH=src nice python benchmarks/" + r["earlier_command"].split("benchmarks/")[-1]
        lines[4:4] = [f"Parts the command above did not name: `{earlier}`, on the same machine.  "]
    if "speed" in r:
        s = r["speed"]
        lines += [
            "## Extraction speed", "",
            f"{s['photos']} Imagenette val photos (224x224 JPEG) at {s['size']} px, GeM, batch {s['batch']}, "
            f"{s['workers']} loader process; `embed` timed whole (weights loaded, shards written) against the same "
            f"net's forward + pooling over the photos decoded beforehand; {s['rounds']} rounds, order alternated.", "",
            "| path | images/s, median (range) |", "|---|---|",
            f"| embed | {_spread(s['images_per_s']['embed'])} |",
            f"| bare forward | {_spread(s['images_per_s']['forward'])} |",
            f"| ratio embed / forward, per round | {_spread(s['ratio_per_round'])} |", "",
        ]  # fmt: skip
    if "memory" in r:
        lines += ["## Peak resident memory of `vggnet embed`", "",
                  f"Distinct Imagenette photos (train + val); {r['memory_net']}; 1 loader process, batch 64, shards of 1000.", "",
                  "| photos | main process (MiB) | loader process (MiB) | seconds |", "|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {n} | {m['main_mib']:.0f} | {m['loader_mib']:.0f} | {m['seconds']:.0f} |"
            for n, m in r["memory"].items()
        ]
        lines += [""]
    if "retrieval" in r:
        t = r["retrieval"]
        lines += ["## Retrieval on Imagenette val", "",
                  f"{t['photos']} photos, each a query against the rest; relevant = its class (chance mAP "
                  f"{t['chance_map']:.3f}); photos at {t['size']} px; whitening fitted on {t['whitening_photos']} "
                  "Imagenette train photos (a second collection).", "",
                  "| descriptor | dim | mAP | P@10 | mAP whitened | P@10 whitened |", "|---|---|---|---|---|---|"]  # fmt: skip
        for d, v in t["descriptors"].items():
            lines.append(
                f"| {d} | {v['dim']} | {v['map']:.3f} | {v['p10']:.3f} | {v['map_whitened']:.3f} | {v['p10_whitened']:.3f} |"
            )
        lines += [""]
    if "index" in r:
        x = r["index"]
        lines += ["## The index: exact against HNSW", "",
                  f"Random unit vectors of {x['dim']} dims (HNSW built with 2 threads); {x['queries']} queries one "
                  f"at a time (FAISS with {x['faiss_threads']} thread), each a stored vector plus noise (its source at cosine about 0.8, the "
                  "rest near 0: recall@10 beyond the source is a tie among random vectors, the hardest case for HNSW); "
                  "HNSW with M = 32, efSearch = 128 as `vggnet index` builds it.", "",
                  "| vectors | exact: ms/query | HNSW: build s | HNSW: ms/query | HNSW: source first | HNSW recall@10 |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for n, v in x["by_size"].items():
            lines.append(f"| {n} | {v['flat']['ms_per_query']:.2f} | {v['hnsw']['build_s']:.1f} | "
                         f"{v['hnsw']['ms_per_query']:.2f} | {v['hnsw']['source_found']:.3f} | {v['hnsw']['recall_at_10']:.3f} |")  # fmt: skip
        lines += [""]
    if "duplicates" in r:
        u = r["duplicates"]
        lines += ["## Planted near-duplicates", "",
                  f"{u['distinct']} distinct val photos; {u['planted']} of them get 4 variants (half size, JPEG quality "
                  f"30, 80% centre crop, mirrored): {u['photos']} photos, {u['true_pairs']} true pairs. Pair precision and "
                  "recall of `duplicates` (groups are connected components, so a found pair is any two in one group).", "",
                  "| descriptor | threshold | precision | recall | recall: resized / re-encoded / cropped / flipped |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for d, by in u["by_descriptor"].items():
            for t, v in by.items():
                per = " / ".join(f"{v['recall_by_variant'][k]:.2f}" for k in VARIANTS)
                lines.append(f"| {d} | {t} | {v['precision']:.3f} | {v['recall']:.3f} | {per} |")
        lines += [""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
