"""VGG16's input pipeline, images/s: PIL in loader processes against batched JPEG decoding, and training fed by each.

Every path gives the same tensors (section 3.1: S ~ U[256, 512], 224 crop, flip, PCA colour shift, minus the
mean RGB; `vggnet.data.batched`). Measured, each for --seconds after a warm-up:
- pipeline alone: batches delivered on the training device by --decode pil (PIL per image in --workers loader
  processes), cpu (the batched path in the loader processes) and, on a GPU, gpu (JPEG bytes from the loaders,
  nvJPEG and the transforms on the GPU, one batch ahead on a side stream);
- training VGG16 at 224 (SGD as section 3.1, bf16 autocast, channels-last) on synthetic tensors on the device;
- training end to end from the JPEGs through pil and gpu. Issue 17's target: gpu >= 90% of the synthetic rate;
- fidelity: each batched path's tensors against the PIL path's, and torch's F.interpolate(antialias=True) beside.
Without a GPU the GPU rows are skipped with a message (exit 0); --smoke checks the logic on a CPU in seconds.
Run: python benchmarks/input_pipeline.py --data DIR --limit N --seconds S   (writes results/input_pipeline.*)
Data that travels to a GPU machine: --prepare DST copies --limit photos of --data at their stored size.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402

from vggnet.data import (  # noqa: E402
    BatchedImages,
    ImageFolder,
    TrainTransform,
    Transformed,
    batch_loader,
    compute_stats,
    scan_image_folder,
)

IMAGENETTE = next(
    (p / "shared" / "data" / "imagenette" for p in ROOT.parents if (p / "shared" / "data" / "imagenette").is_dir()),
    ROOT.parent / "shared" / "data" / "imagenette",
)


def picked(root: Path, limit: int) -> list[tuple[str, int]]:
    """`limit` (path, label) pairs spread evenly over an image folder (ROOT/train when it exists)."""
    folder = root / "train" if (root / "train").is_dir() else root
    samples, _ = scan_image_folder(folder)
    step = max(1, len(samples) // limit) if limit else 1
    return samples[::step][:limit] if limit else samples


def prepare(src: Path, dst: Path, limit: int) -> int:
    """Copy `limit` photos of `src`, spread over its classes, to dst/<class>/ unchanged; returns the bytes copied."""
    total = 0
    for path, _ in picked(src, limit):
        out = dst / Path(path).parent.name / Path(path).name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
        total += out.stat().st_size
    return total


def open_folder(data: Path, limit: int) -> ImageFolder:
    """An ImageFolder of `limit` photos of `data`, read again and again by the measurements."""
    folder = ImageFolder(data / "train" if (data / "train").is_dir() else data)
    folder.samples = picked(data, limit)
    return folder


def endless(n: int, batch: int, batches: int) -> list[int]:
    """Indices 0..n-1 in a fixed shuffled order, repeated to fill `batches` batches."""
    order = np.random.default_rng(0).permutation(n).tolist()
    return list(itertools.islice(itertools.cycle(order), batch * batches))


def timed_batches(batches: Any, seconds: float, warmup: int, step: Any, sync: Any) -> tuple[float, int]:
    """(images/s, batches timed): `step(batch)` over `batches` for `seconds` after `warmup` untimed batches."""
    images, start, done = 0, None, 0
    for i, (x, y, _) in enumerate(batches):
        if i == warmup:
            sync()
            start = time.perf_counter()
        step(x, y)
        if start is not None:
            images, done = images + len(y), done + 1
            if time.perf_counter() - start >= seconds:
                break
    sync()
    if start is None or done == 0:
        raise RuntimeError("the data ran out before the warm-up ended; raise --limit or lower --batch")
    return images / (time.perf_counter() - start), done


def dataset(base: ImageFolder, decode: str, transform: TrainTransform, device: torch.device) -> Any:
    """The dataset `vggnet train --decode DECODE` builds over `base`."""
    if decode == "pil":
        return Transformed(base, transform)
    return BatchedImages(base, transform, device=torch.device("cpu") if decode == "cpu" else device)


def fidelity(base: ImageFolder, transform: TrainTransform, device: torch.device, n: int) -> dict[str, Any]:
    """Max and mean |difference| of each batched path (and of F.interpolate) from the PIL path over n photos."""
    import torch.nn.functional as F

    from vggnet.data import rescaled_size, to_uint8_tensor

    indices = list(range(min(n, len(base))))
    want, _, _ = next(iter(batch_loader(Transformed(base, transform), len(indices), sampler=indices)))
    out = {}
    devices = {"cpu": torch.device("cpu"), **({"gpu": device} if device.type == "cuda" else {})}
    for name, dev in devices.items():
        got, _, _ = next(iter(batch_loader(BatchedImages(base, transform, device=dev), len(indices), sampler=indices)))
        out[name] = difference(want, got.cpu())
    # torch's antialiased bilinear on the whole rescaled image, then the same crop, flip and offset
    rows = []
    for i in indices:
        image, _ = base[i]
        draw = transform.draw(image.size, np.random.default_rng([0, 0, i]))
        w, h = rescaled_size(image.size, draw.scale)
        x = F.interpolate(to_uint8_tensor(image)[None].float(), size=(h, w), mode="bilinear", antialias=True)
        x = x[0, :, draw.y0 : draw.y0 + draw.crop, draw.x0 : draw.x0 + draw.crop].round().clamp(0, 255)
        rows.append((x.flip(2) if draw.flip else x) + torch.from_numpy(draw.offset)[:, None, None])
    out["F.interpolate"] = difference(want, torch.stack(rows))
    return out


def difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    d = (a - b).abs()
    return {
        "images": len(a),
        "max_abs": d.max().item(),
        "mean_abs": d.mean().item(),
        "differing": (d > 0).float().mean().item(),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from vggnet.configs import TrainConfig
    from vggnet.model import VGG
    from vggnet.train import sgd, train_step

    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.backends.cudnn.benchmark = True
    base = open_folder(args.data, args.limit)
    stats = compute_stats(base, samples=min(200, len(base)))  # not timed
    transform = TrainTransform(tuple(args.scale), args.crop, stats)
    results: dict[str, Any] = {"pipeline": {}, "training": {}, "skipped": []}
    decoders = ["pil", "cpu"] + (["gpu"] if cuda else [])
    if not cuda:
        results["skipped"].append("gpu rows: no CUDA GPU visible to torch" + (" (--smoke)" if args.smoke else ""))
    warmup = args.workers + 2  # every loader process has started and sent its first batch
    batches = (args.seconds * 20000 // args.batch) + 2 * warmup + 8  # more than any path delivers in time

    def loader(decode: str) -> Any:
        ds = dataset(base, decode, transform, device)
        sampler = endless(len(base), args.batch, int(batches))
        return batch_loader(ds, args.batch, sampler=sampler, workers=args.workers, pin_memory=cuda)

    def to_device(x: torch.Tensor, y: torch.Tensor) -> None:
        x.to(device, non_blocking=True)

    deadline = time.perf_counter() + (args.budget or float("inf"))

    def in_time(row: str, seconds: float) -> bool:
        """Whether a row of `seconds` (and its warm-up) fits the --budget; else it is skipped, and said so."""
        if time.perf_counter() + seconds + 20 < deadline:
            return True
        results["skipped"].append(f"{row}: --budget {args.budget:g} s spent")
        return False

    # Training first: end to end against synthetic is issue 17's figure, so it is measured before the rest.
    if cuda or args.smoke or args.train_cpu:
        classes = len(set(y for _, y in base.samples))
        model = VGG(arch=args.arch, width=args.width, num_classes=classes, input_size=args.crop)
        model = model.to(device, memory_format=torch.channels_last).train()
        optimizer = sgd(model, TrainConfig(), device)
        scaler = torch.amp.GradScaler(device.type, enabled=False)
        amp = args.amp if cuda else "none"

        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            train_step(
                model, optimizer, scaler, [(x, y)], device, amp=amp, memory_format=torch.channels_last, crop=args.crop
            )

        x = torch.randn(args.batch, 3, args.crop, args.crop, device=device) * 60
        y = torch.randint(0, classes, (args.batch,), device=device)
        ips, steps = timed_batches(itertools.repeat((x, y, [])), args.seconds, 5, step, sync)
        results["training"]["synthetic"] = {"images_per_s": ips, "steps": steps}
        print(f"training on synthetic tensors: {ips:,.0f} images/s", flush=True)
        for decode in ["gpu" if cuda else "cpu", "pil"]:
            if in_time(f"training --decode {decode}", args.seconds):
                ips, steps = timed_batches(loader(decode), args.seconds, warmup, step, sync)
                results["training"][decode] = {"images_per_s": ips, "steps": steps}
                print(f"training from JPEGs, --decode {decode}: {ips:,.0f} images/s", flush=True)
        del model, optimizer
    else:
        results["skipped"].append("training rows: no GPU (VGG16 on this CPU would measure the CPU, not the input)")

    rates: dict[str, list[float]] = {d: [] for d in decoders}
    for _, decode in itertools.product(range(args.rounds), decoders):  # interleaved: the load varies
        if in_time(f"pipeline --decode {decode}", args.seconds / args.rounds):
            rates[decode].append(timed_batches(loader(decode), args.seconds / args.rounds, warmup, to_device, sync)[0])
            print(f"pipeline {decode}: {rates[decode][-1]:,.0f} images/s", flush=True)
    for decode, r in rates.items():
        if r:
            results["pipeline"][decode] = {"images_per_s": statistics.median(r), "rounds": r}
    results["fidelity"] = fidelity(base, transform, device, args.fidelity)
    return results


def machine(args: argparse.Namespace) -> dict[str, Any]:
    import PIL
    import torchvision

    from vggnet.data.resample import pillow_order

    info = {
        "cpu": common.cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "pillow_pass_order": pillow_order(),
        "python": sys.version.split()[0],
    }
    if torch.cuda.is_available() and not args.smoke:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def markdown(r: dict[str, Any]) -> str:
    """The results as Markdown: the rates, their ratios and the fidelity."""
    m, s = r["machine"], r["settings"]
    pipe, train = r["pipeline"], r["training"]
    where = f"{m['gpu']} (CUDA {m['cuda']}), " if "gpu" in m else ""
    lines = [
        "# Input pipeline: PIL per image against batched JPEG decoding",
        "",
        f"Machine: {where}{m['cpu']}, {m['cores']} cores; torch {m['torch']}, torchvision {m['torchvision']}, "
        f"Pillow {m['pillow']}.  ",
        f"Command: `{r['command']}`.  ",
        f"Data: {s['images']} photos from {s['data']} ({s['mean_kib']:.0f} KiB, {s['mean_size']} pixels on average), "
        f"read again and again. S ~ U[{s['scale'][0]}, {s['scale'][1]}], {s['crop']} crops, flips, colour shift, "
        f"batch {s['batch']}, {s['workers']} loader processes; each rate timed over {s['seconds']:g} s after a warm-up"
        + (
            f", the pipeline rows the median of {s['rounds']} interleaved rounds of {s['seconds'] / s['rounds']:g} s"
            " (on a shared machine the rates vary from run to run: compare the ratios)."
            if s["rounds"] > 1
            else "."
        ),
        "",
        "| measurement | images/s | ratio |",
        "|---|---:|---|",
    ]
    base = pipe["pil"]["images_per_s"] if "pil" in pipe else None
    for decode, row in pipe.items():
        ratio = f"{row['images_per_s'] / base:.2f}x pil" if decode != "pil" and base else ""
        lines.append(f"| pipeline alone, --decode {decode} | {row['images_per_s']:,.0f} | {ratio} |")
    if train:
        synthetic = train["synthetic"]["images_per_s"]
        net = f"{s['arch']}" + (f" width {s['width']:g}" if s["width"] != 1 else "")
        lines.append(f"| training {net} at {s['crop']}, synthetic tensors | {synthetic:,.0f} | |")
        for decode in [d for d in train if d != "synthetic"]:
            ips = train[decode]["images_per_s"]
            lines.append(
                f"| training from JPEGs, --decode {decode} | {ips:,.0f} | {ips / synthetic:.0%} of synthetic |"
            )
    lines += [
        "",
        "Fidelity against the PIL path (0-255 pixel units):",
        "",
        "| path | images | max | mean | values differing |",
    ]
    lines.append("|---|---:|---:|---:|---:|")
    for name, f in r["fidelity"].items():
        lines.append(f"| {name} | {f['images']} | {f['max_abs']:.3g} | {f['mean_abs']:.4f} | {f['differing']:.2%} |")
    if r["skipped"]:
        lines += ["", "Skipped: " + "; ".join(r["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=IMAGENETTE, help=f"image folder (default: {IMAGENETTE})")
    p.add_argument("--limit", type=int, default=2000, help="photos used, spread over the classes (default: 2000)")
    p.add_argument("--seconds", type=float, default=20, help="seconds per measurement (default: 20)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the pipeline rows (default: 1)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="loader processes")
    p.add_argument("--scale", type=int, nargs=2, default=[256, 512], metavar=("SMIN", "SMAX"))
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--arch", default="D", help="the trained network (default: D, VGG16)")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--amp", default="bf16", choices=("none", "bf16", "fp16"))
    p.add_argument("--fidelity", type=int, default=48, help="photos compared pixel by pixel (default: 48)")
    p.add_argument(
        "--budget", type=float, default=0, help="seconds for everything; rows that would pass it are skipped"
    )
    p.add_argument("--train-cpu", action="store_true", help="run the training rows without a GPU too")
    p.add_argument("--smoke", action="store_true", help="for tests: generated photos, a tiny net, CPU only")
    p.add_argument("--prepare", type=Path, metavar="DST", help="copy --limit photos of --data to DST and stop")
    p.add_argument("--out", type=Path, default=common.RESULTS, help="results folder")
    p.add_argument("--name", default="input_pipeline")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.prepare:
        size = prepare(args.data, args.prepare, args.limit)
        print(f"copied {args.limit} photos ({size / 2**20:.1f} MiB) of {args.data} to {args.prepare}")
        return 0
    if not torch.cuda.is_available():
        print("benchmarks/input_pipeline.py: no CUDA GPU visible to torch; the GPU rows are skipped.", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.data = make_smoke_folder(Path(tmp))
            args.limit, args.seconds, args.batch, args.workers, args.rounds, args.fidelity = 24, 0.5, 4, 0, 1, 6
            args.scale, args.crop, args.arch, args.width = [72, 96], 64, "A", 1 / 16
            torch.set_num_threads(1)  # tiny tensors: threads only add waiting on a busy machine
        if not args.data.is_dir():
            print(f"input_pipeline.py: error: {args.data} is not a folder", file=sys.stderr)
            return 2
        start = time.perf_counter()
        results = measure(args)
        base = open_folder(args.data, args.limit)
        sizes = [os.path.getsize(path) for path, _ in base.samples]
        shapes = [base[i][0].size for i in range(0, len(base), max(1, len(base) // 50))]
    results["settings"] = {
        "data": str(args.data) if not args.smoke else "a generated folder",
        "images": len(sizes),
        "mean_kib": sum(sizes) / len(sizes) / 1024,
        "mean_size": "x".join(str(round(statistics.mean(v))) for v in zip(*shapes, strict=True)),
        **{
            k: getattr(args, k)
            for k in ("limit", "seconds", "rounds", "batch", "workers", "scale", "crop", "arch", "width", "amp")
        },
    }
    results["machine"] = machine(args)
    results["command"] = "python benchmarks/input_pipeline.py " + " ".join(sys.argv[1:])
    results["seconds_total"] = time.perf_counter() - start
    common.RESULTS = args.out
    return common.publish(args.name, results, markdown(results))


def make_smoke_folder(root: Path) -> Path:
    """24 small generated JPEGs in two classes, for --smoke."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(24):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).resize((100 + i, 80), Image.BICUBIC)
        image.save(folder / f"{i}.jpg", quality=90)
    return root


if __name__ == "__main__":
    sys.exit(main())
