"""benchmarks/runtimes.py's results as Markdown: speed per batch size, int8 agreement, dense evaluation per backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import contenders as c

from vggnet.tables import markdown_table


def best_runtime(
    rows: dict[str, Any], batch: str, precision: str, only: Callable[[dict[str, Any]], bool] = lambda row: True
) -> tuple[str, float] | None:
    """(name, median images/s) of the faster of ONNX Runtime and OpenVINO at `precision` (those `only` keeps)."""
    found = [
        (name, row["batches"][batch]["images_per_s"])
        for name, row in rows.items()
        if row["family"] in c.RUNTIMES and row["precision"] == precision and only(row)
    ]
    return max(found, key=lambda f: f[1]) if found else None


def ratios(
    rows: dict[str, Any], batch: str, only: Callable[[dict[str, Any]], bool] = lambda row: True
) -> dict[str, float]:
    """Each contender's median against the faster runtime of its precision (fp32 for the default-precision row)."""
    out = {}
    for name, row in rows.items():
        best = best_runtime(rows, batch, "int8" if row["precision"] == "int8" else "fp32", only)
        if best:
            out[name] = row["batches"][batch]["images_per_s"] / best[1]
    return out


def round_ratios(
    rows: dict[str, Any], batch: str, only: Callable[[dict[str, Any]], bool] = lambda row: True
) -> dict[str, list[float]]:
    """Per round, each contender against the faster runtime of its precision in that same round."""
    out = {}
    for name, row in rows.items():
        precision = "int8" if row["precision"] == "int8" else "fp32"
        peers = [
            r["batches"][batch]["per_round"]
            for r in rows.values()
            if r["family"] in c.RUNTIMES and r["precision"] == precision and only(r)
        ]
        if peers:
            out[name] = [mine / max(p[i] for p in peers) for i, mine in enumerate(row["batches"][batch]["per_round"])]
    return out


def lowered(row: dict[str, Any]) -> bool:
    """Whether a runtime's kernels could be lowered to the ISA of an `--isa` run (ONNX Runtime's cannot)."""
    return "not restrictable" not in row.get("ran_with", "")


def _int8_vs_fp32(rows: dict[str, Any], batch: str) -> str:
    """vggnet int8 against vggnet's fast fp32 path: the ratio of the medians and its range over the rounds."""
    if "vggnet int8" not in rows or "vggnet fast fp32" not in rows:
        return ""
    int8, fp32 = (rows[n]["batches"][batch] for n in ("vggnet int8", "vggnet fast fp32"))
    per_round = [a / b for a, b in zip(int8["per_round"], fp32["per_round"], strict=True)]
    return (
        f"vggnet int8 against vggnet fast fp32 at batch {batch}: {int8['images_per_s'] / fp32['images_per_s']:.2f}x "
        f"(per round {min(per_round):.2f}-{max(per_round):.2f}x)."
    )


def _speed(r: dict[str, Any]) -> list[str]:
    s, setup = r["speed"], r["setup"]
    rows = s["contenders"]
    batches = list(next(iter(rows.values()))["batches"])
    lines = [
        f"## Speed: {setup['model']} at {setup['input']}x{setup['input']}",
        "",
        f"Each contender in its own process ({len(next(iter(rows.values()))['batches'][batches[0]]['per_round'])} "
        "processes each, alternated, the order rotated every round); a process warms up, then times a fixed number "
        "of batches, and gives one images/s figure per batch size. Median over the processes, min-max beside it. "
        "The ratio is against the faster of ONNX Runtime and OpenVINO at the same precision (fp32 for fp32 and "
        "the default-precision row, int8 for int8): the ratio of the medians, and beside it the range of the "
        "ratios within each round (against the faster runtime of that round). Error: max |logits - torchvision's| / "
        f"max |torchvision's| on the timed batch. Load average (1, 5, 15 min) before: {s['load_before']}; "
        f"after: {s['load_after']}.",
        "",
    ]
    restricted = r.get("isa", "native") != "native"
    for batch in batches:
        rel, per_round = ratios(rows, batch), round_ratios(rows, batch)
        rel_low, per_round_low = ratios(rows, batch, lowered), round_ratios(rows, batch, lowered)
        table = []
        for name, row in rows.items():
            b = row["batches"][batch]
            precision = row["precision"] + (f" (ran {row['ran_at']})" if "ran_at" in row else "")
            err = row.get("max_rel_error_vs_torchvision")
            cells = [
                name,
                precision,
                row.get("ran_with", ""),
                f"{b['images_per_s']:.2f}",
                f"{b['min']:.2f}-{b['max']:.2f}",
                f"{rel[name]:.2f}x" if name in rel else "",
                f"{min(per_round[name]):.2f}-{max(per_round[name]):.2f}x" if name in per_round else "",
            ]
            if restricted:
                cells += [
                    f"{rel_low[name]:.2f}x" if name in rel_low else "",
                    f"{min(per_round_low[name]):.2f}-{max(per_round_low[name]):.2f}x" if name in per_round_low else "",
                ]
            table.append([*cells, f"{err:.1e}" if err is not None else ""])
        header = [
            "contender",
            "precision",
            "ran with",
            "images/s (median)",
            "min-max",
            "vs faster runtime",
            "per round",
        ]
        if restricted:
            header += [f"vs runtimes lowered to {r['isa']}", "per round"]
        header.append("rel. error")
        align = "lll" + "r" * (len(header) - 3)
        lines += [f"### Batch {batch}", "", markdown_table(header, table, align), ""]
        if _int8_vs_fp32(rows, batch):
            lines += [_int8_vs_fp32(rows, batch), ""]
    return lines


def _agreement(r: dict[str, Any]) -> list[str]:
    a = r["agreement"]
    table = [
        [family, f"{100 * p['agreement']:.2f}%", f"{100 * p['top1_fp32']:.1f}%", f"{100 * p['top1_int8']:.1f}%"]
        for family, p in a["paths"].items()
    ]
    return [
        "## int8 agreement with fp32",
        "",
        f"Net: `{a['net']}` ({a['config']}); every int8 path calibrated on the same {a['calibration']} training "
        f"photos and compared, top-1 for top-1, with its own fp32 model on {a['images']} validation photos.",
        "",
        markdown_table(["runtime", "top-1 agreement", "fp32 top-1 accuracy", "int8 top-1 accuracy"], table, "lrrr"),
        "",
    ]


def _dense(r: dict[str, Any]) -> list[str]:
    d = r["dense"]
    table = [
        [label, row["images"], f"{row['seconds']:.1f}", f"{row['images_per_s']:.3f}", f"`{row['command']}`"]
        for label, row in d["backends"].items()
    ]
    return [
        "## Dense multi-scale evaluation per backend",
        "",
        "`vggnet evaluate` as a user runs it, one process per backend, on the net of the speed table with ten "
        "classes; the photos are rescaled by the protocol to each Q (upscaled from 224x224), flips on (the "
        f"default). Seconds as `evaluate` reports them (model loading excluded). Load before: {d['load_before']}; "
        f"after: {d['load_after']}.",
        "",
        markdown_table(["backend", "photos", "seconds", "images/s", "command"], table, "lrrrl"),
        "",
    ]


def _restricted(r: dict[str, Any]) -> list[str]:
    """What `--isa` set in every contender's environment, and what could not be lowered."""
    if r.get("isa", "native") == "native":
        return []
    settings = ", ".join(f"{k}={v}" for k, v in r["restrict"].items())
    machine = {"avx2": "AVX2", "avxvnni": "AVX2 + AVX-VNNI"}.get(r["isa"], r["isa"])
    return [
        f"**As on an {machine} machine.** Every contender's process ran with {settings}: vggnet's "
        "kernels, torch's own kernels, oneDNN (in torch and OpenVINO), MKL and fbgemm at that level. "
        "ONNX Runtime's MLAS chooses its kernels from CPUID and has no switch, so it ran with this CPU's best "
        "(the 'ran with' column), faster than it would on an AVX2 machine; OpenVINO's FC layers that it hands to "
        "its own copy of MLAS (gemm_mlas) were not lowered either.",
        "",
    ]


def markdown(r: dict[str, Any]) -> str:
    """The whole results page."""
    m = r["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    isas = f"; kernel builds it runs: {', '.join(m['cpu_isas'])}" if "cpu_isas" in m else ""
    lines = [
        "# CPU inference: vggnet against ONNX Runtime and OpenVINO, each as its users run it",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])}; torch's ISA level {m['isa']}{isas}), "
        f"{m['threads']} threads for every runtime. Python {m['python']}, {versions}.  ",
        f"Command: `{r['command']}` ({r['wall_s'] / 60:.1f} minutes). Load average at the start: {r['load_start']}; "
        f"at the end: {r['load_end']}.  ",
        f"Weights: {r['setup']['weights']}. Photos: {r['setup']['photos']}; {r['setup']['calibration_images']} "
        "calibration images shared by every int8 path.",
        "",
    ]
    lines += _restricted(r)
    if "speed" in r:
        lines += _speed(r)
    if "agreement" in r:
        lines += _agreement(r)
    if "dense" in r:
        lines += _dense(r)
    return "\n".join(lines)
