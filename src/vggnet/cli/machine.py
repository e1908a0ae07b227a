"""Commands about the machine: `vggnet info`, the CPU kernels this machine runs and why."""

from __future__ import annotations

import argparse


def cmd_info(args: argparse.Namespace) -> int:
    from ..cpu.compiled import status

    s = status()
    print(f"CPU: {s.cpu} (kernel builds it can run: {', '.join(s.cpu_isas) or 'none'}; torch dispatches {s.torch_isa})")
    print(
        f"compiled kernels: {s.isa} build, cached in {s.folder}" if s.isa else f"compiled kernels: none ({s.why_not})"
    )
    print(f"fp32, --fast / optimize_for_inference(winograd=True): {s.fp32}")
    print(f"int8, quantize_int8: {s.int8}")
    print(
        "VGGNET_ISA=avx512, avxvnni or avx2 picks the kernels (avx2: without AVX-VNNI), VGGNET_NATIVE=0 turns them off"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the `vggnet` parser."""
    p = sub.add_parser("info", help="the CPU, the compiled kernels it runs (or why not), what --fast and int8 use")
    p.set_defaults(func=cmd_info)
