"""The main job on built-in data, run by `make demo` and `vggnet demo`."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .analysis import format_table2, table2
from .configs import TABLE1, EvalConfig, TrainConfig
from .model import VGG, count_parameters

STRIDE = 32  # five 2x2 max-pools: dense evaluation's windows lie this many input pixels apart (section 3.2)


@dataclass(frozen=True)
class Geometry:
    """Sizes of the demo's digits: the crop (the network's input), stage 1's fixed S, stage 2's [Smin, Smax]; width."""

    crop: int = 32
    fixed: int = 32
    jitter: tuple[int, int] = (32, 36)
    width: float = 1 / 8


# The digits fill their frame, so a crop of a digit rescaled far beyond the crop holds a fragment, and below
# Q = crop + 32 dense evaluation is one window at the top-left corner: the jitter keeps a crop within 89% of
# the digit and that window within 2 px of the centre (experiments/results/digits_demo_geometry.md).
DEMO_GEOMETRY = Geometry()


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


def demo_configs(
    quick: bool, out: Path, geometry: Geometry = DEMO_GEOMETRY, seed: int = 0
) -> tuple[TrainConfig, TrainConfig]:
    """The demo's two runs: fixed S, then scale jittering fine-tuned from it (section 3.1).

    Differences from the paper, and why: width 1/8; batch 32 (1,437 training images); Kaiming init
    (std 0.01 does not train a narrow 11-layer net); no flips (mirrored digits are other shapes); no middle
    step; S and its jitter are small (see DEMO_GEOMETRY). Each run draws its digits at its largest S, as
    `vggnet evaluate` does, so training and testing rescale the same images.
    """
    g = geometry
    smin, smax = g.jitter
    common = dict(
        data="digits", model="A", width=g.width / 2 if quick else g.width, crop=g.crop, batch=64 if quick else 32,
        init="kaiming", flip=False, patience=3, workers=1, threads=1, stats_samples=300 if quick else 10000,
        seed=seed, quiet=quick,
    )  # fmt: skip
    fixed = TrainConfig(
        **common, digits_size=g.fixed, scale=[g.fixed], lr=1e-2, epochs=2 if quick else 30,
        out=str(out / f"fixed-S{g.fixed}"),
    )  # fmt: skip
    jittered = TrainConfig(
        **common,
        digits_size=smax,
        scale=[smin, smax],
        lr=1e-3,  # the paper's LR for fine-tuning a net at a new scale
        epochs=1 if quick else 10,
        init_from=fixed.out,
        out=str(out / f"jittered-S{smin}-{smax}"),
    )
    return fixed, jittered


def train_stages(fixed: TrainConfig, jittered: TrainConfig) -> tuple[Path, Path]:
    """Train stage 1 (fixed S) then stage 2 (jittered, from stage 1's weights); print each best error."""
    from .train import best_record, train

    for cfg in (fixed, jittered):
        shutil.rmtree(cfg.out, ignore_errors=True)  # the demo's own runs, rewritten each time
    runs = []
    for n, cfg, what in (
        (1, fixed, f"fixed S={fixed.scale[0]}"),
        (2, jittered, f"scale jittering S in [{jittered.scale[0]}, {jittered.scale[1]}], fine-tuned from 1"),
    ):
        print(f"  {n}. {what} -> {cfg.out}")
        runs.append(train(cfg))
        best = best_record(runs[-1])
        print(f"     best validation top-1 error {best['val_top1']:.2f}% (epoch {best['epoch']})")
    return runs[0], runs[1]


def protocol_results(fixed_run: Path, jittered_run: Path, limit: int = 0) -> list:
    """Section 3.2 on both runs: centre crop beside dense at Q=S (Table 3), and multi-scale dense (Table 4)."""
    from .evaluate import evaluate

    base = EvalConfig(flip=False, limit=limit, device="cpu")  # no flips: mirrored digits are other shapes
    settings = [
        (fixed_run, "center", "single"),
        (fixed_run, "dense", "single"),
        (jittered_run, "center", "single"),
        (jittered_run, "dense", "single"),
        (jittered_run, "dense", "paper"),
    ]
    return [
        evaluate([run], "digits", dataclasses.replace(base, method=m, scales=s), progress=False)
        for run, m, s in settings
    ]


def dense_note(crop: int, q: int) -> str:
    """Where dense evaluation's windows lie at test scale Q, against the centre crop (printed under the table)."""
    windows, dropped = (q - crop) // STRIDE + 1, (q - crop) % STRIDE
    return (
        f"Dense evaluation slides the {crop}x{crop} net over the image in steps of {STRIDE} px (five 2x2 pools). At "
        f"Q={q} that is {windows}x{windows} window{'s' if windows > 1 else ''} from the top-left corner: the pools drop "
        f"the last {dropped} px, where the centre crop drops {(q - crop) / 2:g} px on each side. "
        f"The paper's test scales, 224 + 32k, are tiled exactly; the digits fill their frame, so S stays close to "
        f"the crop here (docs/training.md)."
    )


def write_digits_view(run: Path, out: Path, count: int = 3) -> Path:
    """The viewer page (`vggnet view`) of a run's net on the first `count` validation digits, saved beside it."""
    from .data import open_dataset
    from .evaluate.networks import train_scale
    from .runs import weights_file
    from .view import write_view
    from .weights import read_meta

    weights = weights_file(run)
    data = open_dataset("digits", "val", size=train_scale(read_meta(weights))[1])  # as `vggnet evaluate` draws them
    photos = []
    for i in range(count):
        image, label = data[i]
        photos.append(out / "digits" / f"val{i}-{label}.png")
        photos[-1].parent.mkdir(parents=True, exist_ok=True)
        image.save(photos[-1])
    return write_view(out / "view.html", weights=weights, images=photos)


def train_digits(quick: bool, out: Path, geometry: Geometry = DEMO_GEOMETRY) -> list:
    """Train narrow net A on the built-in digits, fixed S then jittered; print the testing protocol's table.

    Ends by writing the viewer page of the trained net on a few validation digits. Returns the table's results.
    """
    from .evaluate import results_table

    fixed, jittered = demo_configs(quick, out, geometry)
    torch.set_num_threads(1)
    print(f"Training narrow net A (width {fixed.width}) on the built-in digits, {fixed.crop}x{fixed.crop} crops:")
    start = time.perf_counter()
    fixed_run, jittered_run = train_stages(fixed, jittered)
    print(f"  (training took {time.perf_counter() - start:.0f} s; plots: metrics.png in each run folder)")
    results = protocol_results(fixed_run, jittered_run, limit=40 if quick else 0)
    n = results[0].images
    print(f"Testing protocol (section 3.2) on {n} validation digits, no flips (mirrored digits are other shapes):")
    print(results_table(results))
    print(dense_note(geometry.crop, results[3].scales[0][0]))
    page = write_digits_view(jittered_run, out)
    print(f"The trained net in the viewer, on three validation digits: open {page.resolve().as_uri()} in a browser")
    return results
