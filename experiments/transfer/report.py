"""RESULTS.md of the transfer experiment, from metrics/*.json alone (`run.py --report-only`)."""

from __future__ import annotations

import json
import math
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
    runs = [json.loads(p.read_text()) for p in sorted(metrics.glob("*-n*-s*.json")) if not p.name.startswith("curves-")]
    return source, runs, json.loads(compression.read_text()) if compression.is_file() else None


def load_curves(metrics: Path) -> list[dict[str, Any]]:
    """The curves measurement (`run.py --curves`), when it has run."""
    return [json.loads(p.read_text()) for p in sorted(metrics.glob("curves-*.json"))]


DEPENDS_ON_SOURCE = ("probe", "probe-conv", "head-only", "full", "gap-head")  # every method but from scratch


def earlier_recipe(source: dict[str, Any], runs: list[dict[str, Any]], compression: dict[str, Any] | None) -> str:
    """What the committed figures of a source net chosen on its test photos can and cannot say, and the rerun."""
    redo = [r for r in runs if r["method"] in DEPENDS_ON_SOURCE]
    minutes = (source["seconds"] + sum(r["seconds"] for r in redo)) / 60
    return (
        "**These figures come from the earlier recipe.** The committed source net was made before its epochs were "
        f"judged on held-out training photos: its plateau rule and best epoch looked at the same {source['images']:,} "
        "source validation photos it is tested on below, so its error there is optimistic by an unknown amount, and "
        "so may be every row that starts from it (the probes, head-only, full fine-tuning, the gap head and the "
        "smaller models)."
        + (
            f" Its error was also read through two centre crops one pixel apart ({source['top1']:.1f}% below, "
            f"{compression['rows'][0]['top1']:.1f}% in the smaller-models table); `run.py` now uses one."
            if compression and compression["rows"][0]["top1"] != source["top1"]
            else ""
        )
        + " The from-scratch rows use no source net and stand as "
        "they are. To redo the rest: `run.py --redo-source` (the source net, "
        f"{len(redo)} transfer runs and the smaller-models table: {minutes:.0f} minutes of wall time when they were "
        "last run, plus the table's timing)."
    )


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


SHORT = {
    "scratch": "from scratch",
    "probe": "fc7 probe",
    "probe-conv": "relu5_2 probe",
    "head-only": "head-only",
    "full": "full fine-tuning",
    "gap-head": "gap head",
}


def errors_by_seed(runs: list[dict[str, Any]], method: str, n: int) -> dict[int, float]:
    """seed -> top-1 error (%) of one method at one budget."""
    return {r["seed"]: r["top1"] for r in runs if r["method"] == method and r["n"] == n}


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], float, float] | None:
    """Per-seed differences b - a over the seeds both have (a seed draws the same labelled photos for every
    method), their mean and standard error; None under two shared seeds."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [b[s] - a[s] for s in seeds]
    return diffs, statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))


def apart(a: str, b: str, n: int, runs: list[dict[str, Any]]) -> str:
    """Words for how far b's error lies above a's at budget n, against the spread of the per-seed differences."""
    pair = paired(errors_by_seed(runs, a, n), errors_by_seed(runs, b, n))
    if pair is None:
        return "too few seeds to compare"
    diffs, mean, se = pair
    each = " / ".join(f"{d:+.1f}" for d in diffs)
    beyond = "beyond" if abs(mean) > 2 * se else "within"
    return (
        f"{SHORT[b]} minus {SHORT[a]} {mean:+.1f} points (per seed {each}; standard error {se:.1f}): {beyond} "
        "2 standard errors of the seed spread"
    )


def ranking_lines(runs: list[dict[str, Any]], budgets: tuple[int, ...]) -> list[str]:
    """Per budget: the methods from lowest to highest mean error, "<" where a step exceeds twice the standard
    error of its per-seed differences and "≈" where it does not; then the lowest against the next and scratch."""
    lines = []
    for n in budgets:
        means = {m: statistics.mean(e.values()) for m in METHOD_NAMES if (e := errors_by_seed(runs, m, n))}
        if not means:
            continue
        order = sorted(means, key=means.get)
        chain = f"{SHORT[order[0]]} {means[order[0]]:.1f}"
        for a, b in zip(order, order[1:], strict=False):
            pair = paired(errors_by_seed(runs, a, n), errors_by_seed(runs, b, n))
            sign = "vs" if pair is None else "<" if pair[1] > 2 * pair[2] else "≈"
            chain += f" {sign} {SHORT[b]} {means[b]:.1f}"
        lines.append(f"- {n} labels per class: {chain}.")
        if len(order) > 1:
            lines.append(f"  Lowest mean: {SHORT[order[0]]}; {apart(order[0], order[1], n, runs)}.")
        if "scratch" in means and order[0] != "scratch":
            lines.append(f"  Against training from scratch: {apart(order[0], 'scratch', n, runs)}.")
    return lines


def welch_words(a: list[float], b: list[float]) -> str:
    """mean(b) - mean(a) against twice its standard error, for samples that share nothing (other photos)."""
    diff = statistics.mean(b) - statistics.mean(a)
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return (
        f"{diff:+.1f} points, standard error {se:.1f}: {'beyond' if abs(diff) > 2 * se else 'within'} 2 standard errors"
    )


def anomaly_lines(runs: list[dict[str, Any]], budgets: tuple[int, ...], curves: list[dict[str, Any]]) -> list[str]:
    """The two rows that look wrong (more labels, higher error from scratch; head-only above scratch), what the
    recipe does at each budget, and the curves measurement when it has run."""
    low, high = min(budgets), max(budgets)
    scratch = {n: list(errors_by_seed(runs, "scratch", n).values()) for n in budgets}
    if len(scratch[low]) < 2 or len(scratch[high]) < 2:
        return []
    lines = [
        f"- **From scratch, {high} labels against {low}**: {welch_words(scratch[low], scratch[high])} (the budgets "
        "draw other photos, so the seeds are not paired). Both budgets get the same number of SGD steps at a "
        "constant LR (Setup: the epoch count is steps x batch / photos), the plateau rule is off and the last "
        "weights are tested, so neither more steps for the small budget nor a rule acting on a few validation "
        "photos can make the difference."
    ]
    pair = paired(errors_by_seed(runs, "scratch", low), errors_by_seed(runs, "head-only", low))
    probe = errors_by_seed(runs, "probe", low)
    if pair is not None:
        text = f"- **Head-only against from scratch at {low} labels**: {apart('scratch', 'head-only', low, runs)}."
        if probe:
            text += (
                f" Head-only reads the same fc7 features as the fc7 linear probe ({statistics.mean(probe.values()):.1f}%"
                " at this budget), which is no better than from scratch either: FC6/FC7 of a net trained on five "
                "other classes carry little that transfers, while its conv features do (the relu5_2 probe and "
                "the fine-tuned rows)."
            )
        lines.append(text)
    if curves:
        lines.append(curves_words(curves, low, high, runs))
    return lines


def curves_table(curves: list[dict[str, Any]], budgets: tuple[int, ...]) -> str:
    """Test error and training loss at every reading of the from-scratch runs, mean ± sd over seeds per budget."""
    from vggnet.tables import markdown_table

    steps = sorted({r["step"] for c in curves for r in c["readings"]})
    rows = []
    for step in steps:
        row = [str(step)]
        for n in budgets:
            at = [r for c in curves if c["n"] == n for r in c["readings"] if r["step"] == step]
            row.append(spread([r["top1"] for r in at]) if at else "-")
            row.append(f"{statistics.mean(r['train_loss'] for r in at):.2f}" if at and "train_loss" in at[0] else "-")
        rows.append(row)
    header = ["SGD step"]
    for n in budgets:
        header += [f"{n} labels / class: test top-1 err (%)", f"{n} labels: training loss (mean of seeds)"]
    return markdown_table(header, rows)


def curves_words(curves: list[dict[str, Any]], low: int, high: int, runs: list[dict[str, Any]]) -> str:
    """What the curves measurement shows, in numbers: how much the last weights move, where each budget ends on
    its test photos and on its own training photos, and what that says about the from-scratch rows."""
    by = {(c["n"], c["seed"]): [r["top1"] for r in c["readings"]] for c in curves}
    moves = [abs(b - a) for v in by.values() for a, b in zip(v[len(v) // 2 :], v[len(v) // 2 + 1 :], strict=False)]
    ends = {n: [v[-1] for (m, _), v in by.items() if m == n] for n in (low, high)}
    last = {n: [c["readings"][-1] for c in curves if c["n"] == n] for n in (low, high)}
    rerun = [
        v[-1] - r["top1"]
        for (m, s), v in by.items()
        for r in runs
        if r["method"] == "scratch" and (r["n"], r["seed"]) == (m, s)
    ]
    same = [abs(d) < 0.06 for d in rerun]
    every = curves[0]["readings"][0]["step"]
    text = (
        f"- **Measured** (`run.py --curves`, the from-scratch runs trained again with their test error read every "
        f"{every} steps; table below): over the second half of training the last weights' error moves by "
        f"{statistics.mean(moves):.1f} points on average from one reading to the next (largest {max(moves):.1f}), "
        "at a constant LR."
    )
    beyond = False
    if len(ends[low]) >= 2 and len(ends[high]) >= 2:
        text += f" At the last step, {high} labels against {low}: {welch_words(ends[low], ends[high])}."
        diff = statistics.mean(ends[high]) - statistics.mean(ends[low])
        beyond = diff > 2 * math.sqrt(sum(statistics.variance(v) / len(v) for v in ends.values()))
    elif ends[low] and ends[high]:
        seeds = ", ".join(str(c["seed"]) for c in curves if c["n"] == low)
        text += (
            f" At the last step: {low} labels {' / '.join(f'{v:.1f}' for v in ends[low])}%, {high} labels "
            f"{' / '.join(f'{v:.1f}' for v in ends[high])}% (seeds {seeds})."
        )
    if last[low] and last[high] and all("train_loss" in r for r in [*last[low], *last[high]]):
        loss = {n: statistics.mean(r["train_loss"] for r in last[n]) for n in (low, high)}
        err = {n: statistics.mean(r["train_top1"] for r in last[n]) for n in (low, high)}
        epochs = {n: next(c.get("epochs", 0) for c in curves if c["n"] == n) for n in (low, high)}
        text += (
            f" On their own training photos over the last {every} steps, the {low}-label nets reach a loss of "
            f"{loss[low]:.2f} ({err[low]:.0f}% training error), the {high}-label nets {loss[high]:.2f} "
            f"({err[high]:.0f}%), where chance is ln 5 = 1.61."
        )
        if beyond and loss[high] > loss[low] and all(epochs.values()):
            text += (
                f" So the gap is real at this budget, and it comes with the recipe's fixed step budget (set for "
                f"fine-tuning): in the same steps a {high}-label net sees each photo {epochs[high]} times, a "
                f"{low}-label net {epochs[low]} times, and when the budget runs out the {high}-label nets have "
                "barely left chance on their own photos. The from-scratch row measures what that budget does, not "
                f"what {high} labels can teach a net from scratch; whether they overtake the {low}-label nets given "
                "more steps was not measured."
            )
    if same:
        text += f" {sum(same)} of {len(same)} final readings reproduce the committed from-scratch errors (within 0.05)"
        if not all(same):
            text += (
                f"; {'they' if not any(same) else 'the others'} differ by up to {max(abs(d) for d in rerun):.1f} "
                "points: the same recipe and seed trained again with today's code on today's machine did not give "
                "the same weights, one more draw of the same noise"
            )
        text += "."
    return text


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
    curves = load_curves(metrics)
    machine = json.loads((metrics / "machine.json").read_text()) if (metrics / "machine.json").is_file() else {}
    setup = setup.replace("{machine}", machine.get("machine", "(not recorded)"))
    setup = setup.replace("{torch}", machine.get("torch", "(not recorded)"))
    parts = ["# Transfer learning on Imagenette: five classes to the other five, with few labels\n", setup]
    if source is not None and source.get("selected_on") != "held-out":
        parts.append(earlier_recipe(source, runs, compression) + "\n")
    parts.append("## The source net\n")
    if source is None:
        parts.append("Not trained yet.\n")
    else:
        epochs = len(source["history"])
        chosen = (
            f"its best epoch chosen on {source['held_out']:,} held-out training photos"
            if source.get("selected_on") == "held-out"
            else "its best epoch chosen on these same validation photos (the earlier recipe)"
        )
        parts.append(
            f"VGG A_bn at width 1/8 trained {epochs} epochs on the five source classes in {source['seconds'] / 60:.1f} "
            f"minutes, {chosen}: top-1 error {source['top1']:.1f}% on their {source['images']} validation photos "
            "(centre crop).\n"
        )
    parts.append("## Transfer to the five target classes\n")
    parts.append(
        f"Top-1 error (%) on all {runs[0]['images'] if runs and 'images' in runs[0] else '?'} validation photos of "
        "the target classes (chance: 80%), mean ± standard deviation over seeds (min-max); each seed draws other "
        "labelled photos and another initialisation of the new layers.\n"
    )
    parts.append(transfer_table(runs, budgets) + "\n")
    if runs:
        parts.append(
            "Rankings by mean error; a step is `<` when the per-seed differences (each seed draws the same labelled "
            "photos for every method) put it beyond twice their standard error, `≈` when it lies within the seed "
            "spread. With three seeds that bar is lenient (a t-test on 2 degrees of freedom would need 4.3 standard "
            "errors for p < 0.05), so read `<` as a likely order, not a settled one; `vs`: fewer than two seeds in "
            "common.\n"
        )
        parts.append("\n".join(ranking_lines(runs, budgets)) + "\n")
        anomalies = anomaly_lines(runs, budgets, curves)
        if anomalies:
            parts.append("### Two rows that look wrong\n")
            parts.append("\n".join(anomalies) + "\n")
        if curves:
            parts.append(curves_table(curves, budgets) + "\n")
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
