"""Training data pipeline, images/s: decode + jittered rescale (S in [256, 512]) + random 224 crop + flip.

Ours: vggnet.data's ImageFolder + Transformed(TrainTransform) as `vggnet train` builds them (PCA colour
shift 0.1 and mean subtraction on, the training defaults). Baseline: torchvision's ImageFolder with
the same protocol from its transforms (a per-image S ~ U[256, 512] through transforms.functional.resize,
RandomCrop(224), RandomHorizontalFlip, ToTensor, Normalize). Both in-process (0 workers), on a generated
folder of ImageNet-sized (500x375) JPEGs: Imagenette photos upscaled, or smooth random patterns without them.
Run: PYTHONPATH=src python benchmarks/data_pipeline.py   (about 1 minute on 2 cores)
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, machine_line, median, publish  # noqa: E402

from vggnet.data import ImageFolder, TrainTransform, Transformed, compute_stats, scan_image_folder  # noqa: E402

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette"  # shared/ beside the repository
SIZE = (500, 375)  # a typical ImageNet photo


def make_folder(out: Path, n: int, source: Path) -> str:
    """Write n JPEGs of SIZE into out/<class>/ (2 classes); returns where their content came from."""
    photos: list[str] = []
    if (source / "train").is_dir():
        samples, _ = scan_image_folder(source / "train")
        photos = [p for p, _ in samples[:: max(1, len(samples) // n)]][:n]
    g = np.random.default_rng(0)
    for i in range(n):
        folder = out / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        if photos:
            with Image.open(photos[i % len(photos)]) as im:
                image = im.convert("RGB").resize(SIZE, Image.BICUBIC)
        else:  # smooth random pattern: low-resolution noise upsampled
            image = Image.fromarray(g.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(SIZE, Image.BICUBIC)
        image.save(folder / f"{i:04d}.jpg", quality=90)
    return f"{n} Imagenette photos upscaled to 500x375" if photos else f"{n} smooth random 500x375 patterns"


def torchvision_pipeline(root: Path, scale: tuple[int, int], crop: int, mean: list[float]) -> torch.utils.data.Dataset:
    """torchvision's ImageFolder with the same protocol (not RandomResizedCrop, a different augmentation)."""
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF

    def jittered_rescale(image: Image.Image) -> Image.Image:
        return TF.resize(image, random.randint(scale[0], scale[1]))  # shorter side to S

    transform = T.Compose(
        [
            T.Lambda(jittered_rescale),
            T.RandomCrop(crop),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([m / 255 for m in mean], [1 / 255] * 3),  # the same output as ours: 0-255 minus the mean
        ]
    )
    import torchvision

    return torchvision.datasets.ImageFolder(str(root), transform=transform)


def one_pass(dataset: torch.utils.data.Dataset) -> None:
    for i in range(len(dataset)):
        dataset[i]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="JPEGs to generate")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved passes over the folder")
    parser.add_argument("--data", type=Path, default=IMAGENETTE, help=f"Imagenette folder (default: {IMAGENETTE})")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (4 images, 2 rounds) for tests")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    parser.add_argument("--name", default="data_pipeline")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    # One intra-op thread, as in a DataLoader worker: with 2 threads on a shared machine torchvision's
    # ToTensor + Normalize (small torch ops) took 72 ms an image against 1.2 ms with one, which measured
    # thread contention, not the pipelines.
    torch.set_num_threads(1)
    n, rounds = (4, 2) if args.smoke else (args.images, args.rounds)
    scale, crop = (256, 512), 224
    random.seed(0)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_folder(root, n, args.data)
        base = ImageFolder(root)
        stats = compute_stats(base, n, 0, 0, False)  # as train.py: from the training images (not timed)
        ours = Transformed(base, TrainTransform(scale, crop, stats))  # colour shift 0.1 and flip: the defaults
        theirs = torchvision_pipeline(root, scale, crop, stats.mean)
        x, y = ours[0][0], theirs[0][0]
        assert x.shape == y.shape == (3, crop, crop) and x.dtype == y.dtype == torch.float32
        times = interleaved({"ours": lambda: one_pass(ours), "torchvision": lambda: one_pass(theirs)}, rounds)
    ips = {k: n / median(v) for k, v in times.items()}
    results = {
        "data": data,
        "images": n,
        "rounds": rounds,
        "scale": list(scale),
        "crop": crop,
        "workers": 0,
        "images_per_s": ips,
        "ratio": ips["ours"] / ips["torchvision"],
        "seconds": times,
        "machine": machine(),
        "command": " ".join(sys.argv),
    }
    if args.out is not None:
        import common

        common.RESULTS = args.out
    return publish(args.name, results, markdown(results))


def markdown(r: dict) -> str:
    """The results as Markdown: images/s of each pipeline and the ratio."""
    cmd = "PYTHONPATH=src python benchmarks/" + r["command"].split("benchmarks/")[-1]
    ips = r["images_per_s"]
    return "\n".join(
        [
            "# Training data pipeline, ours vs torchvision, CPU",
            "",
            f"Machine: {machine_line(r['machine'])}.  ",
            f"Command: `{cmd}`.  ",
            f"Data: {r['data']} (JPEG quality 90). Per image: decode, rescale the shorter side to",
            f"S ~ U[{r['scale'][0]}, {r['scale'][1]}], random {r['crop']} crop, random flip, to a float tensor minus the",
            "mean RGB (ours adds the PCA colour shift as training does). 0 workers (in-process);",
            f"{r['rounds']} interleaved passes over the folder, medians.",
            "",
            "| pipeline | images/s |",
            "|---|---:|",
            f"| ours (vggnet.data ImageFolder + TrainTransform) | {ips['ours']:.1f} |",
            f"| torchvision (ImageFolder + transforms) | {ips['torchvision']:.1f} |",
            f"| **ours / torchvision** | **{r['ratio']:.2f}x** |",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
