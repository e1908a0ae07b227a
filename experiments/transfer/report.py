"""RESULTS.md of the transfer experiment, from metrics/*.json alone (`run.py --report-only`)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

METHOD_NAMES = {
    "scratch": "from scratch (all layers, random init)",
    "probe": "linear probe (fc7 of the frozen source net)",
    "probe-conv": "linear probe (relu5_2 of the frozen source net, averaged over space)",
    "head-only": "head-only fine-tuning (new FC8, conv1_1-fc7 frozen)",
    "full": "full fine-tuning (new FC8; copied layers at LR / 10)",
    "gap-head": "gap head (FC6/FC7 replaced; copied layers at LR / 10)",
}


def load(metrics: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None]:
    """(source net, transfer runs, compression) as the metrics folder holds them; None where missing."""
    source = json.loads((metrics / "source.json").read_text()) if (metrics / "source.json").is_file() else None
    compression = metrics / "compression.json"
    runs = [json.loads(p.read_text()) for p in sorted(metrics.glob("*-n*-s*.json"))]  # method-n<labels>-s<seed>.json
    return source, runs, json.loads(compression.read_text()) if compression.is_file() else None


def spread(values: list[float]) -> str:
    """mean ± sample std (min-max) over seeds, or the one value."""
    if len(values) == 1:
        return f"{values[0]:.1f} (1 seed)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def transfer_table(runs: list[dict[str, Any]], budgets: tuple[int, ...]) -> str:
    from vggnet.tables import markdown_table

    rows = []
    for method, label in METHOD_NAMES.items():
        cells = []
        for n in budgets:
            errors = [r["top1"] for r in runs if r["method"] == method and r["n"] == n]
            cells.append(spread(errors) if errors else "not run yet")
        rows.append([label, *cells])
    return markdown_table(["method", *[f"{n} labels / class: top-1 err (%)" for n in budgets]], rows)


def best_lines(runs: list[dict[str, Any]], budgets: tuple[int, ...]) -> list[str]:
    """Per budget: the method with the lowest mean error, and how far from training from scratch it is."""
    lines = []
    for n in budgets:
        means = {
            m: statistics.mean(e)
            for m in METHOD_NAMES
            if (e := [r["top1"] for r in runs if r["method"] == m and r["n"] == n])
        }
        if not means:
            continue
        best = min(means, key=means.get)
        line = f"- {n} labels per class: lowest mean error {means[best]:.1f}%, {METHOD_NAMES[best]}"
        if "scratch" in means and best != "scratch":
            line += (
                f"; {means['scratch'] - means[best]:.1f} points below training from scratch ({means['scratch']:.1f}%)"
            )
        lines.append(line + ".")
    return lines


def compression_table(compression: dict[str, Any]) -> str:
    from vggnet.tables import human_bytes, markdown_table

    base = compression["rows"][0]
    rows = [
        [
            r["name"],
            r.get("how", "-"),
            human_bytes(r["bytes"]) if r["bytes"] else "(in memory)",
            f"{r['params']:,}",
            f"{r['params'] / base['params']:.0%}",
            f"{r['images_per_s']:.0f} ({r['images_per_s_range'][0]:.0f}-{r['images_per_s_range'][1]:.0f})"
            if "images_per_s_range" in r
            else f"{r['images_per_s']:.0f}",
            "{:.2f}x ({:.2f}-{:.2f})".format(*r["vs_fp32"]) if "vs_fp32" in r else "-",
            f"{r['top1']:.1f}",
        ]
        for r in compression["rows"]
    ]
    header = [
        "version",
        "ranks (energy kept)",
        "file",
        "parameters",
        "of fp32",
        "images/s (range)",
        "vs fp32",
        "top-1 err (%)",
    ]
    return markdown_table(header, rows)


def timing_sentence(compression: dict[str, Any]) -> str:
    """How the images/s column was measured."""
    t = compression.get("timing")
    if t is None:
        return "images/s: one timed pass each, in sequence, 2 threads (a busy machine: read them as rough)."
    return (
        f"images/s: forward passes with preprocessing over {t['images_per_round']} crops per version, 2 threads, "
        f"the versions alternated over {t['rounds']} rounds (order rotated), median (lowest-highest); "
        "vs fp32: the median of the per-round ratios to fp32 (lowest-highest). Load average "
        f"{t['load_average']:.1f} when it ended, so read the ratios, not the absolute rates."
    )


def vgg16_sizes() -> str:
    """File sizes of full VGG16 (1000 classes) in each compressed form, from its shapes (no weights needed)."""
    import torch

    from vggnet import build
    from vggnet.model import count_parameters
    from vggnet.tables import markdown_table
    from vggnet.weights import stored_bytes
    from vggnet.weights.compression import make_low_rank

    rows = []
    with torch.device("meta"):
        full = build("D")
        variants = [("fp32", full, False), ("int8 storage", full, True)]
        for r in (1024, 256, 64):
            low = make_low_rank(build("D"), {0: r, 3: r})
            variants += [(f"SVD rank {r} (FC6, FC7)", low, False), (f"SVD rank {r} + int8", low, True)]
        gap = build("D", head="gap")
        variants += [("gap head", gap, False), ("gap head + int8", gap, True)]
        total = stored_bytes(full.state_dict())
        for name, model, int8 in variants:
            size = stored_bytes(model.state_dict(), int8)
            rows.append([name, f"{size / 2**20:.1f} MiB", f"{count_parameters(model):,}", f"{size / total:.1%}"])
    return markdown_table(["VGG16 (1000 classes)", "tensors", "parameters", "of fp32"], rows)


def write_results(metrics: Path, out: Path, setup: str, budgets: tuple[int, ...] = (10, 50)) -> Path:
    """Write out/RESULTS.md from the metrics; returns its path."""
    source, runs, compression = load(metrics)
    parts = ["# Transfer learning on Imagenette: five classes to the other five, with few labels\n", setup]
    parts.append("## The source net\n")
    if source is None:
        parts.append("Not trained yet.\n")
    else:
        epochs = len(source["history"])
        parts.append(
            f"VGG A_bn at width 1/8 trained {epochs} epochs on the five source classes in {source['seconds'] / 60:.1f} "
            f"minutes: top-1 error {source['top1']:.1f}% on their {source['images']} validation photos (centre crop).\n"
        )
    parts.append("## Transfer to the five target classes\n")
    parts.append(
        f"Top-1 error (%) on all {runs[0]['images'] if runs and 'images' in runs[0] else '?'} validation photos of "
        "the target classes (chance: 80%), mean ± standard deviation over seeds (min-max); each seed draws other "
        "labelled photos and another initialisation of the new layers.\n"
    )
    parts.append(transfer_table(runs, budgets) + "\n")
    if runs:
        parts.append("\n".join(best_lines(runs, budgets)) + "\n")
    seconds = [r["seconds"] for r in runs]
    if seconds:
        parts.append(f"{len(runs)} runs, {sum(seconds) / 60:.1f} minutes of wall time in all.\n")
    parts.append("## Smaller models\n")
    if compression is None:
        parts.append("Not run yet.\n")
    else:
        parts.append(
            f"The source net in each smaller form, tested on the {compression['images']} source validation photos "
            "(centre crops, batches of 64). " + timing_sentence(compression) + " int8 storage keeps "
            "int8 weights in the file and computes in float32 after loading; the int8 runtime row is "
            "`vggnet.optimize.quantize_int8` (int8 arithmetic, calibrated on 256 of the photos). The gap head was "
            f"fine-tuned on the source photos, every layer ({compression['gap_train_seconds'] / 60:.1f} minutes; "
            "the copied layers at LR / 10). A layer whose rank would not make it smaller stays whole.\n"
        )
        parts.append(compression_table(compression) + "\n")
    parts.append(
        "At full size the FC layers dominate: the same forms of VGG16, sizes from its shapes alone (no accuracy: "
        "there are no ImageNet weights on this machine):\n"
    )
    parts.append(vgg16_sizes() + "\n")
    path = out / "RESULTS.md"
    path.write_text("\n".join(parts))
    return path
