"""Reproduce the paper's Tables 3-6 in miniature on Imagenette: train the grid, evaluate it, write RESULTS.md.

    PYTHONPATH=src python experiments/imagenette/run.py                 # everything (resumes: finished runs skipped)
    PYTHONPATH=src python experiments/imagenette/run.py --only A,D      # some runs
    PYTHONPATH=src python experiments/imagenette/run.py --report-only   # RESULTS.md and plots from metrics/ alone

Runs go to runs/imagenette/<name> (git-ignored); only metrics/<name>.json is committed. Every network is
trained by vggnet.train.train and tested by vggnet.evaluate.evaluate. Geometry: the paper's 224-pixel
crop scaled by 2/7 (see GEOMETRY); the decoded images are cached once as uint8 arrays under
runs/imagenette/cache so a tiny net is not starved by JPEG decoding.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# /work/shared/data/imagenette: found next to the checkout or next to a folder holding it (worktrees).
DATA = next(
    (p / "shared" / "data" / "imagenette" for p in REPO.parents if (p / "shared" / "data" / "imagenette").is_dir()),
    REPO.parent / "shared" / "data" / "imagenette",
)
DEFAULT_DATA = str(DATA) if DATA.is_dir() else "imagenette"  # elsewhere `--data imagenette`: downloaded once

# The paper's geometry (crop 224, S = 256 or [256, 512], Q in {256, 384, 512}) times 2/7, rounded.
GEOMETRY = {"factor": "2/7", "crop": 64, "fixed_s": 73, "jitter": [73, 146], "q": [73, 110, 146]}
CACHE_SIDE = max(GEOMETRY["jitter"][1], GEOMETRY["q"][-1])  # the largest scale any run or test uses

# The training recipe shared by every run (section 3.1 at this scale; see RESULTS.md for why).
WIDTH = 1 / 8
BASE: dict[str, Any] = {
    "width": WIDTH,
    "batch": 64,
    "lr": 1e-2,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "dropout": 0.5,
    "patience": 1,  # the paper's plateau rule over a few epochs: one epoch without progress
    "max_decreases": 2,
    "crop": GEOMETRY["crop"],
    "color_shift": 0.1,
    "workers": 1,
    "threads": 2,
    "quiet": True,
}
# Net A's init: the paper's N(0, 0.01) with the std scaled by 1/sqrt(width) (vggnet.train.build_model) keeps
# the full-width forward variance, and stayed at chance here (epoch 1: train loss 2.303 = ln 10, val top-1
# 90.9%); with a budget of a few epochs we start A from Glorot, which the paper notes works without pre-training.
A_INIT = "glorot"
# Deeper nets from A: the paper draws the layers A lacks from N(0, 0.01). Here D so initialised (9 new layers at
# std 0.0283, each shrinking the signal's std 2-6x) stayed at chance for 2 epochs (val top-1 89.9%, 90.1%;
# metrics/probes/D-from-A-paper-init.json), so the new layers are Glorot-initialised too (Run.init).
FINE_TUNE_LR = 1e-3  # section 3.1: nets initialised from a trained net of the same configuration use 1e-3


@dataclass
class Run:
    """One training run of the grid: what it trains and what it starts from."""

    name: str
    model: str
    epochs: int
    init: str = "glorot"  # of the layers not copied: paper: N(0, 0.01 * sqrt(1 / width)) | glorot
    init_from: str = ""  # the name of another run of this grid
    jitter: bool = False  # S ~ U[37, 73] instead of S = 37
    seed: int = 0
    width: float | None = None  # None: BASE's width

    @property
    def needs_gpu(self) -> bool:
        """Full-width runs: minutes on a GPU, hours on this project's 2-core CPU."""
        return self.width == 1

    def config(self, root: Path, data: str, stats: str) -> Any:
        """The TrainConfig of this run inside `root`."""
        from vggnet.configs import TrainConfig

        scale = GEOMETRY["jitter"] if self.jitter else [GEOMETRY["fixed_s"]]
        fine_tune = bool(self.init_from) and RUNS_BY_NAME[self.init_from].model == self.model
        recipe = {**BASE, "lr": FINE_TUNE_LR} if fine_tune else BASE
        return TrainConfig(
            **{**recipe, "width": self.width or recipe["width"]},
            data=data,
            stats=stats,
            arch=self.model,
            init=self.init,
            init_from=str(root / self.init_from) if self.init_from else "",
            scale=list(scale),
            val_scale=GEOMETRY["fixed_s"],  # per-epoch curves on one footing for every run
            epochs=self.epochs,
            seed=self.seed,
            out=str(root / self.name),
        )


EPOCHS, DEEP_EPOCHS, TUNE_EPOCHS = 16, 10, 3  # the grid: 187 epochs, about 90 min on the quiet 2-core CPU


def _grid() -> list[Run]:
    runs = [
        Run("A", "A", EPOCHS, init=A_INIT),
        Run("D", "D", DEEP_EPOCHS, init_from="A"),
        Run("D-jit", "D", TUNE_EPOCHS, init_from="D", jitter=True),
        Run("E", "E", DEEP_EPOCHS, init_from="A"),
        Run("C", "C", DEEP_EPOCHS, init_from="A"),  # before E-jit and B: it decides a claim (1x1 vs 3x3)
        Run("E-jit", "E", TUNE_EPOCHS, init_from="E", jitter=True),
        Run("B", "B", DEEP_EPOCHS, init_from="A"),
        Run("C-jit", "C", TUNE_EPOCHS, init_from="C", jitter=True),
        Run("A-LRN", "A-LRN", EPOCHS, init=A_INIT),
        Run("D-glorot", "D", EPOCHS, init="glorot"),
    ]
    for seed in (1, 2):  # the key comparisons over three seeds: A vs D, D fixed vs jittered
        runs += [
            Run(f"A-s{seed}", "A", EPOCHS, init=A_INIT, seed=seed),
            Run(f"D-s{seed}", "D", DEEP_EPOCHS, init_from=f"A-s{seed}", seed=seed),
            Run(f"D-jit-s{seed}", "D", TUNE_EPOCHS, init_from=f"D-s{seed}", jitter=True, seed=seed),
        ]
    # LRN's verdict rested on one A-LRN run against A's three seeds: A-LRN gets seeds of its own
    runs += [Run(f"A-LRN-s{seed}", "A-LRN", EPOCHS, init=A_INIT, seed=seed) for seed in (1, 2)]
    # Outside the verdicts: the best configuration at 2x and 4x the width (4x and 16x the multiply-adds), and
    # jittered at 2x: how far width moves the best single net towards the 20% bar at the same epochs.
    runs += [
        Run("A-LRN-w4", "A-LRN", EPOCHS, init=A_INIT, width=1 / 4),
        Run("A-LRN-w4-jit", "A-LRN", TUNE_EPOCHS, init_from="A-LRN-w4", jitter=True, width=1 / 4),
        Run("A-LRN-w2", "A-LRN", EPOCHS, init=A_INIT, width=1 / 2),
        Run("A-LRN-w2-e32", "A-LRN", 2 * EPOCHS, init=A_INIT, width=1 / 2),  # A-LRN-w2's LR never dropped in 16
        # two more draws of the best CPU recipe (65-85 min each here): its spread, and an ensemble of its own
        *(Run(f"A-LRN-w2-e32-s{seed}", "A-LRN", 2 * EPOCHS, init=A_INIT, width=1 / 2, seed=seed) for seed in (1, 2)),
        # and the paper's jittered fine-tune of a draw: its multi-scale test, and an ensemble partner within reach
        Run("A-LRN-w2-e32-s1-jit", "A-LRN", TUNE_EPOCHS, init_from="A-LRN-w2-e32-s1", jitter=True, width=1 / 2, seed=1),
        # full width: run on a GPU (`--workers 8`), from photos pre-shrunk to 84 px so they could travel to it
        Run("A-LRN-w1", "A-LRN", EPOCHS, init=A_INIT, width=1),
        Run("A-LRN-w1-e32", "A-LRN", 2 * EPOCHS, init=A_INIT, width=1),  # room for both LR drops
        Run("D-w1-e32", "D", 2 * EPOCHS, init="glorot", width=1),  # depth at full width, Glorot as D-glorot
        # the same two again (cuDNN is not deterministic): how much a rerun moves them, and their ensemble
        Run("A-LRN-w1-e32-r2", "A-LRN", 2 * EPOCHS, init=A_INIT, width=1),
        Run("D-w1-e32-r2", "D", 2 * EPOCHS, init="glorot", width=1),
        # more draws of both, with seeds of their own: is the 20% bar met by the recipe or by one lucky draw?
        Run("A-LRN-w1-e32-s1", "A-LRN", 2 * EPOCHS, init=A_INIT, width=1, seed=1),
        Run("A-LRN-w1-e32-s2", "A-LRN", 2 * EPOCHS, init=A_INIT, width=1, seed=2),
        Run("D-w1-e32-s1", "D", 2 * EPOCHS, init="glorot", width=1, seed=1),
    ]
    # The grid again at full width (GPU; gpu_grid.sh), twice the 1/8 grid's epochs as the runs above: A from
    # Glorot, B-E from it, C-E jittered from those; A-LRN and D-glorot are A-LRN-w1-e32 and D-w1-e32. The
    # jittered runs need photos of at least 146 pixels (the largest S), which gpu_grid.sh checks.
    runs += [
        Run("A-w1", "A", 2 * EPOCHS, init=A_INIT, width=1),
        *(Run(f"{x}-w1", x, 2 * DEEP_EPOCHS, init_from="A-w1", width=1) for x in "BCDE"),
        *(Run(f"{x}-jit-w1", x, 2 * TUNE_EPOCHS, init_from=f"{x}-w1", jitter=True, width=1) for x in "CDE"),
    ]
    return runs


RUNS = _grid()  # in priority order
RUNS_BY_NAME = {r.name: r for r in RUNS}
ENSEMBLES = {
    "D-jit+E-jit": ["D-jit", "E-jit"],
    "D+E": ["D", "E"],
    "A-LRN-w1+D-w1 (r2)": ["A-LRN-w1-e32-r2", "D-w1-e32-r2"],  # the full-width pair (GPU)
    "A-LRN-w2 x2": ["A-LRN-w2-e32-s1", "A-LRN-w2-e32-s2"],  # two draws of the best CPU recipe
    "A-LRN-w2 s1 + jit": ["A-LRN-w2-e32-s1", "A-LRN-w2-e32-s1-jit"],  # a net and its jittered fine-tune
    "A-LRN-w2 s1 + jit + s2": ["A-LRN-w2-e32-s1", "A-LRN-w2-e32-s1-jit", "A-LRN-w2-e32-s2"],
    "D-w1+E-w1": ["D-w1", "E-w1"],  # the paper's D+E at full width
    "D-jit-w1+E-jit-w1": ["D-jit-w1", "E-jit-w1"],
    # every full-width 32-epoch draw whose posteriors this machine holds (the first draws' did not come back)
    "A-LRN-w1 x3+D-w1 x2": [
        "A-LRN-w1-e32-r2",
        "A-LRN-w1-e32-s1",
        "A-LRN-w1-e32-s2",
        "D-w1-e32-r2",
        "D-w1-e32-s1",
    ],
}  # Table 6 (section 4.4)

# Evaluations of every net (section 3.2); fusion and ensembles average these posteriors.
EVALS = {
    "dense_single": {"method": "dense", "scales": "single"},  # Table 3
    "dense_multi": {"method": "dense", "scales": "multi"},  # Table 4
    "multicrop_multi": {"method": "multicrop", "scales": "multi", "grid": 3},  # Table 5
}
EVAL_LIMIT = 1000  # validation images evaluated (evenly spaced over the sorted folder: ~100 per class)


PREAMBLE = f"""## Setup (scaled from the paper; every number here is a constant of `run.py`)

- **Geometry**: the paper's sizes times {GEOMETRY["factor"]}: crop {GEOMETRY["crop"]} (224), fixed S = \
{GEOMETRY["fixed_s"]} (256), jittered S in [{GEOMETRY["jitter"][0]}, {GEOMETRY["jitter"][1]}] ([256, 512]), \
test Q in {{{", ".join(map(str, GEOMETRY["q"]))}}} ({{256, 384, 512}}); multi-scale Q for fixed S is \
{{S-9, S, S+9}} = {{64, 73, 82}} (the paper's {{S-32, S, S+32}}, 32 x 64/224 = 9 pixels, via `scales="multi"`). \
At crop 64 the five pools leave FC6 a 2x2 window (the paper's 7x7).
  An earlier grid at crop 32 (factor 1/7), trained 2-4 epochs per net on the machine under heavy load, gave \
64-80% top-1 error; on the quiet machine an epoch at 64 px takes 20-30 s, which buys this grid 4x the pixels \
and 4x the epochs.
- **Nets**: Table 1 configurations with every conv and FC width times {WIDTH:g} (conv 8-64 channels, FC 512), \
no batch norm, dropout 0.5 on FC6/FC7.
- **Training** (section 3.1): SGD, batch {BASE["batch"]}, momentum {BASE["momentum"]}, weight decay \
{BASE["weight_decay"]}, lr {BASE["lr"]:g} divided by 10 after {BASE["patience"]} epoch without a better \
validation error (at most {BASE["max_decreases"]} times), random crop, flip, PCA colour shift \
{BASE["color_shift"]}, mean RGB subtracted. Epochs: A and A-LRN {EPOCHS}, B-E from A {DEEP_EPOCHS}, \
jittered fine-tunes {TUNE_EPOCHS} at lr {FINE_TUNE_LR:g} (all layers, from the fixed-S net of the same \
configuration, as the paper did from S = 384); D-glorot {EPOCHS}.
- **Initialisation**: B-E copy conv1_1, conv2_1, conv3_1, conv3_2, FC6-FC8 from the trained A (section 3.1). \
The paper draws every other weight from N(0, 0.01) with zero biases; that std was set for full width, and \
`vggnet.train` multiplies it by sqrt(1/width) so each layer keeps its full-width forward gain: \
std = 0.01 x sqrt(8) = 0.0283. Measured in the earlier 32-px grid at that std: net A stayed at chance (epoch 1: train loss 2.303 = \
ln 10, val top-1 90.9%; `metrics/probes/A-paper-init-std-0.0283.jsonl`), as the issue measured at 1/4 width \
over 4 epochs; and D initialised from a trained A (65.9%) with its 9 new layers at that std also stayed at \
chance for 2 epochs (val top-1 89.9%, 90.1%; `metrics/probes/D-from-A-paper-init.json`): each new layer \
multiplies the signal's std by sqrt(fan-in x 0.0283^2 / 2): 0.17 for conv1_2 (fan-in 72), 0.48 for \
conv4/conv5 (fan-in 576), about 1e-4 over the nine. With a budget of {EPOCHS} epochs per \
net we could not wait for that to resolve, so every layer not copied is **Glorot**-initialised (the paper's \
later remark that Glorot init works without pre-training); A and A-LRN are Glorot throughout, B-E are A's \
layers plus Glorot, and D-glorot is Glorot throughout without the net-A step.
- **Evaluation** (section 3.2) with `vggnet.evaluate.evaluate`, flips on, on {EVAL_LIMIT} of the 3,925 \
validation photos (evenly spaced over the class-sorted folder, the same photos for every net): dense single \
scale, dense multi-scale, multi-crop on a 3x3 grid (x2 flips, 18 crops per scale; the paper's 5x5 grid of \
224-crops is 8 pixels apart at Q = 256; here 3x3 crops of 64 are 0, 4.5 and 9 pixels apart at Q = 64, 73, \
82 and 4.5-41 pixels apart at Q = 73-146) at the multi-scale Q. \
Dense + multi-crop fusion and the ensembles average the posteriors `evaluate` returned \
(`Result.probs`), which is what `method="dense+multicrop"` and an ensemble evaluation compute, without \
running every net twice.
- **Per-epoch curves** (`curves.png`, the last column of the run table) are `vggnet.train`'s validation: one \
centre crop at Q = 73 of all 3,925 photos, no flip.
- **Data**: the photos (224x224 JPEGs) are decoded once, rescaled to 146x146 (the largest S and Q) and \
memory-mapped (`runs/imagenette/cache`, never committed); every rescale to S or Q starts from that copy. The mean \
RGB and the PCA of pixel colours (for the colour shift) come from the training photos at 73x73.
- **Width probes** (outside the verdicts): the best configuration, A-LRN, again at width 1/4 (A-LRN-w4, 4x the \
multiply-adds; and its jittered fine-tune A-LRN-w4-jit) and 1/2 (A-LRN-w2, 16x), with the same recipe and epochs: \
how far width alone moves the best single net towards the issue's 20% bar. The plateau rule decides when the \
learning rate drops: A-LRN-w4's dropped after epoch 12 (val top-1 41.7% -> 31.9% the next epoch), A-LRN-w2's \
never did in its 16 epochs (still improving at epoch 14), so the wider net stopped before its schedule ran out. \
A-LRN-w2-e32 is the same net given 32 epochs: its rate dropped after epoch 21 (val top-1 29.7% -> 23.9% the next \
epoch) and it reached 17.8% multi-crop, the first net trained on this CPU under the 20% bar. Its posteriors were \
lost with the run's scratch folder, so two more draws of the recipe (-s1, -s2, 80-85 minutes each on this shared \
machine) give its spread (the seeds table: 18.1 ± 0.4% multi-crop over the three) and the ensemble \
"A-LRN-w2 x2"; A-LRN-w2-e32-s1-jit is the paper's jittered fine-tune of -s1 (3 epochs at S in [73, 146]), tested at Q in {73, 110, 146} where the fixed-S nets are \
tested at {64, 73, 82}; its ensemble with -s1 pairs two views of one draw, so it is the least independent of the \
ensembles. Posteriors are now kept beside the metrics (`probs/<run>.pt`: 1,000 photos x 10 classes per \
evaluation, 120 kB), so ensembles can be recomputed from the repository alone.
- **Full width on a GPU** (outside the verdicts): A-LRN-w1 (16 epochs), A-LRN-w1-e32 and D-w1-e32 (up to 32 \
epochs: room for both LR drops; both stopped at 29, plateaued after the second) trained on one NVIDIA H100 lent \
for a few minutes (`run.py --only ... --data .gpudata --workers 8`, fp32, same recipe otherwise). Only 64 MiB could \
travel to it, so the photos went as copies shrunk to 84x84 (JPEG quality 85, 42 MB; `python \
experiments/imagenette/shrink.py ../shared/data/imagenette .gpudata --side 84`), upscaled to the 146-pixel \
cache there: every fixed-S scale (S = 73, Q = 64-82) is below 84 pixels, so these runs see nearly what the CPU \
runs see, and no jittered run was made from them. The two 32-epoch runs were made twice (-r2; GPU convolutions \
are not bit-deterministic, and the plateau rule then stops at other epochs): A-LRN 18.1% then 21.5% multi-crop, \
D 21.3% then 20.6%, so one draw of A-LRN met the issue's 20% bar and a rerun did not. The ensemble is the -r2 pair, \
whose posteriors came back from the GPU machine. \
The whole grid at full width (A-w1 from Glorot, B-w1 to E-w1 from it, 32 and 20 epochs: twice the 1/8 grid's) \
and more draws of both 32-epoch recipes with seeds of their own (-s1, -s2) are `gpu_grid.sh`'s runs, four side \
by side on one GPU; their section below reads "not run yet" until a GPU machine has run them.
- **Machine**: this project's 2-core Intel Xeon CPU, no GPU; times below are wall times, with the author's other \
work (tests, benchmarks) sometimes running beside the grid. A-LRN-s1 and A-LRN-s2 ran later (session 3), A-LRN-s1 \
with the NCHW training of the rest of the grid and stopped (SIGSTOP) while benchmarks ran, which its 23.7 minutes \
include; A-LRN-s2 with `vggnet train`'s newer channels-last default and fused SGD (the same arithmetic up to \
float rounding, 1.3x faster a step).

"""


# -- a decoded cache of the photos ----------------------------------------------------------------------


class CachedImages(torch.utils.data.Dataset):
    """An image folder decoded once into a (N, side, side, 3) uint8 array; items are PIL images like ImageFolder's."""

    def __init__(self, pixels: np.ndarray, labels: list[int], classes: list[str], paths: list[str]) -> None:
        self.pixels, self.labels, self.classes = pixels, labels, classes
        self.samples = list(zip(paths, labels, strict=True))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(np.asarray(self.pixels[i])), self.labels[i]


def cached(root: Path, split: str, cache: Path, side: int = CACHE_SIDE) -> CachedImages:
    """The split rescaled to side x side (the photos are square) once, then memory-mapped from `cache`."""
    from vggnet.data import ImageFolder, rescale

    arrays, index = cache / f"{split}-{side}.npy", cache / f"{split}-{side}.json"
    if not arrays.is_file():
        folder = ImageFolder(root / split)
        pixels = np.zeros((len(folder), side, side, 3), dtype=np.uint8)
        for i in range(len(folder)):
            img, _ = folder[i]
            if img is None:
                raise ValueError(f"{folder.samples[i][0]}: unreadable image; the cache needs every image")
            img = rescale(img, side)
            w, h = img.size
            x0, y0 = (w - side) // 2, (h - side) // 2
            pixels[i] = np.asarray(img.crop((x0, y0, x0 + side, y0 + side)))
        cache.mkdir(parents=True, exist_ok=True)
        meta = {"classes": folder.classes, "samples": [[str(p), y] for p, y in folder.samples]}
        np.save(str(arrays) + ".tmp.npy", pixels)
        Path(str(arrays) + ".tmp.npy").replace(arrays)
        index.write_text(json.dumps(meta))
    meta = json.loads(index.read_text())
    return CachedImages(
        np.load(arrays, mmap_mode="r"),
        [y for _, y in meta["samples"]],
        meta["classes"],
        [p for p, _ in meta["samples"]],
    )


HOLDOUT = 0.1  # the fraction of each class's training photos held out to choose epochs (claims, transfer)


class Split(torch.utils.data.Dataset):
    """Some items of a dataset, with its class list (what vggnet.train needs of a dataset)."""

    def __init__(self, base: torch.utils.data.Dataset, indices: list[int], root: str) -> None:
        self.base, self.indices, self.root, self.classes = base, indices, root, base.classes
        self.samples = [base.samples[i] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.indices[i]]


def holdout_split(base: torch.utils.data.Dataset, fraction: float = HOLDOUT, seed: int = 0) -> tuple[Split, Split]:
    """(training, held-out) parts of a training split: `fraction` of each class, drawn once with a fixed seed."""
    labels = np.array([y for _, y in base.samples])
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for c in range(len(base.classes)):
        members = np.flatnonzero(labels == c)
        held += sorted(rng.choice(members, size=max(1, round(fraction * len(members))), replace=False).tolist())
    kept = sorted(set(range(len(base))) - set(held))
    return Split(base, kept, "train"), Split(base, sorted(held), "holdout")


# -- the driver ----------------------------------------------------------------------------------------


def train_run(run: Run, root: Path, data: Path, stats: Path, epochs: int | None = None) -> float:
    """Train one run (resuming an interrupted one) on the decoded cache; returns the wall seconds spent now."""
    from vggnet.train import CHECKPOINT, train

    cfg = run.config(root, str(data), str(stats))
    if epochs:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    out = Path(cfg.out)
    if (out / CHECKPOINT).is_file():
        cfg = dataclasses.replace(cfg, resume=str(out))
    start = time.perf_counter()
    cache = root / "cache"
    train(cfg, datasets=(cached(data, "train", cache), cached(data, "val", cache)))
    return time.perf_counter() - start


def run_finished(out: Path) -> bool:
    """Whether the run's resume checkpoint says it has finished."""
    from vggnet.train import CHECKPOINT, CONFIG, load_checkpoint

    if not (out / CHECKPOINT).is_file():
        return False
    position = load_checkpoint(out / CHECKPOINT)["position"]
    epochs = json.loads((out / CONFIG).read_text())["epochs"]
    return bool(position["stopped"]) or position["epoch"] >= epochs


def evaluate_run(out: Path, val: torch.utils.data.Dataset, limit: int, probs_dir: Path) -> dict[str, Any]:
    """Every evaluation of EVALS on one run; the posteriors are kept in probs_dir for fusion and ensembles."""
    from vggnet.configs import EvalConfig
    from vggnet.evaluate import evaluate
    from vggnet.metrics import topk_error

    results: dict[str, Any] = {}
    posteriors = {}
    for key, spec in EVALS.items():
        r = evaluate([out], val, EvalConfig(**spec, limit=limit, workers=0, batch_size=64), progress=False)
        results[key] = _summary(r.top1_error, r.top5_error, r.images, r.seconds, r.method, r.scales[0])
        posteriors[key] = r.probs
        labels = r.labels
    # Section 3.2 / Table 5: dense+multicrop averages the two methods' posteriors (per scale, then over
    # scales, which is the same mean), exactly what EvalConfig(method="dense+multicrop") computes.
    fused = (posteriors["dense_multi"] + posteriors["multicrop_multi"]) / 2
    results["fusion"] = _summary(topk_error(fused, labels, 1), topk_error(fused, labels, 5), len(labels), 0.0)
    probs_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"labels": labels, **{k: v for k, v in posteriors.items()}}, probs_dir / f"{out.name}.pt")
    return results


def _summary(top1: float, top5: float, images: int, seconds: float, method: str = "", scales: Any = None) -> dict:
    d = {"top1": round(top1, 3), "top5": round(top5, 3), "images": images, "seconds": round(seconds, 1)}
    if method:
        d.update(method=method, scales=scales)
    return d


def evaluate_ensemble(members: list[str], probs_dir: Path) -> dict[str, Any] | None:
    """Table 6: posteriors of the members averaged, per evaluation and fused; None until all are evaluated."""
    import report  # beside this file; main() put its folder on the path

    from vggnet.metrics import topk_error

    loaded = report.load_posteriors(probs_dir, members)
    if loaded is None:
        return None
    labels = loaded[0]["labels"]
    out: dict[str, Any] = {"members": members}
    for key in [*EVALS, "fusion"]:
        p = report.average_posteriors(loaded, key)
        out[key] = _summary(topk_error(p, labels, 1), topk_error(p, labels, 5), len(labels), 0.0)
    return out


def write_ensembles(probs_dir: Path, metrics_dir: Path) -> None:
    """metrics/ensemble_<name>.json for every ensemble whose members have been evaluated."""
    for ens, members in ENSEMBLES.items():
        result = evaluate_ensemble(members, probs_dir)
        if result is not None:
            metrics_dir.mkdir(parents=True, exist_ok=True)
            (metrics_dir / f"ensemble_{ens}.json").write_text(json.dumps(result, indent=1) + "\n")


def write_metrics(run: Run, out: Path, train_seconds: float, evals: dict[str, Any], metrics_dir: Path) -> Path:
    """metrics/<name>.json: the run's recipe, per-epoch history, wall time and evaluations."""
    from vggnet.train import METRICS

    history = [json.loads(line) for line in (out / METRICS).read_text().splitlines() if line.strip()]
    cfg = json.loads((out / "config.json").read_text())
    keep = ("width", "init", "init_std", "batch", "lr", "epochs", "scale", "crop", "seed", "patience")
    record = {
        "name": run.name,
        "run": dataclasses.asdict(run),
        "config": {"model": cfg.get("arch", cfg.get("model")), **{k: cfg[k] for k in keep}},  # "model": older runs
        "train_seconds": round(train_seconds, 1),
        "history": history,
        "evals": evals,
    }
    metrics_dir.mkdir(parents=True, exist_ok=True)
    path = metrics_dir / f"{run.name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated run names (default: the whole grid, in order)")
    p.add_argument("--epochs", type=int, default=0, help="override every run's epochs (quick trials)")
    p.add_argument("--batch", type=int, default=0, help="override the batch size (quick trials)")
    p.add_argument("--max-minutes", type=float, default=0, help="start no new run after this many minutes")
    p.add_argument("--evaluate-only", action="store_true", help="evaluate finished runs, train nothing")
    p.add_argument("--report-only", action="store_true", help="only regenerate RESULTS.md and plots")
    p.add_argument("--prepare-only", action="store_true", help="only build the decoded cache and the stats")
    p.add_argument("--no-report", action="store_true", help="write metrics only (for runs side by side)")
    p.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="Imagenette: a folder, or a name fetched once (imagenette: 320 px, imagenette-160); default: the shared copy, else imagenette",
    )
    p.add_argument("--root", default=str(REPO / "runs" / "imagenette"), help="where the runs go")
    p.add_argument("--out", default=str(HERE), help="where metrics/, RESULTS.md and the plots go")
    p.add_argument("--limit", type=int, default=EVAL_LIMIT, help="evaluate this many validation images (0: all)")
    p.add_argument("--workers", type=int, default=BASE["workers"], help="data-loading processes per run")
    args = p.parse_args(argv)
    BASE["workers"] = args.workers
    BASE["batch"] = args.batch or BASE["batch"]

    sys.path.insert(0, str(HERE))
    import report

    out_dir = Path(args.out)
    metrics_dir = out_dir / "metrics"
    root = Path(args.root)
    if args.report_only:  # ensembles too, where this machine holds the members' posteriors
        write_ensembles(out_dir / "probs", metrics_dir)
        print(report.write_results(metrics_dir, out_dir, PREAMBLE))
        return 0
    from vggnet.data import dataset_folder

    try:
        data = dataset_folder(args.data)  # a folder, or a name fetched once
    except (OSError, ValueError) as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    if not (data / "train").is_dir():
        print(f"run.py: error: {data}: no Imagenette train/ folder", file=sys.stderr)
        return 2
    names = [n for n in args.only.split(",") if n] or [r.name for r in RUNS]
    if (
        not args.only and not args.prepare_only and not torch.cuda.is_available()
    ):  # hours each on a CPU; --only still runs them
        gpu = [r.name for r in RUNS if r.needs_gpu and not (metrics_dir / f"{r.name}.json").is_file()]
        if gpu:
            print(f"skipped (full width, needs a GPU: see gpu_grid.sh): {', '.join(gpu)}", flush=True)
        names = [n for n in names if n not in gpu]
    unknown = [n for n in names if n not in RUNS_BY_NAME]
    if unknown:
        print(f"run.py: error: unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS_BY_NAME)}", file=sys.stderr)
        return 2
    cache = root / "cache"
    stats = root / "stats.json"
    if not stats.is_file():
        from vggnet.data import compute_stats

        root.mkdir(parents=True, exist_ok=True)
        compute_stats(cached(data, "train", cache), 10000, 0).save(stats)
    if args.prepare_only:
        cached(data, "val", cache)
        print(f"prepared {cache} and {stats}", flush=True)
        return 0
    start = time.perf_counter()
    for name in names:
        run = RUNS_BY_NAME[name]
        out = root / name
        if (metrics_dir / f"{name}.json").is_file() and not args.evaluate_only:
            print(f"{name}: metrics exist, skipped", flush=True)
            continue
        if args.max_minutes and (time.perf_counter() - start) / 60 > args.max_minutes:
            print(f"{name}: not started (--max-minutes {args.max_minutes} reached)", flush=True)
            continue
        seconds_file = out / "train_seconds.json"
        if not args.evaluate_only and not run_finished(out):
            if run.init_from and not run_finished(root / run.init_from):
                print(f"{name}: waits for {run.init_from}, skipped", flush=True)
                continue
            print(f"{name}: training", flush=True)
            before = json.loads(seconds_file.read_text()) if seconds_file.is_file() else 0.0
            seconds = before + train_run(run, root, data, stats, args.epochs or None)
            seconds_file.write_text(json.dumps(seconds))
        if not run_finished(out):
            continue
        print(f"{name}: evaluating", flush=True)
        evals = evaluate_run(out, cached(data, "val", cache), args.limit, out_dir / "probs")
        seconds = json.loads(seconds_file.read_text()) if seconds_file.is_file() else 0.0
        print(f"{name}: {write_metrics(run, out, seconds, evals, metrics_dir)}", flush=True)
    if not args.no_report:
        write_ensembles(out_dir / "probs", metrics_dir)
        print(report.write_results(metrics_dir, out_dir, PREAMBLE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
