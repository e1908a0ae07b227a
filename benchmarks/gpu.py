"""VGG16 on one CUDA GPU in under 5 minutes: training and inference images/s, and model FLOP utilisation.

Training: batch 128 at 224x224, SGD with momentum (section 3.1), bf16 autocast, channels-last,
eager and torch.compile'd. Inference: the same model in eval mode, eager and compiled. Utilisation
(MFU) is achieved model FLOP/s over the chip's dense bf16 tensor peak, counting a training step as
3x the forward FLOPs (forward, and backward for inputs and weights). Synthetic inputs on the device:
this measures the model, not a data pipeline. Exits 0 with a message where no GPU is present.
Run: python benchmarks/gpu.py   (writes benchmarks/results/gpu.json and gpu.md)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendor's data sheets, most specific
# name first, matched as a whole word in torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3" is the
# SXM part). A GPU not listed reports "unknown peak"; pass --peak-tflops to supply one.
BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("B200", 2250.0),
    ("GH200", 989.0),
    ("H200 NVL", 835.0),
    ("H200", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
]
# GPUs without bf16 tensor cores run fp16 autocast instead; their dense fp16 peaks.
FP16_PEAK_TFLOPS: list[tuple[str, float]] = [("V100", 125.0), ("T4", 65.0)]
MIG_SLICES = 7  # compute slices of a full A100/H100/H200 under MIG


def peak_tflops(name: str, dtype: str = "bf16") -> tuple[float | None, str]:
    """The dense tensor peak of a device name (scaled for a MIG slice), and where it came from."""
    table = BF16_PEAK_TFLOPS if dtype == "bf16" else FP16_PEAK_TFLOPS
    for chip, peak in table:
        if re.search(rf"\b{re.escape(chip)}\b", name, flags=re.IGNORECASE):
            mig = re.search(r"MIG (\d)g\.", name)
            if mig:
                slices = int(mig.group(1))
                return peak * slices / MIG_SLICES, f"{chip} {dtype} data-sheet peak x {slices}/{MIG_SLICES} (MIG slice)"
            return peak, f"{chip} {dtype} data-sheet peak"
    return None, "unknown peak"


def timed(step: Callable[[], object], warmup: int, steps: int, deadline: float, cuda: bool) -> tuple[float, int, float]:
    """(seconds per step, steps timed, seconds of warm-up), timed with CUDA events after `warmup` steps."""
    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm_s = time.perf_counter() - start
    if cuda:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
    wall = time.perf_counter()
    done = 0
    while done < steps and (done < 3 or time.perf_counter() < deadline):
        step()
        done += 1
    if cuda:
        end.record()
        sync()
        return begin.elapsed_time(end) / 1000 / done, done, warm_s
    return (time.perf_counter() - wall) / done, done, warm_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default: 20)")
    parser.add_argument("--budget", type=float, default=270, help="seconds for everything (default: 270)")
    parser.add_argument("--peak-tflops", type=float, help="the chip's dense bf16 peak, where the table lacks it")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    parser.add_argument("--smoke-cpu", action="store_true", help="for tests: a tiny VGG on the CPU, checks the logic")
    args = parser.parse_args()
    t0 = time.perf_counter()
    deadline = t0 + args.budget

    import torch

    if not torch.cuda.is_available() and not args.smoke_cpu:
        print("benchmarks/gpu.py: no CUDA GPU visible to torch (torch.cuda.is_available() is False); nothing measured.")
        return 0

    from vggnet.analysis import layer_table, totals
    from vggnet.model import VGG

    cuda = not args.smoke_cpu
    if cuda:
        device = torch.device("cuda", 0)
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        memory_gib, units = props.total_memory / 2**30, f"{props.multi_processor_count} SMs"
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        model = VGG(config="D")
        size = 224
    else:  # the same code path on a tiny net, so a machine without a GPU can test this script
        device, name, memory_gib, units, dtype = torch.device("cpu"), "CPU smoke test", 0.0, "CPU", torch.bfloat16
        model = VGG(config="A", width=1 / 16, input_size=64, num_classes=10)
        size, args.batch, args.steps, args.no_compile = 64, 4, 2, True
    dtype_name = "bf16" if dtype is torch.bfloat16 else "fp16"
    peak, peak_source = peak_tflops(name, dtype_name)
    if args.peak_tflops:
        peak, peak_source = args.peak_tflops, "--peak-tflops"
    print(f"{name}: {memory_gib:.0f} GiB, {units}, {dtype_name} autocast")
    print(f"peak: {f'{peak:.0f} TFLOP/s' if peak else 'unknown'} ({peak_source})", flush=True)

    torch.manual_seed(0)
    model = model.to(device, memory_format=torch.channels_last)
    classes = model.cfg.num_classes
    gflop = 2 * totals(layer_table(model, size))["macs"] / 1e9  # forward, per image
    # paper, section 3.1: momentum 0.9, weight decay 5e-4, learning rate 1e-2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    batch = args.batch
    results: dict[str, object] = {
        "network": "VGG16" if cuda else "VGG A at width 1/16 (smoke test)",
        "device": name,
        "memory_gib": round(memory_gib, 1),
        "dtype": dtype_name,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "size": size,
        "gflop_per_image_forward": gflop,
        "runs": {},
        "skipped": [],
    }

    def record(key: str, per_step: float, steps: int, warm_s: float, flop_factor: int) -> None:
        ips = batch / per_step
        tflops = ips * gflop * flop_factor / 1000
        row = {"images_per_s": ips, "model_tflops": tflops, "steps": steps, "warmup_s": warm_s, "batch": batch}
        row["mfu"] = tflops / peak if peak else None
        results["runs"][key] = row
        mfu = f", MFU {100 * row['mfu']:.1f}%" if peak else ""
        print(f"{key}: {ips:,.0f} images/s, {tflops:.0f} TFLOP/s{mfu} (warm-up {warm_s:.0f} s)", flush=True)

    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)

    def train_step(net: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.autocast(device.type, dtype=dtype):
                loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    def infer_step(net: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
                net(x)

        return step

    plan: list[tuple[str, Callable[[], Callable[[], None]], bool, int, int]] = [
        ("train eager", lambda: train_step(model.train()), False, 3, 3),
        ("train compiled", lambda: train_step(torch.compile(model.train())), True, 3, 3),
        ("inference eager", lambda: infer_step(model.eval()), False, 3, 1),
        ("inference compiled", lambda: infer_step(torch.compile(model.eval())), True, 3, 1),
    ]
    for key, make, compiled, warmup, flop_factor in plan:
        if compiled and args.no_compile:
            results["skipped"].append(f"{key} (--no-compile)")
            continue
        if time.perf_counter() > deadline - (60 if compiled else 10):
            results["skipped"].append(f"{key} (time budget)")
            print(f"{key}: skipped, time budget of {args.budget:.0f} s nearly spent", flush=True)
            continue
        while True:
            try:
                per_step, steps, warm_s = timed(make(), warmup, args.steps, deadline, cuda)
                record(key, per_step, steps, warm_s, flop_factor)
                break
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                if batch <= 8:
                    raise
                batch //= 2
                x, y = x[:batch], y[:batch]
                print(f"{key}: out of memory, retrying at batch {batch}", flush=True)
        if compiled:
            torch._dynamo.reset()  # drop the compiled graphs before the next measurement

    results["seconds"] = time.perf_counter() - t0
    results["command"] = "python benchmarks/gpu.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu.md").write_text(markdown(results))
    print(f"done in {results['seconds']:.0f} s; wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")
    return 0


def markdown(r: dict) -> str:
    """The GPU results as a Markdown table."""
    peak = f"{r['peak_tflops']:.0f} TFLOP/s ({r['peak_source']})" if r["peak_tflops"] else "unknown"
    lines = [
        f"# {r['network']} on {r['device']}",
        "",
        f"Input {r['size']}x{r['size']}, {r['memory_gib']} GiB, torch {r['torch']}, CUDA {r['cuda']}, {r['dtype']} autocast, channels-last; "
        f"{r['dtype']} peak: {peak}. Command: `{r['command'].strip()}`.",
        "",
        "| run | batch | images/s | model TFLOP/s | MFU | warm-up (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, row in r["runs"].items():
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a"
        lines.append(
            f"| {key} | {row['batch']} | {row['images_per_s']:,.0f} | {row['model_tflops']:.0f} | {mfu} "
            f"| {row['warmup_s']:.0f} |"
        )
    if r["skipped"]:
        lines += ["", "Skipped: " + "; ".join(r["skipped"]) + "."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
