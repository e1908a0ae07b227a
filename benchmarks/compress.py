"""`vggnet compress` on a full-size VGG16: seconds, memory, file size, load time, images/s and logit change.

The net: VGG16 with random weights (`build("D")`, seed 0; 553 MB in the project format). Two stages, each
in processes of its own so that each peak memory is its own:

- `--stage exact` times the method `compress` used before (a float32 `svdvals` of FC6, then a float64 SVD)
  on FC6 alone, once, and keeps FC6's exact singular values (results/compress_exact.json). It takes about
  ten minutes on two cores; run it once.
- `--stage main` (the default) runs `vggnet compress` for each setting the docs recommend, each in a child
  process (wall seconds, peak memory, its progress lines), then times `load_weights` of each file and
  images/s fp32 (`optimize_for_inference`) and `--fast` (`winograd=True`) on Imagenette photos, the files
  alternated over rounds, and compares the logits with the uncompressed net's on the same photos. The
  factors' FC6 error is checked against the exact truncated SVD from the exact stage's singular values.

Random weights have a flat spectrum (the hardest case for the iteration, and the least compressible): the
logit change says how far the compressed net moves, not what it costs in ImageNet accuracy, which needs the
ImageNet weights and validation photos (docs/finetuning.md gives the command).
Run: PYTHONPATH=src python benchmarks/compress.py --stage exact; PYTHONPATH=src python benchmarks/compress.py
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
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, cpu_flags, cpu_model, interleaved, median, publish  # noqa: E402

from vggnet import build  # noqa: E402
from vggnet.compress import low_rank  # noqa: E402
from vggnet.data import open_image, scan_image_folder  # noqa: E402
from vggnet.optimize import optimize_for_inference  # noqa: E402
from vggnet.weights import load_weights, save_weights  # noqa: E402

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette"  # shared/ beside the repository
# the settings the docs recommend (docs/finetuning.md): Fast R-CNN's FC6 rank, a smaller one, each with and
# without int8 storage, and the energy rule of the command in the README
SETTINGS = {
    "rank 1024": ["--rank", "1024"],
    "rank 1024 + int8": ["--rank", "1024", "--int8"],
    "rank 256": ["--rank", "256"],
    "rank 256 + int8": ["--rank", "256", "--int8"],
    "energy 0.9 + int8": ["--energy", "0.9", "--int8"],
}
CHILD = (  # runs the CLI as a user would, then reports its own peak memory on the last line of stderr
    "import resource, sys; from vggnet.cli import main; rc = main(sys.argv[1:]); "
    "print('peak_rss_mib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr); sys.exit(rc)"
)
BASELINE = (  # the same interpreter with torch and the CLI imported: what any command costs before its work
    "import resource; import vggnet.cli, vggnet.compress; "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
)


def machine() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": cpu_flags(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "load_average_at_end": os.getloadavg(),
    }


def vgg16(smoke: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("D", width=1 / 16, input_size=64) if smoke else build("D")


def exact_stage(args: argparse.Namespace) -> int:
    """The former method on FC6, timed once; FC6's singular values for the main stage's accuracy check."""
    w = vgg16(args.smoke).classifier[0].weight.detach().clone()  # (4096, 25088)
    start = time.perf_counter()
    torch.linalg.svdvals(w.float())
    svdvals_s = time.perf_counter() - start
    start = time.perf_counter()
    _, s, _ = torch.linalg.svd(w.double(), full_matrices=False)
    svd_s = time.perf_counter() - start
    result = {
        "layer": "fc6",
        "shape": list(w.shape),
        "svdvals_float32_s": svdvals_s,
        "svd_float64_s": svd_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "singular_values": s.tolist(),
        "machine": machine(),
        "command": " ".join(sys.argv),
    }
    path = args.out / ("compress_exact_smoke.json" if args.smoke else "compress_exact.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result) + "\n")
    print(f"fc6 {tuple(w.shape)}: svdvals {svdvals_s:.1f} s, svd {svd_s:.1f} s; wrote {path}")
    return 0


def photos(root: Path, count: int, size: int) -> torch.Tensor:
    """`count` validation photos spread over the classes, resized to size x size, as an RGB 0-1 batch."""
    samples, classes = scan_image_folder(root / "val")
    per_class = -(-count // len(classes))
    picked: list[str] = []
    for c in range(len(classes)):
        picked += [p for p, label in samples if label == c][:per_class]
    images = []
    for path in picked[:count]:
        im = open_image(path)
        if im is not None:
            images.append(torch.from_numpy(np.asarray(im.resize((size, size))).copy()).permute(2, 0, 1))
    return torch.stack(images).float() / 255


def run_compress(src: Path, dst: Path, flags: list[str]) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", CHILD, "compress", str(src), str(dst), *flags], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"compress {' '.join(flags)} failed: {r.stderr.strip()}")
    lines = r.stderr.strip().splitlines()
    return {
        "seconds": seconds,
        "peak_rss_mib": float(lines[-1].split()[1]),
        "progress": lines[:-1],
        "stdout": r.stdout.strip().splitlines(),
        "bytes": dst.stat().st_size,
    }


def main_stage(args: argparse.Namespace) -> int:
    exact_path = args.out / ("compress_exact_smoke.json" if args.smoke else "compress_exact.json")
    exact = json.loads(exact_path.read_text()) if exact_path.exists() else None
    settings = {"rank 8": ["--rank", "8"], "rank 8 + int8": ["--rank", "8", "--int8"]} if args.smoke else SETTINGS
    model = vgg16(args.smoke).eval()
    size = 64 if args.smoke else 224
    if (args.data / "val").is_dir():
        x, data = photos(args.data, args.photos, size), f"{args.photos} Imagenette validation photos, resized"
    else:
        x = torch.rand(args.photos, 3, size, size, generator=torch.Generator().manual_seed(1))
        data = f"no photos at {args.data}: {args.photos} uniform random images"
    fc6 = model.classifier[0].weight.detach().clone()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    baseline = subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, env=env, check=True)
    results: dict[str, object] = {"data": data, "size": size, "baseline_rss_mib": float(baseline.stdout.strip())}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "vgg16.safetensors"
        save_weights(model, src)
        results["uncompressed_bytes"] = src.stat().st_size
        runs = {}
        for name, flags in settings.items():
            runs[name] = run_compress(src, Path(tmp) / f"{name.replace(' ', '_')}.safetensors", flags)
            runs[name]["progress"] = [line.replace(f"{tmp}/", "") for line in runs[name]["progress"]]
            print(f"{name}: {runs[name]['seconds']:.1f} s, {runs[name]['peak_rss_mib']:.0f} MiB", flush=True)
        files = {"uncompressed": src} | {n: Path(tmp) / f"{n.replace(' ', '_')}.safetensors" for n in settings}
        loads = interleaved({n: (lambda f=f: load_weights(f)) for n, f in files.items()}, rounds=args.rounds)
        nets = {n: load_weights(f)[0].eval() for n, f in files.items()}
        prep = load_weights(src)[1].preprocessing
        inputs = prep(x)
        with torch.inference_mode():
            logits = {n: net(inputs) for n, net in nets.items()}
        base = logits["uncompressed"]
        for name, run in runs.items():
            pair = nets[name].classifier[0]
            if hasattr(pair, "rank"):
                approx = pair[1].weight.detach().double() @ pair[0].weight.detach().double()
                run["fc6_rank"] = pair.rank
                run["fc6_error"] = float(torch.linalg.matrix_norm(fc6.double() - approx))
                if exact is not None:
                    s = torch.tensor(exact["singular_values"], dtype=torch.float64)
                    run["fc6_exact_error"] = float((s[pair.rank :] ** 2).sum().sqrt())
            run["logit_change"] = float((logits[name] - base).norm() / base.norm())
            run["top1_agreement"] = float((logits[name].argmax(1) == base.argmax(1)).float().mean())
        batch = inputs[: args.batch]
        paths = {}
        for name in list(nets):
            net = nets.pop(name)  # only the inference copies stay in memory
            fp32, fast = optimize_for_inference(net), optimize_for_inference(net, winograd=True)
            paths[f"{name}, fp32"], paths[f"{name}, --fast"] = partial(fp32, batch), partial(fast, batch)
        with torch.inference_mode():
            speed = interleaved(paths, rounds=args.rounds)
    new_fc6 = {}
    for rank in sorted({r["fc6_rank"] for r in runs.values() if "fc6_rank" in r}):
        start = time.perf_counter()
        low_rank(fc6, rank=rank)
        new_fc6[rank] = time.perf_counter() - start
    results |= {
        "runs": runs,
        "load_seconds": loads,
        "images_per_s": {n: args.batch / median(t) for n, t in speed.items()},
        "inference_seconds": speed,
        "batch": args.batch,
        "rounds": args.rounds,
        "fc6_low_rank_seconds": new_fc6,
        "exact": {k: v for k, v in exact.items() if k != "singular_values"} if exact else None,
        "machine": machine(),
        "command": " ".join(sys.argv),
    }
    return publish("compress_smoke" if args.smoke else "compress", results, markdown(results))


def markdown(r: dict) -> str:
    m, mib = r["machine"], 2**20
    lines = [
        "# `vggnet compress` on a full-size VGG16",
        "",
        f"Generated by `benchmarks/compress.py` (`{r['command']}`). Machine: {m['cpu']}, {m['cores']} cores, ISA "
        f"{m['isa']} ({', '.join(m['flags'])}), torch {m['torch']} ({m['torch_threads']} threads); load average at "
        f"the end {', '.join(f'{v:.1f}' for v in m['load_average_at_end'])} (a shared machine: read the ratios).",
        "",
        f"VGG16 with random weights (seed 0), {r['uncompressed_bytes'] / 1e6:.0f} MB in the project format. Each "
        "setting is one `vggnet compress` process, timed once (wall seconds including Python's start, reading "
        "and writing); peak memory is the process's peak resident set, of which "
        f"{r['baseline_rss_mib']:.0f} MiB is the interpreter with torch and vggnet imported.",
        "",
        "| setting | seconds | peak memory | per step (progress lines) | file | of uncompressed | FC6 error / exact "
        "| logit change | top-1 agreement |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, run in r["runs"].items():
        ratio = f"{run['fc6_error'] / run['fc6_exact_error']:.4f}" if "fc6_exact_error" in run else "-"
        steps = "; ".join(run["progress"]).replace("|", "/")
        lines.append(
            f"| {name} | {run['seconds']:.1f} | {run['peak_rss_mib']:.0f} MiB | {steps} | {run['bytes'] / mib:.1f} MiB "
            f"| {run['bytes'] / r['uncompressed_bytes']:.1%} | {ratio} | {run['logit_change']:.2%} "
            f"| {run['top1_agreement']:.0%} |"
        )
    lines += [
        "",
        "FC6 error / exact: the factors' Frobenius error on FC6 over the exact truncated SVD's at the same rank "
        "(from FC6's exact singular values); 1.0000 is the best possible. Logit change: ||logits - logits of the "
        f"uncompressed net|| / ||logits of the uncompressed net|| over {r['data']} to {r['size']} x {r['size']}; the "
        "top-1 agreement of a random net says little (its classes are near ties).",
        "",
    ]
    if r["exact"]:
        e = r["exact"]
        old = e["svdvals_float32_s"] + e["svd_float64_s"]
        lines += [
            "## The former method against the new one, FC6 alone",
            "",
            f"The method before this change, on FC6 ({e['shape'][0]} x {e['shape'][1]}): a float32 `svdvals` "
            f"({e['svdvals_float32_s']:.0f} s) then a float64 SVD ({e['svd_float64_s']:.0f} s), {old:.0f} s in "
            f"all, peak memory {e['peak_rss_mib']:.0f} MiB (one run, `{e['command']}`, load average at its end "
            f"{', '.join(f'{v:.1f}' for v in e['machine']['load_average_at_end'])}). The new `low_rank` on the "
            "same matrix, once each, in the main stage's process:",
            "",
            "| rank | seconds | former / new |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {k} | {v:.1f} | {old / v:.0f}x |" for k, v in r["fc6_low_rank_seconds"].items()]
        lines += [""]
    names = list(r["load_seconds"])
    fp32 = {n: r["images_per_s"][f"{n}, fp32"] for n in names}
    fast = {n: r["images_per_s"][f"{n}, --fast"] for n in names}
    lines += [
        "## Loading and inference",
        "",
        f"`load_weights` (hashes checked) and a forward pass of {r['batch']} photos, every file and path alternated "
        f"over {r['rounds']} rounds after a warm-up; medians (lowest-highest). fp32: `optimize_for_inference`; "
        "--fast: `optimize_for_inference(winograd=True)`, what `predict --fast` runs.",
        "",
        "| file | load s | images/s fp32 | images/s --fast | --fast / fp32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for n in names:
        t = r["load_seconds"][n]
        lines.append(
            f"| {n} | {median(t):.2f} ({min(t):.2f}-{max(t):.2f}) | {fp32[n]:.2f} | {fast[n]:.2f} "
            f"| {fast[n] / fp32[n]:.2f}x |"
        )
    lines += [
        "",
        "## What this cannot say",
        "",
        "The ImageNet accuracy a setting costs cannot be measured here (no ImageNet weights or photos on this "
        "machine; random weights have no accuracy to lose). With them, compress the published weights and "
        "evaluate both files on the same photos:",
        "",
        "```",
        "vggnet convert vgg16-397923af.pth vgg16.safetensors",
        "vggnet compress vgg16.safetensors vgg16_r1024.safetensors --rank 1024",
        "vggnet evaluate vgg16.safetensors vgg16_r1024.safetensors --data /path/to/imagenet  # top-1/top-5 of each",
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("main", "exact"), default="main")
    parser.add_argument("--data", type=Path, default=IMAGENETTE, help=f"Imagenette folder (default: {IMAGENETTE})")
    parser.add_argument("--photos", type=int, default=16, help="photos for the logits and the timing (default: 16)")
    parser.add_argument("--batch", type=int, default=8, help="photos per timed forward pass (default: 8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of loading and inference")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (width 1/16, 64-pixel inputs) for tests")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.photos, args.batch = 1, 2, 2
    if args.out != RESULTS:
        import common

        common.RESULTS = args.out
    return exact_stage(args) if args.stage == "exact" else main_stage(args)


if __name__ == "__main__":
    sys.exit(main())
