"""Shared by the CPU benchmarks: the machine, torch.mm's fp32 peak, interleaved timing, result files.

Timings on a shared machine are noisy, so every comparison runs its paths interleaved
(A, B, C, A, B, C, ... with the order rotated each round) and reports medians and ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vggnet.cpu.compiled import cpu_model  # noqa: F401  # the one reader of the CPU's name; benchmarks import it from here

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_flags() -> list[str]:
    """The vector ISA extensions that matter for these kernels (AVX2, AVX-512, VNNI, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    return [f for f in wanted if f in flags]


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    import onnxruntime
    import torchvision

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": cpu_flags(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": sys.version.split()[0],
        "isa": torch.backends.cpu.get_cpu_capability(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }


def gemm_peak(n: int = 2048, repeats: int = 8) -> float:
    """torch.mm's fp32 GFLOP/s on n x n matrices: best of `repeats` (the machine's attainable peak)."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


class GemmProbe:
    """A torch.mm timing to run among the measured paths, so the peak is sampled under the same load."""

    def __init__(self, n: int = 2048) -> None:
        self.n = n
        self.a, self.b, self.c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        self.samples: list[float] = []

    def __call__(self) -> None:
        start = time.perf_counter()
        torch.mm(self.a, self.b, out=self.c)
        self.samples.append(2 * self.n**3 / (time.perf_counter() - start) / 1e9)


def interleaved(paths: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each path, run round-robin (order rotated each round) after `warmup` calls each."""
    names = list(paths)
    for name in names:
        for _ in range(warmup):
            paths[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            paths[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_results(name: str, data: dict[str, object], markdown: str) -> tuple[Path, Path]:
    """Write benchmarks/results/<name>.json and the generated <name>.md beside it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    js.write_text(json.dumps(data, indent=2) + "\n")
    md.write_text(markdown)
    return js, md


def publish(name: str, data: dict[str, object], markdown: str) -> int:
    """Write the results (see write_results), print the Markdown and where both went; exit status 0."""
    js, md = write_results(name, data, markdown)
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


def machine_line(info: dict[str, object]) -> str:
    """One line naming the machine for a results table."""
    return (
        f"{info['cpu']}, {info['cores']} cores ({', '.join(info['flags'])}), torch {info['torch']} "
        f"({info['torch_threads']} threads, OMP_WAIT_POLICY {info.get('omp_wait_policy', '(default)')}), torchvision {info['torchvision']}, onnxruntime {info['onnxruntime']}"
    )
