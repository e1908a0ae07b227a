"""`vggnet compress` on a full-size VGG16: seconds, memory, file size, load time, images/s and logit change.

The net: VGG16 with random weights (`build("D")`, seed 0; 553 MB in the project format). For each setting
the docs recommend, `vggnet compress` runs in a child process of its own, as a user runs it (wall seconds,
peak memory, its progress lines). Then `load_weights` of each file and images/s fp32
(`optimize_for_inference`) and `--fast` (`winograd=True`) on Imagenette photos are timed, files and paths
alternated over rounds; the logits are compared with the uncompressed net's on the same photos; each
factorised layer's error is compared with the exact truncated SVD's at its rank (the exact singular values from
each layer's Gram matrix in float64).

Random weights have a flat spectrum (the hardest case for the iteration, and the least compressible): the
logit change says how far the compressed net moves, not what it costs in ImageNet accuracy, which needs the
ImageNet weights and validation photos (docs/finetuning.md gives the command).
Run: PYTHONPATH=src python benchmarks/compress.py
"""

from __future__ import annotations

import argparse
import json
import os
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
from vggnet.compress import singular_values  # noqa: E402
from vggnet.data import open_image, scan_image_folder  # noqa: E402
from vggnet.optimize import optimize_for_inference  # noqa: E402
from vggnet.weights import load_weights, save_weights  # noqa: E402

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette"  # shared/ beside the repository
# the settings the docs recommend (docs/finetuning.md): Fast R-CNN's FC6 rank with and without int8 storage,
# its FC7 rank with int8, the energy rule with and without int8, and a target size
SETTINGS = {
    "rank 1024": ["--rank", "1024"],
    "rank 1024 + int8": ["--rank", "1024", "--int8"],
    "rank 256 + int8": ["--rank", "256", "--int8"],
    "energy 0.9": ["--energy", "0.9"],
    "energy 0.9 + int8": ["--energy", "0.9", "--int8"],
    "target 100MB + int8": ["--target-size", "100MB", "--int8"],
}
# peak memory from VmHWM, the high-water mark of the process's own memory: ru_maxrss would also count the
# resident set of the parent it was forked from
HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
CHILD = (  # runs the CLI as a user would, then reports its own peak memory on the last line of stderr
    "import sys; from vggnet.cli import main; rc = main(sys.argv[1:]); "
    f"print('peak_rss_mib', {HWM}, file=sys.stderr); sys.exit(rc)"
)
BASELINE = f"import vggnet.cli, vggnet.compress; print({HWM})"  # what any command holds before its work


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


def factor_error(pair: torch.nn.Module, w: torch.Tensor, s: torch.Tensor) -> dict[str, float]:
    """A factorised layer's Frobenius error on W and the exact truncated SVD's at its rank (from the spectrum s)."""
    approx = pair[1].weight.detach().double() @ pair[0].weight.detach().double()
    return {
        "rank": pair.rank,
        "error": float(torch.linalg.matrix_norm(w.double() - approx)),
        "exact_error": float((s[pair.rank :] ** 2).sum().sqrt()),
    }


def run(args: argparse.Namespace) -> int:
    settings = {"rank 8": ["--rank", "8"], "rank 8 + int8": ["--rank", "8", "--int8"]} if args.smoke else SETTINGS
    model = vgg16(args.smoke).eval()
    size = 64 if args.smoke else 224
    if (args.data / "val").is_dir():
        x, data = photos(args.data, args.photos, size), f"{args.photos} Imagenette validation photos, resized"
    else:
        x = torch.rand(args.photos, 3, size, size, generator=torch.Generator().manual_seed(1))
        data = f"no photos at {args.data}: {args.photos} uniform random images"
    fc6, fc7 = (model.classifier[i].weight.detach().clone() for i in (0, 3))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    baseline = subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, env=env, check=True)
    results: dict[str, object] = {"data": data, "size": size, "baseline_rss_mib": float(baseline.stdout.strip())}
    results["rss_source"] = "VmHWM"
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
        loads = interleaved({n: partial(load_weights, f) for n, f in files.items()}, rounds=args.rounds)
        nets = {n: load_weights(f)[0].eval() for n, f in files.items()}
        inputs = load_weights(src)[1].preprocessing(x)
    with torch.inference_mode():
        logits = {n: net(inputs) for n, net in nets.items()}
    # exact spectra from the Gram matrices in float64: a squared singular value below 1e-16 of the largest
    # loses its digits there, and such values add nothing to an error norm
    exact = singular_values(model)
    base = logits["uncompressed"]
    for name, r in runs.items():
        net = nets[name]
        if hasattr(net.classifier[0], "rank"):
            r["fc6"] = factor_error(net.classifier[0], fc6, exact["fc6"])
        if hasattr(net.classifier[3], "rank"):
            r["fc7"] = factor_error(net.classifier[3], fc7, exact["fc7"])
        r["logit_change"] = float((logits[name] - base).norm() / base.norm())
        r["top1_agreement"] = float((logits[name].argmax(1) == base.argmax(1)).float().mean())
    batch = inputs[: args.batch]
    paths = {}
    for name in [n for n in nets if n in args.speed_of or args.smoke]:
        net = nets.pop(name)  # only the inference copies stay in memory
        fp32, fast = optimize_for_inference(net), optimize_for_inference(net, winograd=True)
        paths[f"{name}, fp32"], paths[f"{name}, --fast"] = partial(fp32, batch), partial(fast, batch)
    nets.clear()
    with torch.inference_mode():
        speed = interleaved(paths, rounds=args.rounds)
    results |= {
        "runs": runs,
        "load_seconds": loads,
        "images_per_s": {n: args.batch / median(t) for n, t in speed.items()},
        "inference_seconds": speed,
        "batch": args.batch,
        "rounds": args.rounds,
        "machine": machine(),
        "command": " ".join(sys.argv),
    }
    return publish("compress_smoke" if args.smoke else "compress", results, markdown(results))


def markdown(r: dict) -> str:
    m, mib = r["machine"], 2**20
    valid = r.get("rss_source") == "VmHWM"  # earlier runs read ru_maxrss, which counts the parent's memory too
    lines = [
        "# `vggnet compress` on a full-size VGG16",
        "",
        f"Generated by `benchmarks/compress.py` (`{r['command']}`). Machine: {m['cpu']}, {m['cores']} cores, ISA "
        f"{m['isa']} ({', '.join(m['flags'])}), torch {m['torch']} ({m['torch_threads']} threads); load average at "
        f"the end {', '.join(f'{v:.1f}' for v in m['load_average_at_end'])} (a shared machine: the seconds are "
        "wall-clock seconds under that load).",
        "",
        f"VGG16 with random weights (seed 0), {r['uncompressed_bytes'] / 1e6:.0f} MB in the project format. Each "
        "setting is one `vggnet compress` process, timed once (wall seconds including Python's start, reading "
        "and writing). "
        + (
            "Peak memory is the process's own high-water mark (VmHWM), of which "
            f"{r['baseline_rss_mib']:.0f} MiB is the interpreter with torch and vggnet imported (the work itself: "
            "peak less that)."
            if valid
            else "This run read peak memory from ru_maxrss, which also counts the resident set the benchmark "
            "process held when it started each child, so its memory figures are left out; a rerun records each "
            "process's own (VmHWM)."
        ),
        "",
        "| setting | seconds | peak memory | of it the work | work / model | per step (progress lines) | file "
        "| of uncompressed | FC6 error / exact | FC7 error / exact | logit change | top-1 agreement |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in r["runs"].items():
        ratio = {k: f"{run[k]['error'] / run[k]['exact_error']:.4f}" if k in run else "whole" for k in ("fc6", "fc7")}
        steps = "; ".join(run["progress"]).replace("|", "/")
        peak = f"{run['peak_rss_mib']:.0f} MiB" if valid else "not measured"
        work = f"{run['peak_rss_mib'] - r['baseline_rss_mib']:.0f} MiB" if valid else "not measured"
        share = (run["peak_rss_mib"] - r["baseline_rss_mib"]) * mib / r["uncompressed_bytes"]
        lines.append(
            f"| {name} | {run['seconds']:.1f} | {peak} | {work} | {f'{share:.2f}' if valid else '-'} | {steps} "
            f"| {run['bytes'] / mib:.1f} MiB "
            f"| {run['bytes'] / r['uncompressed_bytes']:.1%} | {ratio['fc6']} | {ratio['fc7']} "
            f"| {run['logit_change']:.2%} | {run['top1_agreement']:.0%} |"
        )
    lines += [
        "",
        "Error / exact: the factors' Frobenius error over the exact truncated SVD's at the same rank (1.0000 is "
        "the best possible; the bound is 1.01), the exact singular values from each layer's Gram matrix in "
        "float64. Logit change: ||logits - logits of the uncompressed net|| / ||logits of the uncompressed net|| "
        f"over {r['data']} to {r['size']} x {r['size']}; the top-1 agreement of a random net says little (its "
        "classes are near ties). Work / model: the work's peak memory over the uncompressed file's size (the "
        "bound is 2).",
        "",
    ]
    names = sorted({n.rsplit(", ", 1)[0] for n in r["images_per_s"]}, key=list(r["load_seconds"]).index)
    lines += [
        "## Loading and inference",
        "",
        f"`load_weights` (hashes checked) of every file and a forward pass of {r['batch']} photos, files and "
        f"paths alternated over {r['rounds']} rounds after a warm-up; medians (lowest-highest). fp32: "
        "`optimize_for_inference`; --fast: `optimize_for_inference(winograd=True)`, what `predict --fast` runs. "
        "int8 storage does not change the arithmetic (float32 again on load), so only one file of each shape is "
        "timed.",
        "",
        "| file | load s |",
        "|---|---:|",
    ]
    for n, t in r["load_seconds"].items():
        lines.append(f"| {n} | {median(t):.2f} ({min(t):.2f}-{max(t):.2f}) |")
    lines += ["", "| file | images/s fp32 | images/s --fast | --fast / fp32 |", "|---|---:|---:|---:|"]
    for n in names:
        fp32, fast = r["images_per_s"][f"{n}, fp32"], r["images_per_s"][f"{n}, --fast"]
        lines.append(f"| {n} | {fp32:.2f} | {fast:.2f} | {fast / fp32:.2f}x |")
    lines += [
        "",
        "## What this cannot say",
        "",
        "The ImageNet accuracy a setting costs cannot be measured here (no ImageNet weights or photos on this "
        "machine; random weights have no accuracy to lose). With them (`/data/imagenet/val/<wnid>/*.JPEG`), "
        "compress the published weights and evaluate both on the same photos (one file each: several files "
        "would be an ensemble):",
        "",
        "```",
        "vggnet compress vgg16 vgg16_r1024.safetensors --rank 1024",
        "vggnet evaluate vgg16 --data /data/imagenet",
        "vggnet evaluate vgg16_r1024.safetensors --data /data/imagenet",
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=IMAGENETTE, help=f"Imagenette folder (default: {IMAGENETTE})")
    parser.add_argument("--photos", type=int, default=16, help="photos for the logits and the timing (default: 16)")
    parser.add_argument("--batch", type=int, default=8, help="photos per timed forward pass (default: 8)")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds of loading and inference")
    parser.add_argument(
        "--speed-of",
        type=lambda s: s.split(","),
        default=["uncompressed", "rank 1024", "rank 256 + int8"],
        help="files whose images/s are timed (default: uncompressed,rank 1024,rank 256 + int8)",
    )
    parser.add_argument("--render", type=Path, help="write the Markdown again from this results JSON, measure nothing")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (width 1/16, 64-pixel inputs) for tests")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.photos, args.batch = 1, 2, 2
    if args.out != RESULTS:
        import common

        common.RESULTS = args.out
    if args.render:
        r = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(r))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
