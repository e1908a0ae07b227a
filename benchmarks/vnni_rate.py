"""The rate of AVX-512 VNNI (vpdpbusd) and FMA on one core, against the number of independent accumulators.

Compiles benchmarks/vnni_rate.cpp with the system's C++ compiler (-O3 -march=native), runs it three times,
and writes the medians to benchmarks/results/vnni_rate.md and .json. The int8 kernel's micro-kernel shape
(16 accumulators) comes from this table.

Run: .venv/bin/python benchmarks/vnni_rate.py   (any Python with torch: benchmarks/common.py imports it)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, cpu_flags, cpu_model  # noqa: E402


def main() -> int:
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        print("vnni_rate: needs a C++ compiler (g++, or $CXX)", file=sys.stderr)
        return 2
    if "avx512_vnni" not in cpu_flags():
        print("vnni_rate: this CPU has no AVX-512 VNNI", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "vnni_rate"
        subprocess.run([compiler, "-O3", "-march=native", str(HERE / "vnni_rate.cpp"), "-o", str(exe)], check=True)
        runs = [subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout for _ in range(3)]
    rows: dict[int, list[tuple[float, float]]] = {}
    for out in runs:
        for line in out.split("\n"):
            if line.strip():
                n, dp, fma = line.split()
                rows.setdefault(int(n), []).append((float(dp), float(fma)))
    table = {n: (statistics.median(d for d, _ in v), statistics.median(f for _, f in v)) for n, v in rows.items()}
    load = os.getloadavg()
    lines = [
        "# AVX-512 VNNI and FMA rate on one core, by accumulators",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores ({', '.join(cpu_flags())}). "
        f"Command: `.venv/bin/python benchmarks/vnni_rate.py` (median of 3 runs; load average {load[0]:.2f} at the end).",
        "",
        "Each row keeps N independent zmm accumulators busy (`acc[i] = op(acc[i], a, b)`), so nothing but the "
        "execution units limits the rate. One vpdpbusd is 64 int8 multiply-accumulates, one FMA 16 fp32 ones.",
        "",
        "| accumulators | vpdpbusd (10^9/s) | int8 GMAC/s | vfmadd (10^9/s) | fp32 GMAC/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, (dp, fma) in sorted(table.items()):
        lines.append(f"| {n} | {dp:.2f} | {64 * dp:.0f} | {fma:.2f} | {16 * fma:.0f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vnni_rate.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "vnni_rate.json").write_text(json.dumps({"cpu": cpu_model(), "rows": table}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
