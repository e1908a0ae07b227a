"""Transfer learning in miniature on Imagenette: pretrain on five classes, transfer to the other five with few labels.

    nice -n 10 env PYTHONPATH=src python experiments/transfer/run.py                # everything; finished parts skipped
    nice -n 10 env PYTHONPATH=src python experiments/transfer/run.py --report-only  # RESULTS.md from metrics/ alone

A narrow VGG A (batch norm, width 1/8, 64-pixel crops) learns the first five Imagenette classes (the source), its
plateau rule and best epoch decided on a held-out tenth of its training photos, never on its test photos. On
the other five (the target), with 10 or 50 labelled photos per class, five ways to get a classifier are compared
over three seeds (each seed draws other photos and another init): training from scratch, a linear probe of the
frozen source net (`vggnet.probe`), fine-tuning only a new FC8 (`--freeze conv1_1-fc7`), fine-tuning every layer
(the copied ones at a tenth of the new head's LR), and the gap head (FC6/FC7 replaced by global average pooling).
Each is tested on all the target classes' validation photos. Every figure comes from one centre crop (`centre_crops`). The source net is then made smaller
(`vggnet.compress`: truncated SVD of FC6/FC7, int8 storage, the gap head by fine-tuning) and each version is timed
and tested on the source classes' validation photos. Runs go to runs/transfer/ (git-ignored); metrics/*.json and
RESULTS.md are committed. The photos are decoded once into a cache (experiments/imagenette's idea).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("imagenette_run", REPO / "experiments" / "imagenette" / "run.py")
imagenette = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = imagenette
_spec.loader.exec_module(imagenette)  # its decoded-photo cache and the folder it finds the photos in
DATA = imagenette.DATA

SIDE, CROP = 73, 64  # S = 73 and 64-pixel crops: the paper's 256 and 224 times 2/7, as experiments/imagenette
SOURCE = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079"]  # tench, springer, cassette player, ...
TARGET = ["n03394916", "n03417042", "n03425413", "n03445777", "n03888257"]  # French horn, garbage truck, gas pump, ...
BUDGETS, SEEDS = (10, 50), (0, 1, 2)
STEPS, BATCH = 200, 10  # SGD steps of every transfer run and photos per step, at either budget
ROUNDS, TIMED = 7, 640  # timing of the compression table: rounds, crops per model and round
GAP_EPOCHS = 3  # the gap head of the compression table, fine-tuned on the source photos
COMMON: dict[str, Any] = {
    "arch": "A_bn", "width": 1 / 8, "crop": CROP, "scale": [SIDE], "val_scale": SIDE, "momentum": 0.9,
    "weight_decay": 5e-4, "dropout": 0.5, "color_shift": 0.1, "threads": 2, "quiet": True, "init": "kaiming",
}  # fmt: skip
PRETRAIN: dict[str, Any] = {"batch": 64, "lr": 0.02, "epochs": 12, "patience": 1, "max_decreases": 2, "workers": 1}
# Few labels: a constant LR for a fixed number of steps at either budget (epochs = STEPS x BATCH / photos), the plateau
# rule off, the last weights tested (no validation-based choice).
METHODS: dict[str, dict[str, Any]] = {
    "scratch": {"lr": 0.02},
    "head-only": {"lr": 0.02, "freeze": "conv1_1-fc7"},
    "full": {"lr": 0.02, "backbone_lr_scale": 0.1},
    "gap-head": {"lr": 0.02, "backbone_lr_scale": 0.1, "head": "gap"},
}
PROBES, PROBE_C = {"probe": "fc7", "probe-conv": "relu5_2"}, 0.1  # fc7, and the last conv averaged over space

SETUP = f"""Regenerate with `nice -n 10 env PYTHONPATH=src python experiments/transfer/run.py` (finished parts are skipped;
`--report-only` rewrites this file from `metrics/`).

## Setup (every number is a constant of `run.py`)

- **Data**: Imagenette's ten classes split in two. Source: {", ".join(SOURCE)} (tench, English springer, cassette
  player, chain saw, church), all their training photos. Target: {", ".join(TARGET)} (French horn, garbage truck,
  gas pump, golf ball, parachute), {" or ".join(map(str, BUDGETS))} training photos per class drawn per seed; tested
  on every validation photo of the target classes. Photos decoded once at {SIDE}x{SIDE} (the rescale to S = {SIDE});
  {CROP}-pixel crops (the paper's 256 and 224 times 2/7, as in experiments/imagenette).
- **Net**: VGG A with batch norm at width 1/8 (convs 8-64 channels, FC 512), dropout 0.5, fc head over a 2x2 grid.
- **Source training**: SGD, batch {PRETRAIN["batch"]}, lr {PRETRAIN["lr"]}, momentum 0.9, weight decay 5e-4,
  {PRETRAIN["epochs"]} epochs at most with the plateau rule (patience {PRETRAIN["patience"]}, at most
  {PRETRAIN["max_decreases"]} decreases), random crop, flip, colour shift. The plateau rule and the best epoch look
  at a tenth of the source training photos held out from training (stratified, seed 0), never at the source
  validation photos the net is then tested on.
- **Testing**: one centre crop per photo ({CROP} px of the {SIDE}x{SIDE} photo where `vggnet.evaluate` and the linear
  probe place it), one code path (`centre_crops`) for every figure.
- **Transfer runs**: {STEPS} SGD steps of {BATCH} photos, lr
  {METHODS["full"]["lr"]} constant, the last weights tested (nothing is chosen on validation photos). Fine-tuning
  starts from the source net through `vggnet train --init-from` (its input preprocessing, a new FC8 for the target
  classes); head-only freezes conv1_1-fc7 (BN statistics included); full and gap-head train the copied layers at
  lr x {METHODS["full"]["backbone_lr_scale"]}. The linear probe fits a logistic regression (C = {PROBE_C}) on the
  frozen net's fc7 outputs of centre crops, or on its relu5_2 outputs averaged over space.
- **Machine**: {{machine}} CPU, 2 cores shared with other developers' jobs (the load average stood around 7
  during these runs, so times and images/s are wall-clock figures of a busy machine), torch {{torch}}.
"""


class Classes(Dataset):
    """Some classes of a cached split, relabelled 0..k-1, optionally `per_class` photos of each drawn with `seed`."""

    def __init__(self, base: Any, wnids: list[str], per_class: int | None = None, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.base, self.classes, self.indices, self.labels = base, list(wnids), [], []
        for new, wnid in enumerate(wnids):
            members = [i for i, y in enumerate(base.labels) if base.classes[y] == wnid]
            if per_class is not None:
                members = sorted(rng.choice(members, size=per_class, replace=False).tolist())
            self.indices += members
            self.labels += [new] * len(members)
        self.samples = [(base.samples[i][0], y) for i, y in zip(self.indices, self.labels, strict=True)]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.base[self.indices[i]][0], self.labels[i]


def config(out: Path, stats: Path, **changes: Any) -> Any:
    from vggnet.configs import TrainConfig

    return TrainConfig(**{**COMMON, **changes, "out": str(out), "stats": str(stats), "data": "imagenette subset"})


def train_or_resume(cfg: Any, datasets: tuple[Dataset, Dataset]) -> float:
    """Train (or finish) a run; returns the wall seconds spent now (0 when it had finished)."""
    from vggnet.train import CHECKPOINT, load_checkpoint, train

    out = Path(cfg.out)
    if (out / CHECKPOINT).is_file():
        position = load_checkpoint(out / CHECKPOINT)["position"]
        if position["stopped"] or position["epoch"] >= cfg.epochs:
            return 0.0
        cfg = dataclasses.replace(cfg, resume=str(out))
    start = time.perf_counter()
    train(cfg, datasets=datasets)
    return time.perf_counter() - start


def last_weights(run: Path) -> Path:
    """The run's final weights (not its best epoch's) as a weights file: few-label runs pick nothing on validation."""
    from vggnet.train import CHECKPOINT, load_checkpoint
    from vggnet.weights import load_weights, read_meta, save_weights

    model, meta = load_weights(run / "model.safetensors")
    model.load_state_dict(load_checkpoint(run / CHECKPOINT)["model"])
    meta = read_meta(run / "model.safetensors")
    path = run / "last.safetensors"
    save_weights(model, path, preprocessing=meta.preprocessing, class_names=meta.class_names, extra=meta.extra)
    return path


def centre_crops(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, CROP, CROP) uint8 centre crops of every photo of `data` and their labels: the one crop every figure
    uses, where `vggnet.evaluate` and the linear probe place it (`grid_positions`, one position)."""
    from vggnet.evaluate import grid_positions

    crops, labels = [], []
    for i in range(len(data)):
        image, label = data[i]
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, SIDE, SIDE): the cache holds S already
        ((top, left),) = grid_positions(pixels.shape[1], pixels.shape[2], CROP, 1)
        crops.append(pixels[:, top : top + CROP, left : left + CROP])
        labels.append(label)
    return torch.stack(crops), torch.tensor(labels)


def test(weights: Path, data: Dataset) -> dict[str, float]:
    """Top-1/top-5 error (%) of the centre crops, no flip, on every photo of `data`."""
    from vggnet.weights import load_weights

    model, meta = load_weights(weights)
    crops, labels = centre_crops(data)
    return {**accuracy(model.eval(), meta.preprocessing, crops, labels), "images": len(labels)}


def save(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


# -- the parts -------------------------------------------------------------------------------------------------


def pretrain(root: Path, parts: tuple[Any, Any], test_set: Any, metrics: Path) -> Path:
    """The source net: VGG A_bn at width 1/8 on the five source classes, the paper's plateau schedule, its epochs
    judged on `parts`' held-out tenth of the training photos; tested once on `test_set`."""
    out = root / "source"
    if not (metrics / "source.json").is_file():
        seconds = train_or_resume(config(out, root / "stats.json", **PRETRAIN, seed=0), parts)
        history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        chosen = {"selected_on": "held-out", "held_out": len(parts[1]), "trained_on": len(parts[0])}
        save(
            metrics / "source.json",
            {"seconds": round(seconds, 1), "history": history, **chosen, **test(out / "model.safetensors", test_set)},
        )
    return out / "model.safetensors"


def transfer(root: Path, source: Path, method: str, n: int, seed: int, data: dict[str, Any], metrics: Path) -> None:
    """One transfer run: `method` with `n` labelled photos per target class, seed `seed`; metrics/<name>.json."""
    name = f"{method}-n{n}-s{seed}"
    if (metrics / f"{name}.json").is_file():
        return
    train_set = Classes(data["train"], TARGET, n, seed)
    start = time.perf_counter()
    if method in PROBES:
        from vggnet.probe import linear_probe

        r = linear_probe(
            source, "target", PROBES[method], datasets=(train_set, data["target_val"]), c=PROBE_C, progress=False
        )
        result = {"top1": round(r.top1_error, 3), "top5": round(r.top5_error, 3), "images": r.images}
    else:
        epochs = STEPS * BATCH // len(train_set)  # 40 epochs of 50 photos or 8 of 250
        changes = {**METHODS[method], "batch": BATCH, "epochs": epochs, "seed": seed, "workers": 0}
        changes |= {"patience": 10**6} if method == "scratch" else {"patience": 10**6, "init_from": str(source)}
        out = root / name
        monitor = Classes(data["val"], TARGET, 5, 99)  # 25 photos: curves only, nothing is chosen on them
        train_or_resume(config(out, root / "stats.json", **changes), (train_set, monitor))
        result = test(last_weights(out), data["target_val"])
    save(
        metrics / f"{name}.json",
        {"method": method, "n": n, "seed": seed, "seconds": round(time.perf_counter() - start, 1), **result},
    )


CURVE_EVERY = 25  # steps between the test-error readings of the curves measurement (8 readings over STEPS)


def training_fit(out: Path, after: int, upto: int) -> dict[str, float]:
    """Mean training loss and top-1 error (%) of a run's epochs after..upto (its metrics.jsonl): how far it has fit
    its own photos since the previous reading."""
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][after:upto]
    return {
        "train_loss": round(statistics.mean(h["train_loss"] for h in history), 3),
        "train_top1": round(statistics.mean(h["train_top1"] for h in history), 1),
    }


def curves(root: Path, n: int, seed: int, data: dict[str, Any], metrics: Path) -> None:
    """A measurement, not a method: the from-scratch run `scratch-n<n>-s<seed>` trained again in segments, its last
    weights tested every CURVE_EVERY steps on every target test photo (nothing is chosen on them);
    metrics/curves-scratch-n<n>-s<seed>.json. It shows where each budget stands at each step, and how much the
    last weights at a constant LR move from one reading to the next."""
    import shutil

    name = f"scratch-n{n}-s{seed}"
    if (metrics / f"curves-{name}.json").is_file():
        return
    train_set = Classes(data["train"], TARGET, n, seed)
    every = CURVE_EVERY * BATCH // len(train_set)  # epochs per reading: 5 of 50 photos, 1 of 250
    out, readings, start = root / "curves" / name, [], time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)  # an interrupted measurement starts again: its early weights are gone
    for k in range(1, STEPS // CURVE_EVERY + 1):
        changes = {**METHODS["scratch"], "batch": BATCH, "epochs": k * every, "seed": seed, "workers": 0}
        cfg = config(out, root / "stats.json", **changes, patience=10**6)
        train_or_resume(cfg, (train_set, Classes(data["val"], TARGET, 5, 99)))  # the same run as `transfer`'s
        fit = training_fit(out, (k - 1) * every, k * every)
        readings.append(
            {"step": k * every * len(train_set) // BATCH, **fit, **test(last_weights(out), data["target_val"])}
        )
        print(f"  {name} step {readings[-1]['step']}: {readings[-1]['top1']:.1f}%", flush=True)
    save(
        metrics / f"curves-{name}.json",
        {
            "method": "scratch",
            "n": n,
            "seed": seed,
            "seconds": round(time.perf_counter() - start, 1),
            "epochs": STEPS // CURVE_EVERY * every,
            "readings": readings,
        },
    )


def compression(root: Path, source: Path, data: dict[str, Any], metrics: Path) -> None:
    """The source net made smaller in each way, each timed and tested on the source classes' validation photos."""
    from vggnet.compress import compress
    from vggnet.optimize import quantize_int8
    from vggnet.weights import load_weights

    if (metrics / "compression.json").is_file():
        return
    files, how_small = {"fp32": source}, {"fp32": "-"}
    for name, how in {
        "int8 storage": {"int8": True},
        "SVD 90% energy": {"energy": 0.9},
        "SVD 75% energy": {"energy": 0.75},
        "SVD rank 32": {"rank": 32},
        "SVD rank 8": {"rank": 8},
        "SVD rank 32 + int8": {"rank": 32, "int8": True},
    }.items():
        files[name] = root / f"compressed-{name.replace(' ', '_').replace('%', '')}.safetensors"
        report = compress(source, files[name], **how)
        ranks = [f"{k} {r} ({100 * report.energy[k]:.0f}%)" for k, r in report.ranks.items()]
        how_small[name] = ", ".join(ranks + [f"{k} whole" for k in report.kept_whole]) or "-"
    out = root / "source-gap"
    changes = {"head": "gap", "init_from": str(source), "lr": 0.02, "backbone_lr_scale": 0.1, "batch": 64}
    changes |= {"epochs": GAP_EPOCHS, "patience": 10**6, "workers": 1, "seed": 0}
    gap_seconds = train_or_resume(
        config(out, root / "stats.json", **changes), (data["train_source"], Classes(data["val"], SOURCE, 5, 99))
    )
    kept = out / "wall_seconds.json"  # the training time, for a table redone after the run (the timing rows)
    if gap_seconds:
        kept.write_text(json.dumps(gap_seconds))
    elif kept.is_file():
        gap_seconds = json.loads(kept.read_text())
    files["gap head"], how_small["gap head"] = last_weights(out), f"FC6/FC7 removed, {GAP_EPOCHS} epochs"
    crops, labels = centre_crops(data["source_val"])
    models, rows = {}, []
    for name, path in files.items():
        model, meta = load_weights(path)
        models[name] = model.eval()
        rows.append({"name": name, "how": how_small[name], "bytes": path.stat().st_size,
                     "params": sum(p.numel() for p in model.parameters()), **accuracy(model, meta.preprocessing, crops, labels)})  # fmt: skip
        if name == "fp32":
            batches = [meta.preprocessing(crops[i : i + 64].float() / 255) for i in range(0, 256, 64)]
            models["int8 runtime (quantize_int8)"] = quantize_int8(model, batches)
            rows.append({"name": "int8 runtime (quantize_int8)", "how": "int8 arithmetic", "bytes": None, "params": rows[0]["params"],
                         **accuracy(models["int8 runtime (quantize_int8)"], meta.preprocessing, crops, labels)})  # fmt: skip
    samples = images_per_s(list(models.values()), meta.preprocessing, crops)  # all share the source's input
    for row, speeds in zip(rows, samples, strict=True):
        ratios = [v / fp32 for v, fp32 in zip(speeds, samples[0], strict=True)]  # within each round
        row |= {"images_per_s": median_range(speeds)[0], "images_per_s_range": median_range(speeds)[1:]}
        row |= {"vs_fp32": median_range(ratios, 2)}
        print(f"  {row}", flush=True)
    save(
        metrics / "compression.json",
        {"rows": rows, "gap_train_seconds": round(gap_seconds, 1), "images": len(labels),
         "timing": {"rounds": ROUNDS, "images_per_round": TIMED, "load_average": os.getloadavg()[0]}},
    )  # fmt: skip


def accuracy(model: Any, pre: Any, crops: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1/top-5 error (%) of the centre crops, in batches of 64."""
    from vggnet.metrics import topk_error

    with torch.inference_mode():
        scores = torch.cat([model(pre(crops[i : i + 64].float() / 255)).float() for i in range(0, len(crops), 64)])
    return {"top1": round(topk_error(scores, labels, 1), 3), "top5": round(topk_error(scores, labels, 5), 3)}


def median_range(values: list[float], digits: int = 1) -> list[float]:
    """[median, lowest, highest], rounded."""
    return [round(float(np.median(values)), digits), round(min(values), digits), round(max(values), digits)]


def images_per_s(models: list[Any], pre: Any, crops: torch.Tensor) -> list[list[float]]:
    """Per model, per round: images/s of forward passes over TIMED crops (batches of 64, preprocessing included),
    the models alternated over ROUNDS rounds with the order rotated each round, so load on the shared machine
    falls on all of them alike; one untimed warm-up batch each first."""
    batches = [crops[i : i + 64] for i in range(0, TIMED, 64)]
    samples: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            model(pre(batches[0].float() / 255))
        for r in range(ROUNDS):
            for k in [(r + j) % len(models) for j in range(len(models))]:
                start = time.perf_counter()
                for batch in batches:
                    models[k](pre(batch.float() / 255))
                samples[k].append(TIMED / (time.perf_counter() - start))
    return samples


def forget_source(root: Path, metrics: Path) -> list[Path]:
    """Remove the source net and everything made from it (their metrics and run folders), so that the next run
    makes them again under the current recipe; the from-scratch runs stay. Returns what was removed."""
    import shutil

    made_from_source = [m for m in [*PROBES, *METHODS] if m != "scratch"]
    gone = [metrics / "source.json", metrics / "compression.json"]
    gone += [p for m in made_from_source for p in metrics.glob(f"{m}-n*-s*.json")]
    gone += [root / "source", root / "source-gap", *root.glob("compressed-*.safetensors")]
    gone += [p for m in made_from_source for p in root.glob(f"{m}-n*-s*")]
    removed = [p for p in gone if p.exists()]
    for path in removed:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report-only", action="store_true", help="only regenerate RESULTS.md from metrics/")
    p.add_argument(
        "--redo-source",
        action="store_true",
        help="first remove the source net and every result made from it (metrics and runs), then make them again",
    )
    p.add_argument(
        "--curves",
        nargs="?",
        const=",".join(map(str, SEEDS)),
        default="",
        metavar="SEEDS",
        help="only measure the from-scratch runs' test error every 25 steps, for these seeds (default: all three)",
    )
    p.add_argument(
        "--data",
        default=imagenette.DEFAULT_DATA,
        help="Imagenette: a folder, or a name fetched once (imagenette: 320 px, imagenette-160); default: the shared copy, else imagenette",
    )
    p.add_argument("--root", default=str(REPO / "runs" / "transfer"), help="where the runs and the photo cache go")
    p.add_argument("--out", default=str(HERE), help="where metrics/ and RESULTS.md go")
    args = p.parse_args(argv)
    out_dir, root = Path(args.out), Path(args.root)
    curve_seeds = [x for x in args.curves.split(",") if x]
    if not all(x.isdigit() for x in curve_seeds):
        print(f"run.py: error: --curves {args.curves}: expected seeds such as 0,1,2", file=sys.stderr)
        return 2
    metrics = out_dir / "metrics"
    if not args.report_only:
        from vggnet.data import dataset_folder

        try:
            data_root = dataset_folder(args.data)  # a folder, or a name fetched once
        except (OSError, ValueError) as e:
            print(f"run.py: error: {e}", file=sys.stderr)
            return 2
        if not (data_root / "train").is_dir():
            print(f"run.py: error: {data_root}: no Imagenette train/ folder", file=sys.stderr)
            return 2
        torch.set_num_threads(2)
        if args.redo_source:
            print(f"removed {len(forget_source(root, metrics))} files and folders made from the source net", flush=True)
        start = time.perf_counter()
        cache = root / "cache"
        train_cache = imagenette.cached(data_root, "train", cache, SIDE)
        val_cache = imagenette.cached(data_root, "val", cache, SIDE)
        data = {
            "train": train_cache, "val": val_cache, "train_source": Classes(train_cache, SOURCE),
            "source_val": Classes(val_cache, SOURCE), "target_val": Classes(val_cache, TARGET),
        }  # fmt: skip
        parts = imagenette.holdout_split(data["train_source"])  # (nine tenths to train on, a tenth to choose epochs)
        if not (root / "stats.json").is_file():  # the mean RGB of every source training photo: it chooses nothing
            from vggnet.data import compute_stats

            compute_stats(data["train_source"], 10000, 0).save(root / "stats.json")
        if args.curves:
            for seed in map(int, curve_seeds):
                for n in BUDGETS:
                    print(f"curves: scratch n={n} seed={seed}", flush=True)
                    curves(root, n, seed, data, metrics)
            print(f"{(time.perf_counter() - start) / 60:.1f} minutes this time", flush=True)
            return 0
        save(metrics / "machine.json", {"machine": platform.machine(), "torch": torch.__version__})
        print("source net", flush=True)
        source = pretrain(root, parts, data["source_val"], metrics)
        for n in BUDGETS:
            for seed in SEEDS:
                for method in ["scratch", *PROBES, *[m for m in METHODS if m != "scratch"]]:
                    print(f"{method} n={n} seed={seed}", flush=True)
                    transfer(root, source, method, n, seed, data, metrics)
        print("compression", flush=True)
        compression(root, source, data, metrics)
        print(f"{(time.perf_counter() - start) / 60:.1f} minutes this time", flush=True)
    sys.path.insert(0, str(HERE))
    import report

    print(report.write_results(metrics, out_dir, SETUP, BUDGETS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
