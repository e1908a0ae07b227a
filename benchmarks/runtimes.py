"""VGG16 CPU inference as each runtime's users run it: one process per contender, alternated over rounds.

Contenders (benchmarks/contenders.py): torchvision eager; ONNX Runtime and OpenVINO fp32; OpenVINO at its
default precision; vggnet's fastest fp32 path; ONNX Runtime's, OpenVINO's (NNCF) and vggnet's int8, all
from the same weights and calibration photos. Each runs in a process of its own with its own defaults
apart from the thread count, warms up, then times a fixed number of batches; the processes alternate
over rounds (order rotated each round) so load on the shared machine hits all alike. Also: top-1
agreement of every int8 path with its fp32 model on the Imagenette validation photos (a trained net),
and images/s of `vggnet evaluate --method dense --scales 256,384,512` per backend.

With `--isa avx2` every contender runs as on an AVX2 machine where it can be made to: vggnet's AVX2 kernels
(VGGNET_ISA), torch's own dispatch (ATEN_CPU_CAPABILITY), oneDNN in torch and OpenVINO (ONEDNN_MAX_CPU_ISA),
MKL (MKL_ENABLE_INSTRUCTIONS) and fbgemm (FBGEMM_ENABLE_INSTRUCTIONS); `--isa avxvnni` as on one with
AVX-VNNI too (vggnet's int8 kernels on it, oneDNN at AVX2_VNNI). ONNX Runtime's MLAS picks its kernels
from CPUID and has no such switch; each row of the results says what it ran with.

Run: PYTHONPATH=src python benchmarks/runtimes.py            (everything; a few minutes on 2 quiet cores)
     PYTHONPATH=src python benchmarks/runtimes.py --isa avx2 --only "torchvision eager,ONNX Runtime fp32,\
         OpenVINO fp32,vggnet fast fp32,vggnet int8" --skip agreement,dense --rounds 3   (runtimes_avx2)
     PYTHONPATH=src python benchmarks/runtimes.py --smoke    (a tiny net, one round: what the tests run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import agreement  # noqa: E402
import contenders as c  # noqa: E402
import runtimes_report as report  # noqa: E402
from common import RESULTS, cpu_flags, cpu_model  # noqa: E402

# /work/shared/data/imagenette: next to the checkout or next to a folder holding it (worktrees)
IMAGENETTE = next(
    (p / "shared" / "data" / "imagenette" for p in REPO.parents if (p / "shared" / "data" / "imagenette").is_dir()),
    REPO.parent / "shared" / "data" / "imagenette",
)


def main_checkout() -> Path:
    """The repository's main checkout (this one, or the one a git worktree belongs to): where runs/ lives."""
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return REPO
    return Path(common).parent


# VGG D with batch norm, width 1/8, trained on Imagenette at 64-pixel crops (experiments/claims, seed 0):
# the trained net of VGG16's depth that the project has
TRAINED = main_checkout() / "runs" / "claims" / "D-s0" / "model.safetensors"
SMOKE = {"arch": "A", "width": 1 / 16, "num_classes": 10, "input_size": 32}
# what makes each library compute as on an AVX2 machine (`--isa avx2`); ONNX Runtime has no switch
RESTRICT = {
    "native": {},
    "avx2": {
        "VGGNET_ISA": "avx2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    },
}
# AVX2 with AVX-VNNI (Intel's client cores since the 12th generation): vggnet's int8 kernels in the avx2 build
RESTRICT["avxvnni"] = {**RESTRICT["avx2"], "VGGNET_ISA": "avxvnni", "ONEDNN_MAX_CPU_ISA": "AVX2_VNNI"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vgg16", help="the configuration timed (default: vgg16)")
    p.add_argument("--batches", default="1,8", help="batch sizes (default: 1,8)")
    p.add_argument("--timed", default="10,3", help="batches timed per process, per batch size (default: 10,3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches per process and batch size (default: 2)")
    p.add_argument("--rounds", type=int, default=5, help="processes per contender, alternated (default: 5)")
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime (default: 2)")
    p.add_argument("--only", default="", help="comma-separated contenders (default: all)")
    p.add_argument("--skip", default="", help="stages to skip: speed, agreement, dense")
    p.add_argument("--calibration", type=int, default=16, help="training photos calibrating every int8 path")
    p.add_argument("--data", type=Path, default=IMAGENETTE, help=f"Imagenette (default: {IMAGENETTE})")
    p.add_argument("--trained", type=Path, default=TRAINED, help=f"trained net for agreement (default: {TRAINED})")
    p.add_argument("--agreement-calibration", type=int, default=32, help="training photos calibrating it")
    p.add_argument("--dense-images", type=int, default=8, help="validation photos of the dense evaluation")
    p.add_argument("--dense-scales", default="256,384,512", help="test scales of the dense evaluation")
    p.add_argument("--smoke", action="store_true", help="a tiny net, one round, generated images: seconds")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results folder (default: {RESULTS})")
    p.add_argument(
        "--isa",
        choices=list(RESTRICT),
        default="native",
        help="native, or avx2 / avxvnni: as on an AVX2 machine without / with AVX-VNNI (see above)",
    )
    p.add_argument("--name", help="results file name (default: runtimes, or runtimes_avx2 with --isa avx2)")
    p.add_argument(
        "--work", type=Path, help="keep the shared files (weights, exports, int8 models) here and reuse them"
    )
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: build and time one contender
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.name = args.name or ("runtimes" if args.isa == "native" else f"runtimes_{args.isa}")
    if args.smoke:
        args.batches, args.timed, args.warmup, args.rounds = "1,2", "2,1", 1, 1
        args.calibration, args.agreement_calibration, args.dense_images, args.dense_scales = 4, 4, 2, "32,48"
    return args


def load() -> str:
    """The 1, 5 and 15 minute load averages, as uptime prints them."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


# -- one contender, in its own process ---------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    """Build args.child, time it at every batch size, write its timings and logits; prints nothing."""
    folder, name = args.folder, args.child
    run = c.CONTENDERS[name].build(folder, args.threads)
    inputs = np.load(folder / c.INPUTS)
    timings: dict[str, list[float]] = {}
    for batch, timed in zip(_ints(args.batches), _ints(args.timed), strict=True):
        x = np.ascontiguousarray(inputs[:batch])
        for _ in range(args.warmup):
            run(x)
        seconds = []
        for _ in range(timed):
            start = time.perf_counter()
            run(x)
            seconds.append(time.perf_counter() - start)
        timings[str(batch)] = seconds
    np.save(folder / f"logits-{_slug(name)}.npy", run(np.ascontiguousarray(inputs[: max(_ints(args.batches))])))
    extra: dict[str, Any] = {"ran_with": ran_with(name, folder, args.threads)}
    if name.startswith("OpenVINO") and "int8" not in name:  # the precision it really ran at
        config = {"INFERENCE_PRECISION_HINT": "f32"} if "fp32" in name else {}
        extra["ran_at"] = c.openvino_precision(folder / c.ONNX, args.threads, **config)
    (folder / f"timings-{_slug(name)}.json").write_text(json.dumps({"seconds": timings, **extra}))
    return 0


def ran_with(name: str, folder: Path, threads: int) -> str:
    """The instruction set a contender's kernels ran with, as far as its library says."""
    from vggnet.cpu import compiled

    family = c.CONTENDERS[name].family
    if family == "onnxruntime":  # MLAS dispatches on CPUID at start-up, with no switch to lower it
        return f"MLAS by CPUID: {(compiled.cpu_isas() or ['no AVX2'])[0]}, not restrictable"
    if family == "openvino":  # the kernels of its convolutions and FC layers, from the compiled model
        import openvino as ov

        path = folder / (c.OV_INT8 if "int8" in name else c.ONNX)
        config = {"INFERENCE_PRECISION_HINT": "f32"} if "fp32" in name else {}
        model = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, **config})
        model.create_infer_request().infer({0: np.load(folder / c.INPUTS)[:1]})  # a dynamic batch: picked at first run
        kinds: dict[str, int] = {}
        for op in model.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) in ("Convolution", "FullyConnected"):
                kind = info["primitiveType"].astype(str)
                kinds[kind] = kinds.get(kind, 0) + 1
        return ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "best")
    text = f"torch {torch.backends.cpu.get_cpu_capability()}, oneDNN {onednn}"
    if name.startswith("vggnet"):
        module = compiled.kernels()
        text += f", vggnet kernels {module.isa if module is not None else 'none'}"
        if "int8" in name:
            text += ", int8 on them" if compiled.int8_why_not() is None else ", int8 on PyTorch's FX"
    return text


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


# -- the stages ---------------------------------------------------------------------------------------------


def speed(args: argparse.Namespace, folder: Path, names: list[str]) -> dict[str, Any]:
    """Every contender in its own process, `rounds` times, the order rotated each round."""
    runs: dict[str, list[dict[str, list[float]]]] = {n: [] for n in names}
    extra: dict[str, dict[str, Any]] = {n: {} for n in names}
    before = load()
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            command = [
                sys.executable,
                __file__,
                "--child",
                name,
                "--folder",
                str(folder),
                "--threads",
                str(args.threads),
            ]
            command += ["--batches", args.batches, "--timed", args.timed, "--warmup", str(args.warmup)]
            env = {**os.environ, **RESTRICT[args.isa]}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
            data = json.loads((folder / f"timings-{_slug(name)}.json").read_text())
            runs[name].append(data.pop("seconds"))
            extra[name].update(data)
            print(f"round {r + 1}: {name}: " + _line(runs[name][-1]), file=sys.stderr, flush=True)
    reference = np.load(folder / f"logits-{_slug('torchvision eager')}.npy") if "torchvision eager" in names else None
    rows: dict[str, Any] = {}
    for name in names:
        per_batch = {}
        for batch in _ints(args.batches):
            rates = [int(batch) * len(run[str(batch)]) / sum(run[str(batch)]) for run in runs[name]]
            per_batch[str(batch)] = {
                "images_per_s": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "per_round": rates,
                "seconds": [run[str(batch)] for run in runs[name]],
            }
        contender = c.CONTENDERS[name]
        row = {"precision": contender.precision, "family": contender.family, "batches": per_batch, **extra[name]}
        if reference is not None:
            out = np.load(folder / f"logits-{_slug(name)}.npy")
            row["max_rel_error_vs_torchvision"] = float(np.abs(out - reference).max() / np.abs(reference).max())
        rows[name] = row
    return {"contenders": rows, "load_before": before, "load_after": load()}


def _line(seconds: dict[str, list[float]]) -> str:
    return ", ".join(f"batch {b}: {int(b) * len(s) / sum(s):.2f} images/s" for b, s in seconds.items())


def dense(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """images/s of `vggnet evaluate --method dense --scales ...` per backend, each a CLI process of its own."""
    backends = {"torch": [], "torch --fast": ["--fast"], "onnxruntime": [], "openvino": []}
    data = "digits" if args.smoke else str(args.data)
    weights = folder / "dense.safetensors"
    rows: dict[str, Any] = {}
    before = load()
    for label, options in backends.items():
        backend = label.split()[0]
        out = folder / f"eval-{_slug(label)}"
        command = [sys.executable, "-m", "vggnet", "evaluate", str(weights), "--data", data, "--method", "dense"]
        command += ["--scales", args.dense_scales, "--limit", str(args.dense_images), "--backend", backend]
        command += ["--device", "cpu", "--quiet", "--out", str(out), *options]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": str(args.threads)}
        env.update(RESTRICT[args.isa])
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"dense evaluation, {label}: {done.stderr.strip()[-2000:]}")
        result = json.loads(next(out.glob("*.json")).read_text())
        rows[label] = {
            "images": result["images"],
            "seconds": result["seconds"],
            "images_per_s": result["images"] / result["seconds"],
            "top1_error": result["top1_error"],
            "command": "vggnet " + " ".join(command[3:]).replace(str(folder), "TMP"),
        }
        print(f"dense, {label}: {rows[label]['images_per_s']:.3f} images/s", file=sys.stderr, flush=True)
    return {"backends": rows, "load_before": before, "load_after": load()}


def machine(threads: int) -> dict[str, Any]:
    """The CPU, its flags and every version that can move a figure."""
    from importlib.metadata import PackageNotFoundError, version

    from vggnet.cpu import compiled

    versions = {}
    for package in ("torch", "torchvision", "onnxruntime", "onnx", "openvino", "nncf", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": cpu_flags(),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_isas": compiled.cpu_isas(),
        "threads": threads,
        "python": sys.version.split()[0],
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        return child(args)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(c.CONTENDERS)
    unknown = [n for n in names if n not in c.CONTENDERS]
    if unknown:
        print(
            f"runtimes.py: error: unknown contender {unknown[0]!r}; known: {', '.join(c.CONTENDERS)}", file=sys.stderr
        )
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.trained and not args.smoke and "agreement" not in skip and not args.trained.is_file():
        print(
            f"runtimes.py: error: --trained {args.trained}: no such file (train one or --skip agreement)",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    results: dict[str, Any] = {
        "command": "PYTHONPATH=src python benchmarks/runtimes.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(args.threads),
        "isa": args.isa,
        "restrict": RESTRICT[args.isa],
        "load_start": load(),
    }
    with tempfile.TemporaryDirectory(prefix="runtimes-") as tmp:
        folder = args.work or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        setup = folder / "setup.json"
        if args.work and setup.is_file():  # the shared files of an earlier run with --work: not made again
            results["setup"] = json.loads(setup.read_text())
        else:
            results["setup"] = agreement.prepare(args, folder, SMOKE if args.smoke else {"arch": args.arch})
            setup.write_text(json.dumps(results["setup"]))
        if "speed" not in skip:
            results["speed"] = speed(args, folder, names)
        if "agreement" not in skip:
            results["agreement"] = agreement.measure(args, folder, SMOKE if args.smoke else None)
        if "dense" not in skip:
            results["dense"] = dense(args, folder)
    results.update(load_end=load(), wall_s=time.perf_counter() - start)
    args.out.mkdir(parents=True, exist_ok=True)
    js, md = args.out / f"{args.name}.json", args.out / f"{args.name}.md"
    js.write_text(json.dumps(results, indent=1) + "\n")
    md.write_text(report.markdown(results))
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
