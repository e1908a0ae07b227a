"""Which digit geometry lets `vggnet demo` show section 3.2 as the paper does: a sweep over candidates.

For each candidate (crop, stage 1's fixed S, stage 2's jittered [Smin, Smax], and how stage 2 trains) it runs
the demo's own two training stages (`vggnet.demo`) and its testing-protocol table, and appends one JSON line
per run to experiments/results/digits_demo_geometry.jsonl (with the seed and the CPU settings it ran under:
ATEN_CPU_CAPABILITY, VGGNET_NATIVE). experiments/results/digits_demo_geometry.md is rendered from every line.

    PYTHONPATH=src python experiments/digits_demo_geometry.py 32:37:37-73 32:32:32-40 --seeds 0,1
    PYTHONPATH=src python experiments/digits_demo_geometry.py --render   # the .md from the .jsonl alone
    PYTHONPATH=src python experiments/digits_demo_geometry.py 32:32:32-40 --keep runs/geometry
    PYTHONPATH=src python experiments/digits_demo_geometry.py --windows runs/geometry/jittered-S32-40

`--windows RUN` shows where dense evaluation looks: the run's error at each test scale Q for the centre crop, the
crop at the top-left corner and dense evaluation, written to experiments/results/digits_dense_windows.md.

A candidate is CROP:FIXED:SMIN-SMAX, optionally :wN (width 1/N instead of 1/8) and :scratch (stage 2 from scratch at LR 1e-2, 30 epochs at most,
instead of fine-tuned from stage 1 at LR 1e-3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from vggnet.demo import Geometry, demo_configs, protocol_results, train_stages
from vggnet.runs import read_history

RESULTS = Path(__file__).resolve().parent / "results"
LINES, TABLE = RESULTS / "digits_demo_geometry.jsonl", RESULTS / "digits_demo_geometry.md"
WINDOWS = RESULTS / "digits_dense_windows.md"
COLUMNS = ["fixed centre", "fixed dense", "jit centre", "jit dense", "jit multi", "jit train"]


def cpu_setting() -> str:
    """The CPU settings a run computed under, as the .md's column names them."""
    isa = os.environ.get("ATEN_CPU_CAPABILITY", "default")
    native = "native off" if os.environ.get("VGGNET_NATIVE") == "0" else "native"
    return f"{isa}, {native}"


def parse_candidate(text: str) -> tuple[Geometry, bool]:
    """CROP:FIXED:SMIN-SMAX[:wN][:scratch] -> (geometry, stage 2 from scratch); wN: width 1/N (default 1/8)."""
    parts = text.split(":")
    crop, fixed = int(parts[0]), int(parts[1])
    smin, smax = (int(v) for v in parts[2].split("-"))
    width = next((1 / int(p[1:]) for p in parts[3:] if p.startswith("w")), 1 / 8)
    return Geometry(crop, fixed, (smin, smax), width), "scratch" in parts[3:]


def run_candidate(text: str, seed: int, keep: str = "") -> dict:
    """Both stages and the protocol table of one candidate; the errors (%) as one record (runs kept in `keep`)."""
    geometry, scratch = parse_candidate(text)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fixed, jittered = demo_configs(False, Path(keep or tmp), geometry, seed)
        fixed, jittered = dataclasses.replace(fixed, quiet=True), dataclasses.replace(jittered, quiet=True)
        if scratch:
            jittered = dataclasses.replace(jittered, init_from="", lr=1e-2, epochs=30)
        fixed_run, jittered_run = train_stages(fixed, jittered)
        results = protocol_results(fixed_run, jittered_run)
        last = read_history(jittered_run)[-1]
    errors = [r.top1_error for r in results] + [last["train_top1"]]
    return {
        "candidate": text,
        "seed": seed,
        "cpu": cpu_setting(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - start),
        **dict(zip(COLUMNS, (round(e, 2) for e in errors), strict=True)),
    }


def windows(run: str, qs: list[int]) -> str:
    """Top-1 error (%) of a run at each Q: centre crop, top-left crop, dense; as a Markdown table."""
    from vggnet.data import open_dataset, rescale, to_uint8_tensor
    from vggnet.evaluate.networks import for_evaluation, train_scale
    from vggnet.evaluate.protocol import softmax_posteriors
    from vggnet.weights import load_weights

    model, meta = load_weights(Path(run) / "model.safetensors")
    model, pre, side = for_evaluation(model), meta.preprocessing, meta.model.input_size
    data = open_dataset("digits", "val", size=train_scale(meta)[1])  # as `vggnet evaluate` draws them
    images, labels = zip(*(data[i] for i in range(len(data))), strict=True)
    labels = torch.tensor(labels)

    def error(x: torch.Tensor, dense: bool = False) -> float:
        return 100 * (softmax_posteriors(model, pre, x, dense=dense).argmax(1) != labels).float().mean().item()

    lines = ["| test Q | centre crop | top-left crop | dense |", "|---:|---:|---:|---:|"]
    for q in qs:
        x = torch.stack([to_uint8_tensor(rescale(im, q)) for im in images])
        c = int((q - side) / 2 + 0.5)  # vggnet.evaluate.protocol.crop_offset
        centre, corner = x[:, :, c : c + side, c : c + side], x[:, :, :side, :side]
        lines.append(f"| {q} | {error(centre):.1f} | {error(corner):.1f} | {error(x, dense=True):.1f} |")
    return "\n".join(lines)


def render(records: list[dict]) -> str:
    """One row per (candidate, CPU setting): each column's mean over seeds, with its range."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["candidate"], r["cpu"])].append(r)
    head = ["candidate", "CPU setting", "seeds", *COLUMNS, "s/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (cand, cpu), rs in groups.items():
        cells = []
        for c in COLUMNS:
            vals = [r[c] for r in rs]
            cells.append(
                f"{statistics.mean(vals):.1f}" + (f" ({min(vals):.1f}-{max(vals):.1f})" if len(vals) > 1 else "")
            )
        seeds = ",".join(str(r["seed"]) for r in rs)
        secs = statistics.mean(r["seconds"] for r in rs)
        lines.append(f"| {cand} | {cpu} | {seeds} | " + " | ".join(cells) + f" | {secs:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="*", help="CROP:FIXED:SMIN-SMAX[:scratch]")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .jsonl")
    parser.add_argument("--keep", default="", help="keep the candidate's two run folders in this folder")
    parser.add_argument("--windows", metavar="RUN", help="where dense evaluation looks: a run's errors per Q")
    parser.add_argument("--qs", default="32,34,36,38,40,48,64", help="test scales for --windows")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.windows:
        torch.set_num_threads(1)
        table = windows(args.windows, [int(q) for q in args.qs.split(",")])
        WINDOWS.write_text(WINDOWS_HEADER.format(run=args.windows, qs=args.qs) + table + "\n")
        print(table)
        return
    if not args.render:
        for text in args.candidates:
            for seed in (int(s) for s in args.seeds.split(",")):
                record = run_candidate(text, seed, args.keep)
                print(json.dumps(record), flush=True)
                with LINES.open("a") as f:
                    f.write(json.dumps(record) + "\n")
    records = [json.loads(line) for line in LINES.read_text().splitlines() if line.strip()] if LINES.exists() else []
    TABLE.write_text(HEADER + render(records) + "\n")


WINDOWS_HEADER = """# Where dense evaluation looks on the digits

Top-1 error (%) on the 360 validation digits, no flips, of the jittered net in `{run}` at each test scale Q:
the centre crop of the input size, the crop at the top-left corner, and dense evaluation (the whole image through
the fully convolutional net, its score map averaged). Below Q = crop + 32 the score map has one cell, whose window
the pools align with the top-left corner: dense evaluation follows the corner crop, not the centre one. Produced by
`PYTHONPATH=src python experiments/digits_demo_geometry.py --windows {run} --qs {qs}`.

"""

HEADER = """# Which digit geometry shows section 3.2 as the paper does

Narrow VGG-A (width 1/8) trained by `vggnet demo`'s own two stages on the 1,437 training digits: stage 1 at a
fixed S, stage 2 with S jittered in [Smin, Smax] (fine-tuned from stage 1 at LR 1e-3, or `scratch`: from scratch at
LR 1e-2); top-1 error (%) on the 360 validation digits, no flips, each cell the mean over the seeds with the range in
brackets. Candidate: CROP:FIXED:SMIN-SMAX, `:w16` for width 1/16. Columns: the fixed-S net's centre crop and dense evaluation at Q=S; the
jittered net's centre crop and dense at Q=(Smin+Smax)/2 (Table 3), dense over Q in {Smin, mid, Smax} (Table 4); the
jittered stage's training error in its last epoch. Produced by `PYTHONPATH=src python
experiments/digits_demo_geometry.py CANDIDATE ... --seeds ...` on a 2-core Intel Xeon with AVX-512, one compute
thread per run; the CPU setting is the environment's ATEN_CPU_CAPABILITY (`avx2`: torch computes as on an AVX2-only
CPU, with ONEDNN_MAX_CPU_ISA=AVX2) and VGGNET_NATIVE. s/run is wall time on that machine shared with other jobs
(load average about 15), not a benchmark.

"""


if __name__ == "__main__":
    main()
