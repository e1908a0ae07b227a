"""int8 post-training static quantisation of VGG16 on the CPU: speed vs fp32, top-1 agreement on held-out photos.

The model: VGG16 with random (kaiming, seed 0) conv/FC6/FC7 weights and an FC8 fitted by ridge
regression on FC7 features of Imagenette training photos, so top-1 has margins like a trained
classifier's (a random 1000-way head has near-ties everywhere, which exaggerates disagreement).
Pass --weights for a trained model in the project format instead. Calibration: a few batches of
training photos; agreement: held-out validation photos, disjoint from both.
Run: PYTHONPATH=src python benchmarks/int8.py   (about 4 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GemmProbe, gemm_peak, interleaved, machine, machine_line, median, publish  # noqa: E402

from vggnet.analysis import layer_table, totals  # noqa: E402
from vggnet.data import open_image, scan_image_folder
from vggnet.model import VGG  # noqa: E402
from vggnet.optimize import optimize_for_inference, quantize_int8  # noqa: E402
from vggnet.weights import (
    Preprocessing,  # noqa: E402
    load_weights,  # noqa: E402
)

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette"  # shared/ beside the repository


def photos(root: Path, per_class: int, offset: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` images of each class (skipping the first `offset`), as an RGB 0-1 batch and labels."""
    samples, classes = scan_image_folder(root)
    picked: list[tuple[str, int]] = []
    for c in range(len(classes)):
        picked += [s for s in samples if s[1] == c][offset : offset + per_class]
    images, labels = [], []
    for path, label in picked:
        im = open_image(path)
        if im is None:
            continue
        im = im.resize((size, size)) if im.size != (size, size) else im
        images.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
        labels.append(label)
    return torch.stack(images).float() / 255, torch.tensor(labels)


def generated(n: int, classes: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images (no photos available): upsampled noise, labels by construction."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    low = torch.rand(n, 3, 7, 7, generator=g) + labels.view(-1, 1, 1, 1) / classes
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear").clamp(0, 1), labels


def batches(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return list(x.split(size))


def logits_of(model: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(b) for b in batches(x, batch)])


def fit_fc8(model: VGG, x: torch.Tensor, y: torch.Tensor, classes: int, batch: int) -> None:
    """Replace FC8 by ridge regression of one-hot labels on FC7 features (dual form: fewer images than features)."""
    head = model.classifier[:-1]  # FC6 ... dropout7, (N, 4096)
    with torch.inference_mode():
        feats = torch.cat([head(torch.flatten(model.avgpool(model.features(b)), 1)) for b in batches(x, batch)])
    f = torch.cat([feats, torch.ones(len(feats), 1)], 1).double()
    targets = torch.nn.functional.one_hot(y, classes).double()
    gram = f @ f.T
    lam = 1e-3 * gram.diagonal().mean()
    w = f.T @ torch.linalg.solve(gram + lam * torch.eye(len(f), dtype=f.dtype), targets)  # (4097, classes)
    fc8 = torch.nn.Linear(feats.shape[1], classes)
    fc8.weight.data.copy_(w[:-1].T.float())
    fc8.bias.data.copy_(w[-1].float())
    model.classifier[-1] = fc8
    model.cfg.num_classes = classes


def digits_agreement(epochs: int, batch: int) -> dict[str, float]:
    """Train a small VGG (A_bn, width 1/4, 32x32) on the built-in digits; int8 vs fp32 on its 360 val images."""
    from vggnet.data import Digits

    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        ds = Digits(split, size=32)
        items = [ds[i] for i in range(len(ds))]
        x = torch.stack([torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im, _ in items]).float() / 255
        return Preprocessing.torchvision()(x), torch.tensor([label for _, label in items])

    (train_x, train_y), (val_x, val_y) = tensors("train"), tensors("val")
    torch.manual_seed(0)  # the same network on every run
    model = VGG(config="A_bn", width=1 / 4, input_size=32, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(train_x), generator=g).split(64):
            loss = torch.nn.functional.cross_entropy(model(train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    int8 = quantize_int8(model, batches(train_x[: 4 * batch], batch))
    fp32_logits, int8_logits = logits_of(model, val_x, 64), logits_of(int8, val_x, 64)
    return {
        "images": len(val_x),
        "epochs": epochs,
        "top1_agreement": (fp32_logits.argmax(1) == int8_logits.argmax(1)).float().mean().item(),
        "top1_fp32": (fp32_logits.argmax(1) == val_y).float().mean().item(),
        "top1_int8": (int8_logits.argmax(1) == val_y).float().mean().item(),
    }


def trained_agreement(weights: Path, root: Path, calib: int, batch: int) -> dict[str, Any]:
    """int8 vs fp32 of a trained project-format model on every validation photo of `root`.

    Photos are rescaled to the model's input size x 8/7 (the paper's 256 for 224) and centre-cropped,
    then preprocessed as the weights record; calibration uses `calib` training photos.
    """
    from vggnet.data import EvalTransform, ImageFolder

    model, meta = load_weights(weights)
    model.eval()
    size = model.cfg.input_size
    transform = EvalTransform(round(size * 8 / 7), size, (0.0, 0.0, 0.0))  # uint8 values, preprocessed below

    def tensors(split: str, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        folder = ImageFolder(root / split)
        step = max(1, len(folder) // limit) if limit else 1  # spread over the class-sorted folder
        items = [folder[i] for i in range(0, len(folder), step)][: limit or None]
        x = torch.stack([transform(im) for im, _ in items if im is not None]) / 255.0
        return meta.preprocessing(x), torch.tensor([y for im, y in items if im is not None])

    (calib_x, _), (val_x, val_y) = tensors("train", calib), tensors("val")
    int8 = quantize_int8(model, batches(calib_x, batch))
    fp32_logits, int8_logits = logits_of(model, val_x, 64), logits_of(int8, val_x, 64)
    return {
        "weights": str(weights),
        "config": f"{model.cfg.arch}, width {model.cfg.width:g}, input {size}",
        "images": len(val_x),
        "calibration": len(calib_x),
        "top1_agreement": (fp32_logits.argmax(1) == int8_logits.argmax(1)).float().mean().item(),
        "top1_fp32": (fp32_logits.argmax(1) == val_y).float().mean().item(),
        "top1_int8": (int8_logits.argmax(1) == val_y).float().mean().item(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a trained model in the project format (default: random + fitted FC8)")
    parser.add_argument("--fit-per-class", type=int, default=10, help="training photos per class to fit FC8")
    parser.add_argument("--calib-batches", type=int, default=4, help="calibration batches of --batch images")
    parser.add_argument("--eval-per-class", type=int, default=20, help="held-out validation photos per class")
    parser.add_argument("--data", type=Path, default=IMAGENETTE, help=f"Imagenette folder (default: {IMAGENETTE})")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--digits-epochs", type=int, default=6, help="training epochs of the small digits VGG")
    parser.add_argument(
        "--trained",
        type=Path,
        help="also measure agreement of this trained project-format model on every val photo of --data "
        "(e.g. runs/imagenette/D/model.safetensors from experiments/imagenette/run.py)",
    )
    parser.add_argument("--name", default="int8")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    size = 224
    prep = Preprocessing.torchvision()

    root = args.data
    if (root / "train").is_dir() and (root / "val").is_dir():
        calib_x, _ = photos(root / "train", -(-args.calib_batches * args.batch // 10), 0, size)
        fit_x, fit_y = photos(root / "train", args.fit_per_class, 100, size)
        eval_x, eval_y = photos(root / "val", args.eval_per_class, 0, size)
        data = "Imagenette photos: calibration and FC8 fit from train (disjoint), agreement on val"
    else:
        print(f"{root} not found: using generated images", file=sys.stderr)
        calib_x, _ = generated(args.calib_batches * args.batch, 10, size, 1)
        fit_x, fit_y = generated(10 * args.fit_per_class, 10, size, 2)
        eval_x, eval_y = generated(10 * args.eval_per_class, 10, size, 3)
        data = "generated smooth-noise images (no photos on this machine)"
    calib_x, fit_x, eval_x = prep(calib_x), prep(fit_x), prep(eval_x)

    start = time.perf_counter()
    if args.weights:
        model, _ = load_weights(args.weights)
        weights = f"{args.weights}"
    else:
        model = VGG(config="D").eval()
        fit_fc8(model, fit_x, fit_y, 10, args.batch)
        weights = (
            f"VGG16, random kaiming conv/FC6/FC7 (seed 0), FC8 fitted by ridge regression on FC7 features "
            f"of {len(fit_x)} Imagenette train photos"
        )
    fit_s = time.perf_counter() - start

    start = time.perf_counter()
    calibration = batches(calib_x[: args.calib_batches * args.batch], args.batch)
    int8 = quantize_int8(model, calibration)
    quantize_s = time.perf_counter() - start
    fast = optimize_for_inference(model)

    fp32_logits = logits_of(model, eval_x, args.batch)
    int8_logits = logits_of(int8, eval_x, args.batch)
    agree = (fp32_logits.argmax(1) == int8_logits.argmax(1)).float().mean().item()
    top1_fp32 = (fp32_logits.argmax(1) == eval_y).float().mean().item()
    top1_int8 = (int8_logits.argmax(1) == eval_y).float().mean().item()

    digits = digits_agreement(args.digits_epochs, args.batch)
    trained = None
    if args.trained:
        if not (root / "val").is_dir():
            print(f"int8.py: error: --trained needs photos: {root} has no val/ folder", file=sys.stderr)
            return 2
        trained = trained_agreement(args.trained, root, args.calib_batches * args.batch, args.batch)

    peak = gemm_peak()
    x = eval_x[: args.batch]
    paths = {
        "fp32 eager": lambda: model(x),
        "fp32 optimised (channels-last)": lambda: fast(x),
        "int8 (FX, x86 backend)": lambda: int8(x),
    }
    probe = GemmProbe()
    with torch.inference_mode():
        times = interleaved({**paths, "torch.mm probe": probe}, rounds=args.rounds)
    times.pop("torch.mm probe")
    peak = max([peak, gemm_peak(), *probe.samples])
    gflop = 2 * totals(layer_table(model, size))["macs"] / 1e9
    rows = {name: {"images_per_s": args.batch / median(t), "seconds": t} for name, t in times.items()}
    results = {
        "weights": weights,
        "data": data,
        "images": {"calibration": len(calibration) * args.batch, "fit": len(fit_x), "held_out": len(eval_x)},
        "top1_agreement": agree,
        "top1_fp32": top1_fp32,
        "top1_int8": top1_int8,
        "digits": digits,
        "trained": trained,
        "batch": args.batch,
        "paths": rows,
        "gflop_per_image": gflop,
        "gemm_peak_gflops": peak,
        "fit_s": fit_s,
        "quantize_s": quantize_s,
        "machine": machine(),
        "command": " ".join(sys.argv),
    }
    return publish(args.name, results, markdown(results))


def markdown(r: dict) -> str:
    """The results as Markdown: speeds with ratios to fp32 eager, then agreement."""
    cmd = "PYTHONPATH=src python benchmarks/" + r["command"].split("benchmarks/")[-1]
    base = r["paths"]["fp32 eager"]["images_per_s"]
    lines = [
        "# int8 post-training static quantisation, VGG16 at 224x224, CPU",
        "",
        f"Machine: {machine_line(r['machine'])}.  ",
        f"torch.mm fp32 peak (same run): {r['gemm_peak_gflops']:.0f} GFLOP/s. Command: `{cmd}`.  ",
        f"Weights: {r['weights']}.  ",
        f"Data: {r['data']}; {r['images']['calibration']} calibration images, "
        f"{r['images']['held_out']} held-out images.",
        "",
        f"## Speed, batch {r['batch']} (interleaved, medians)",
        "",
        "| path | images/s | (fp32-equivalent) GFLOP/s | vs fp32 eager |",
        "|---|---:|---:|---:|",
    ]
    for name, row in r["paths"].items():
        ips = row["images_per_s"]
        lines.append(f"| {name} | {ips:.2f} | {ips * r['gflop_per_image']:.0f} | {ips / base:.2f}x |")
    lines += [
        "",
        "## Agreement on held-out images",
        "",
        f"- top-1 agreement int8 vs fp32: **{100 * r['top1_agreement']:.1f}%** ({r['images']['held_out']} images)",
        f"- top-1 accuracy: fp32 {100 * r['top1_fp32']:.1f}%, int8 {100 * r['top1_int8']:.1f}%",
        f"- quantisation (prepare, calibrate, convert) took {r['quantize_s']:.0f} s",
        "",
        "This VGG16's features are random, so its top-1 is weak and its margins small: agreement here is",
        "a pessimistic figure. A trained network, for contrast (same quantiser, same code path): VGG A with",
        f"BN at width 1/4, trained {r['digits']['epochs']} epochs on the built-in digits (32x32), int8 vs fp32 on",
        f"its {r['digits']['images']} validation images:",
        "",
        f"- top-1 agreement: **{100 * r['digits']['top1_agreement']:.1f}%**; top-1 accuracy fp32 "
        f"{100 * r['digits']['top1_fp32']:.1f}%, int8 {100 * r['digits']['top1_int8']:.1f}%",
        "",
    ]
    t = r.get("trained")
    if t:
        lines += [
            f"A network trained on photos: `{t['weights']}` ({t['config']}), calibrated on {t['calibration']}",
            f"training photos, int8 vs fp32 on all {t['images']} validation photos:",
            "",
            f"- top-1 agreement: **{100 * t['top1_agreement']:.1f}%**; top-1 accuracy fp32 "
            f"{100 * t['top1_fp32']:.1f}%, int8 {100 * t['top1_int8']:.1f}%",
            "",
        ]
    lines += [
        "conv1_1 (on the raw image, 0.6% of VGG16's MACs) and FC8 (the class layer, 0.1%) stay in float",
        "(`keep_first_fp32`, `keep_last_fp32`); every other layer is int8.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
