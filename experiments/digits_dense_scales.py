"""The testing protocol of section 3.2 on the built-in digits: single- vs multi-scale dense, multi-crop, fusion.

Trains a narrow VGG-A (with BN, Glorot init) for a few epochs with the paper's scale jittering
(S drawn per image from [Smin, Smax], a random crop of the input size, random mirror), then
evaluates it on the 360 validation digits with every method and writes
experiments/results/digits_dense_scales.md.

    PYTHONPATH=src python experiments/digits_dense_scales.py [--epochs 10 --width 0.125 --input 64 --scale 64,128]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vggnet import build
from vggnet.configs import EvalConfig
from vggnet.data import open_dataset, rescale, to_uint8_tensor
from vggnet.evaluate import evaluate, results_table
from vggnet.weights import Preprocessing, save_weights

OUT = Path(__file__).resolve().parent / "results" / "digits_dense_scales.md"


def jittered_crop(img, scale: tuple[int, int], crop: int, rng: random.Random) -> torch.Tensor:
    """Rescale to a random S in [Smin, Smax], take a random crop x crop crop, mirror half the time (section 3.1)."""
    x = to_uint8_tensor(rescale(img, rng.randint(*scale)))
    top, left = rng.randint(0, x.shape[1] - crop), rng.randint(0, x.shape[2] - crop)
    x = x[:, top : top + crop, left : left + crop]
    return x.flip(-1) if rng.random() < 0.5 else x


def train(epochs: int, width: float, crop: int, scale: tuple[int, int], seed: int = 0) -> torch.nn.Module:
    """A few epochs of SGD with momentum 0.9 and weight decay 5e-4 (section 3.1), batch 64, one-cycle schedule."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    data = open_dataset("digits", "train", size=scale[1])
    model = build("A_bn", width=width, num_classes=10, input_size=crop, init="glorot")
    pre = Preprocessing()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = epochs * ((len(data) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps)
    items = [data[i] for i in range(len(data))]
    model.train()
    for epoch in range(epochs):
        rng.shuffle(items)
        total = 0.0
        for start in range(0, len(items), 64):
            batch = items[start : start + 64]
            x = pre(torch.stack([jittered_crop(img, scale, crop, rng) for img, _ in batch]).float() / 255)
            y = torch.tensor([label for _, label in batch])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(items):.3f}")
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--input", type=int, default=64, help="crop (input) size")
    parser.add_argument("--scale", default="64,128", help="training scale Smin,Smax")
    args = parser.parse_args()
    smin, smax = (int(v) for v in args.scale.split(","))
    torch.set_num_threads(2)
    start = time.perf_counter()
    model = train(args.epochs, args.width, args.input, (smin, smax))
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.safetensors"
        save_weights(
            model, weights, class_names=[str(d) for d in range(10)], extra={"scale": [smin, smax], "crop": args.input}
        )
        base = EvalConfig(device="cpu")
        settings = [
            ("center", "single"),  # torchvision-style baseline: resize to Q, centre crop
            ("dense", "single"),  # Table 3: Q = (Smin + Smax) / 2
            ("dense", "paper"),  # Table 4: Q in {Smin, mid, Smax}
            ("multicrop", "paper"),  # Table 5
            ("dense+multicrop", "paper"),  # Table 5, fused
        ]
        results = [
            evaluate([weights], "digits", dataclasses.replace(base, method=m, scales=s), progress=False)
            for m, s in settings
        ]
        no_flip = evaluate([weights], "digits", dataclasses.replace(base, scales="paper", flip=False), progress=False)
    table = results_table([*results[:3], no_flip, *results[3:]])
    text = (
        "# Testing protocol on the built-in digits\n\n"
        f"VGG-A with BN at width {args.width:g}, input {args.input}, trained {args.epochs} epochs on the 1,437 "
        f"training digits with S jittered in [{smin}, {smax}]; 360 validation digits. Produced by "
        f"`PYTHONPATH=src python experiments/digits_dense_scales.py --epochs {args.epochs} --width {args.width:g} "
        f"--input {args.input} --scale {smin},{smax}` in {time.perf_counter() - start:.0f} s "
        f"(torch {torch.__version__}, CPU, 2 threads).\n\n{table}\n"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
