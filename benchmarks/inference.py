"""VGG inference on the CPU, fp32: torchvision eager vs ours eager vs ours optimised (+ Winograd) vs ONNX Runtime.

Same weights (torchvision's random init, seed 0, loaded into ours with strict=True), same
inputs, same thread count, one process; the paths run interleaved and medians are reported.
Run: PYTHONPATH=src python benchmarks/inference.py   (about 4 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Both runtimes run in this one process, interleaved: an idle thread pool that spins takes cores from the
# other's turn. With OMP_WAIT_POLICY=ACTIVE, PyTorch's OpenMP threads spun through ONNX Runtime's turns and
# halved its speed (1.70x "for us" that was 0.87x with PASSIVE). So neither side spins: OpenMP threads sleep
# when idle (PASSIVE) and ONNX Runtime's intra-op threads do not spin (session.intra_op.allow_spinning = 0).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torchvision  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GemmProbe, gemm_peak, interleaved, machine, machine_line, median, publish  # noqa: E402

from vggnet.analysis import layer_table, totals  # noqa: E402
from vggnet.export import export_onnx  # noqa: E402
from vggnet.model import VGG  # noqa: E402
from vggnet.optimize import optimize_for_inference  # noqa: E402

TORCHVISION = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vgg16", help="vgg11/13/16/19, optionally _bn (default: vgg16)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size (default: 5)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile path")
    parser.add_argument("--name", default="inference", help="results file name (default: inference)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    ours = VGG(config=args.config).eval()
    tv_name = TORCHVISION[ours.cfg.arch] + ("_bn" if ours.cfg.batch_norm else "")
    tv = getattr(torchvision.models, tv_name)(weights=None).eval()
    if ours.cfg.batch_norm:  # running statistics that are not the identity, so folding is really exercised
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(tv.state_dict(), strict=True)
    gflop = 2 * totals(layer_table(ours, args.size))["macs"] / 1e9  # per image; 30.94 for VGG16 at 224

    import onnxruntime as ort

    tmp = tempfile.mkdtemp()
    start = time.perf_counter()
    onnx_path = export_onnx(ours, Path(tmp) / "model.onnx")
    export_s = time.perf_counter() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("ORT_SPINNING", "0"))
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    optimized = optimize_for_inference(ours)
    winograd = optimize_for_inference(ours, winograd=True)
    compiled = None if args.no_compile else optimize_for_inference(ours, compile=True)
    probe = GemmProbe()  # sampled once per round, between the paths
    peak_samples = [gemm_peak()]

    results: dict[str, object] = {"config": tv_name, "size": args.size, "gflop_per_image": gflop, "batches": {}}
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, 3, args.size, args.size)
        xn = x.numpy()
        paths = {
            "torchvision eager": lambda x=x: tv(x),
            "ours eager": lambda x=x: ours(x),
            "ours optimised (channels-last, BN folded)": lambda x=x: optimized(x),
            "ours optimised + Winograd (--fast)": lambda x=x: winograd(x),
            "ONNX Runtime": lambda xn=xn: torch.from_numpy(session.run(["logits"], {"input": xn})[0]),
        }
        compile_s = None
        if compiled is not None:
            start = time.perf_counter()
            compiled(x)  # compiles for this shape
            compile_s = time.perf_counter() - start
            paths["ours optimised + torch.compile"] = lambda x=x: compiled(x)
        with torch.inference_mode():
            reference = tv(x)
            errors = {name: ((f() - reference).abs().max() / reference.abs().max()).item() for name, f in paths.items()}
            times = interleaved({**paths, "torch.mm probe": probe}, rounds=args.rounds)
            times.pop("torch.mm probe")
        rows = {}
        for name, t in times.items():
            ips = batch / median(t)
            rows[name] = {
                "images_per_s": ips,
                "gflop_per_s": ips * gflop,
                "seconds": t,
                "max_rel_error_vs_torchvision": errors[name],
            }
        results["batches"][str(batch)] = {"paths": rows, "compile_s": compile_s}
        print(f"batch {batch}: " + ", ".join(f"{k} {v['images_per_s']:.2f}/s" for k, v in rows.items()), flush=True)
    peak_samples.append(gemm_peak())
    peak = max(peak_samples + probe.samples)
    results.update(gemm_peak_gflops=peak, onnx_export_s=export_s, machine=machine(), command=" ".join(sys.argv))
    for b in results["batches"].values():
        for row in b["paths"].values():
            row["fraction_of_gemm_peak"] = row["gflop_per_s"] / peak
    return publish(args.name, results, markdown(results))


def markdown(r: dict) -> str:
    """The results as a Markdown table per batch size, with ratios to torchvision and ONNX Runtime."""
    cmd = "PYTHONPATH=src python benchmarks/" + r["command"].split("benchmarks/")[-1]
    lines = [
        f"# Inference, {r['config']} at {r['size']}x{r['size']}, fp32, CPU",
        "",
        f"Machine: {machine_line(r['machine'])}.  ",
        f"torch.mm fp32 peak (2048x2048, best of all samples taken before, between and after the paths): "
        f"**{r['gemm_peak_gflops']:.0f} GFLOP/s**; "
        f"{r['gflop_per_image']:.2f} GFLOP per image.  ",
        f"Command: `{cmd}`. Paths interleaved, median of each; random weights (seed 0), same for all.  ",
        "GFLOP/s counts the direct convolutions' FLOPs for every path; Winograd multiplies 2.25-4x less in the "
        "layers it replaces, so its figure is an effective rate and may pass the GEMM peak.",
        "",
    ]
    for batch, b in r["batches"].items():
        rows = b["paths"]
        tv = rows["torchvision eager"]["images_per_s"]
        ort = rows["ONNX Runtime"]["images_per_s"]
        lines += [
            f"## Batch {batch}",
            "",
            "| path | images/s | GFLOP/s | of mm peak | vs torchvision | vs ONNX Runtime | max rel. error |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in rows.items():
            ips = row["images_per_s"]
            lines.append(
                f"| {name} | {ips:.2f} | {row['gflop_per_s']:.0f} | {100 * row['fraction_of_gemm_peak']:.0f}% "
                f"| {ips / tv:.2f}x | {ips / ort:.2f}x | {row['max_rel_error_vs_torchvision']:.1e} |"
            )
        if b.get("compile_s"):
            lines.append(f"\ntorch.compile (inductor, frozen weights) took {b['compile_s']:.0f} s for this shape.")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
