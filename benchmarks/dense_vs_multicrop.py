"""Dense (fully convolutional) evaluation vs multi-crop, the two testing methods of section 3.2.

One ImageNet-sized image (500x375), VGG16 (configuration D) at full width, fp32, 1000 classes:
- dense:      Q in {256, 384, 512}, each whole image and its mirror through the fully convolutional net
              (6 forwards of the uncropped image, `vggnet.evaluate.dense`)
- multi-crop: Q in {256, 384, 512}, 5x5 grid of 224x224 crops and their mirrors = 150 crops
              (`vggnet.evaluate.multicrop`, batches of 50 crops)
The network as `vggnet evaluate` runs it (`for_evaluation`: conv head, channels-last). Both timed in the
same process on the same rescaled images, after a warm-up, alternating dense and multi-crop; the median
of the repeats.
Writes benchmarks/results/dense_vs_multicrop.json and .md.

    PYTHONPATH=src python benchmarks/dense_vs_multicrop.py [--repeats 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model  # noqa: E402

from vggnet.analysis import layer_table, totals  # noqa: E402
from vggnet.data import rescale, to_uint8_tensor
from vggnet.evaluate import dense, for_evaluation, multicrop
from vggnet.model import VGG
from vggnet.weights import Preprocessing

SCALES = (256, 384, 512)
IMAGE_SIZE = (500, 375)  # width x height, the commonest ILSVRC shape
RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, device: torch.device) -> float:
    """Wall-clock seconds of one call (synchronised on GPUs)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def analytic_gmacs(images: list[torch.Tensor]) -> tuple[float, float]:
    """Multiply-accumulates (G) of both methods from the layer table: dense (conv head on each image), 150 crops."""
    with torch.device("meta"):
        conv, fc = VGG(config="D", head="conv"), VGG(config="D")
    dense_macs = sum(2 * totals(layer_table(conv, tuple(x.shape[1:])))["macs"] for x in images)
    crop_macs = 50 * len(images) * totals(layer_table(fc, 224))["macs"]
    return dense_macs / 1e9, crop_macs / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=50, help="crops per multi-crop forward")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())  # other work on the machine slows both methods
    torch.manual_seed(0)
    model = for_evaluation(VGG(config="D")).to(device)  # random weights: the cost does not depend on them
    pre = Preprocessing()
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8))
    images = [to_uint8_tensor(rescale(img, q)) for q in SCALES]  # (3, 256, 341), (3, 384, 512), (3, 512, 683)

    def run_dense() -> torch.Tensor:
        return torch.stack([dense(model, [x], pre, flip=True) for x in images]).mean(0)

    def run_multicrop() -> torch.Tensor:
        return torch.stack([multicrop(model, [x], pre, flip=True, batch_size=args.batch) for x in images]).mean(0)

    with torch.inference_mode():
        run_dense(), run_multicrop()  # warm-up: kernels for every shape
        dense_s, crop_s = [], []
        for _ in range(args.repeats):  # alternating, so a busy moment of the machine hits both
            dense_s.append(timed(run_dense, device))
            crop_s.append(timed(run_multicrop, device))
    dense_gmacs, crop_gmacs = analytic_gmacs(images)
    d, c = statistics.median(dense_s), statistics.median(crop_s)
    result = {
        "compared": (
            "VGG16 (D), full width, fp32, 1000 classes, conv head, channels-last, one 500x375 image; dense = Q in {256,384,512} with flips "
            "(6 whole-image forwards through the fully convolutional net); multi-crop = Q in {256,384,512}, "
            f"5x5 grid of 224x224 crops with flips (150 crops, batches of {args.batch})"
        ),
        "dense_seconds_per_image": d,
        "multicrop_seconds_per_image": c,
        "dense_images_per_second": 1 / d,
        "multicrop_images_per_second": 1 / c,
        "ratio_multicrop_over_dense": c / d,
        "dense_seconds_all": dense_s,
        "multicrop_seconds_all": crop_s,
        "dense_gmacs": dense_gmacs,
        "multicrop_gmacs": crop_gmacs,
        "gmacs_ratio": crop_gmacs / dense_gmacs,
        "machine": {
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_before": load,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dense_vs_multicrop.json").write_text(json.dumps(result, indent=1) + "\n")
    m = result["machine"]
    md = (
        "# Dense vs multi-crop evaluation (section 3.2)\n\n"
        f"{result['compared']}.\n\n"
        "| method | forwards | GMACs | seconds / image | images / s |\n|---|---|---|---|---|\n"
        f"| dense, 3 scales, flips | 6 whole images | {dense_gmacs:.0f} | {d:.2f} | {1 / d:.3f} |\n"
        f"| multi-crop, 3 scales x 50 crops | 150 crops | {crop_gmacs:.0f} | {c:.2f} | {1 / c:.3f} |\n\n"
        f"Multi-crop / dense: **{c / d:.1f}x** the time ({crop_gmacs / dense_gmacs:.1f}x the MACs); "
        f"median of {args.repeats} alternating runs after a warm-up; load average before the run "
        f"{m['load_average_before']}.\n\n"
        f"Machine: {m['device']}, CPU {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
        f"torch {m['torch']}, Python {m['python']}.\n\n"
        f"`PYTHONPATH=src python benchmarks/dense_vs_multicrop.py --repeats {args.repeats}"
        + (f" --threads {args.threads}" if args.threads else "")
        + (f" --device {args.device}" if args.device != "cpu" else "")
        + "`\n"
    )
    (RESULTS / "dense_vs_multicrop.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
