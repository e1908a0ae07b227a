"""The main job on built-in data, run by `make demo` and `vggnet demo`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from .analysis import format_table2, table2
from .configs import TABLE1, TrainConfig
from .model import VGG, count_parameters


def run_demo(quick: bool = False, out: str | Path = "runs/demo") -> int:
    """Print Table 2, run a forward pass of every configuration, then train narrow net A on the digits."""
    print("Table 2 of the paper, measured from the models:")
    print(format_table2(table2()))
    print()
    size = 64 if quick else 224
    width = 1 / 8 if quick else 1.0  # building twelve 130M-parameter nets alone takes ~20 s
    x = torch.randn(1, 3, size, size)
    print(f"Forward pass of every configuration at {size}x{size}" + (f", width {width}:" if quick else ":"))
    with torch.inference_mode():
        for letter in TABLE1:
            for bn in (False, True):
                model = VGG(arch=letter, batch_norm=bn, width=width).eval()
                start = time.perf_counter()
                logits = model(x)
                ms = 1000 * (time.perf_counter() - start)
                name = model.cfg.display_name()
                print(
                    f"  {name:<9} {count_parameters(model):>13,} params -> logits {tuple(logits.shape)} in {ms:6.0f} ms"
                )
    print()
    train_digits(quick, Path(out))
    return 0


def demo_configs(quick: bool, out: Path) -> tuple[TrainConfig, TrainConfig]:
    """The demo's two runs: fixed S, then scale jittering fine-tuned from it (section 3.1, in the paper's ratios).

    The crop is 32 pixels, so S=256 -> 37 and [256, 512] -> [37, 73]. Differences from the paper, and why:
    width 1/8; batch 32 (1,437 training images); Kaiming init (std 0.01 does not train a narrow 11-layer net);
    no flips (mirrored digits are other shapes); the S=384 middle step is skipped.
    """
    crop = 32
    smin, smax = round(crop * 256 / 224), round(crop * 512 / 224)
    common = dict(
        data="digits", digits_size=32, model="A", width=1 / 16 if quick else 1 / 8, crop=crop, batch=64 if quick else 32,
        init="kaiming", flip=False, patience=3, workers=1, threads=1, stats_samples=300 if quick else 10000,
    )  # fmt: skip
    fixed = TrainConfig(**common, scale=[smin], lr=1e-2, epochs=2 if quick else 30, out=str(out / f"fixed-S{smin}"))
    jittered = TrainConfig(
        **common,
        scale=[smin, smax],
        lr=1e-3,  # the paper's LR for fine-tuning a net at a new scale
        epochs=1 if quick else 10,
        init_from=fixed.out,
        out=str(out / f"jittered-S{smin}-{smax}"),
    )
    return fixed, jittered


def train_digits(quick: bool, out: Path) -> dict[str, float]:
    """Train narrow net A with scale jittering on the built-in digits; print and return its validation errors."""
    from .data import EvalTransform, Transformed, collate_skipping, open_dataset
    from .train import best_record, train, validate
    from .weights import load_weights

    fixed, jittered = demo_configs(quick, out)
    for cfg in (fixed, jittered):
        shutil.rmtree(cfg.out, ignore_errors=True)  # the demo's own runs, rewritten each time
    torch.set_num_threads(1)
    print(f"Training narrow net A (width {fixed.width}) on the built-in digits, {fixed.crop}x{fixed.crop} crops:")
    start = time.perf_counter()
    print(f"  1. fixed S={fixed.scale[0]} -> {fixed.out}")
    best = best_record(train(fixed))
    print(f"     best validation top-1 error {best['val_top1']:.2f}% (epoch {best['epoch']})")
    print(f"  2. scale jittering S in [{jittered.scale[0]}, {jittered.scale[1]}], fine-tuned from 1 -> {jittered.out}")
    run = train(jittered)
    best = best_record(run)
    print(f"     best validation top-1 error {best['val_top1']:.2f}% (epoch {best['epoch']})")
    seconds = time.perf_counter() - start

    model, meta = load_weights(run / "model.safetensors")
    smin, crop = meta.extra["scale"][0], meta.extra["crop"]
    val = Transformed(
        open_dataset("digits", "val", jittered.digits_size), EvalTransform(smin, crop, meta.preprocessing.mean)
    )
    loader = torch.utils.data.DataLoader(val, batch_size=100, collate_fn=collate_skipping)
    result = validate(model, loader)
    print(
        f"Validation ({int(result['images'])} digits, centre {crop}x{crop} crop at S={smin}): "
        f"top-1 error {result['top1']:.2f}%, top-5 error {result['top5']:.2f}%  "
        f"(training took {seconds:.0f} s; run directory {run}, plot {run / 'metrics.png'})"
    )
    # Section 3.2 on the same run: dense evaluation at one scale beside three (Tables 3 and 4).
    from .configs import EvalConfig
    from .evaluate import scale_report

    _, table = scale_report([run], "digits", EvalConfig(method="dense", flip=False, limit=40 if quick else 0))
    print(
        "Testing protocol (section 3.2), dense evaluation (no flips: mirrored digits are other shapes), one scale vs three:"
    )
    print(table)
    return result
