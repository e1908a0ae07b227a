"""The compiled kernels (cpu/csrc/*.cpp): built on first use with torch's extension tooling, then cached.

The same sources build for two machine classes (csrc/simd.h): AVX-512 and AVX2 + FMA. Each holds the fp32
kernels (Winograd F(4x4), conv1_1, the FC layers) and the int8 ones, which run where the CPU has that build's
VNNI: AVX-512 VNNI, or AVX-VNNI (Intel's client cores since the 12th generation). `kernels()` loads the build
of the best ISA this CPU has, or returns None where none can be had: a CPU with neither, no C++ compiler or
ninja, a failed build, or VGGNET_NATIVE=0. Callers then take their Python path; `why_not()` says which reason
applied. VGGNET_ISA picks by hand, so that the AVX2 kernels can be tested and timed on an AVX-512 machine:
avx512, avxvnni (the avx2 build with its int8 kernels) or avx2 (the avx2 build as on a CPU without AVX-VNNI).
Each build (about a minute) lands in $VGGNET_CACHE (default ~/.cache/vggnet)/native-<key>, the key hashing the
sources, their folder, torch's version and the ISA's flags, so a changed source or torch builds afresh and every later
process loads it in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType

import torch

from ..download import cache_root
from ..io import report

SOURCES = ("bindings.cpp", "winograd_f32.cpp", "winograd_int8.cpp", "conv_small.cpp", "linear.cpp")
HEADERS = ("kernels.h", "simd.h")
COMMON_FLAGS = ["-O3", "-fopenmp"]
# the builds, best first; each ISA's flags (AVX-512 VNNI is compiled in, and used only where the CPU has it)
ISAS: dict[str, list[str]] = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-mfma"],
    "avx2": ["-mavx2", "-mfma"],
}

# VGGNET_ISA's values: the build each loads
LEVELS = {"avx512": "avx512", "avxvnni": "avx2", "avx2": "avx2"}

_state: dict[tuple[str, str], tuple[ModuleType | None, str | None]] = {}


def cpu_isas() -> list[str]:
    """The builds this CPU can run, best first (from the CPU's own feature bits, whatever ATEN_CPU_CAPABILITY says)."""
    found = []
    if getattr(torch.cpu, "_is_avx512_supported", lambda: False)():  # AVX-512 F, BW, DQ and VL
        found.append("avx512")
    if getattr(torch.cpu, "_is_avx2_supported", lambda: False)() and _has_fma():
        found.append("avx2")
    return found


def _has_fma() -> bool:
    """Whether the CPU has FMA3 (every AVX2 CPU of Intel and AMD does; /proc/cpuinfo confirms it where it exists)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), ["fma"])
    return "fma" in flags


def _choose() -> tuple[str | None, str | None]:
    """(the ISA to build, None) or (None, why no build is tried)."""
    if os.environ.get("VGGNET_NATIVE", "1") == "0":
        return None, "VGGNET_NATIVE=0"
    isas, wanted = cpu_isas(), requested()
    if wanted and wanted not in LEVELS:
        return None, f"VGGNET_ISA={wanted!r} is not one of: {', '.join(LEVELS)}"
    if wanted and LEVELS[wanted] not in isas:
        return None, f"VGGNET_ISA={wanted}, but this CPU lacks it (it runs: {', '.join(isas) or 'neither'})"
    if not isas:
        return (
            None,
            f"this CPU has neither AVX-512 nor AVX2 with FMA (torch sees {torch.backends.cpu.get_cpu_capability()})",
        )
    if not (shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")):
        return None, "no C++ compiler (c++ or g++) on PATH"
    try:
        import ninja  # noqa: F401  # torch.utils.cpp_extension.load builds with ninja
    except ImportError:
        if not shutil.which("ninja"):
            return None, "ninja is not installed (pip install ninja)"
    return LEVELS[wanted] if wanted else isas[0], None


def requested() -> str:
    """VGGNET_ISA, lower case ('' when unset)."""
    return os.environ.get("VGGNET_ISA", "").strip().lower()


def int8_why_not() -> str | None:
    """Why the compiled int8 kernels do not run here (None when they do)."""
    module = kernels()
    if module is None:
        return f"no compiled kernels: {why_not()}"
    if requested() == "avx2":
        return "VGGNET_ISA=avx2: as on a CPU without AVX-VNNI"
    if not module.cpu_has_vnni():
        return f"they need {'AVX-512 VNNI' if module.isa == 'avx512' else 'AVX-VNNI'}, which this CPU lacks"
    return None


def kernels() -> ModuleType | None:
    """The compiled extension of the chosen ISA, built and loaded once per process; None where it is unavailable."""
    key = _key()
    if key not in _state:
        module, (isa, reason) = None, _choose()
        if isa is not None:
            try:
                module = _build(isa)
            except Exception as e:  # a compiler error is a reason to run the Python path, not to fail
                reason = f"the {isa} build failed: {_first_error(str(e)) or type(e).__name__}"
        _state[key] = (module, reason)
    return _state[key][0]


def why_not() -> str | None:
    """Why `kernels()` returned None (None when it loaded)."""
    kernels()
    return _state[_key()][1]


def _key() -> tuple[str, str]:
    """The settings a load depends on: each is tried once per process (tests switch between them)."""
    return os.environ.get("VGGNET_NATIVE", "1"), os.environ.get("VGGNET_ISA", "")


def _first_error(log: str) -> str:
    """The compiler's first error line of a build log ('' if none)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    found = [line for line in lines if ": error:" in line] or [line for line in lines if "error" in line.lower()]
    return found[0] if found else (lines[-1] if lines else "")


def build_folder(isa: str) -> Path:
    """The cache folder of one ISA's build: native-<hash of the sources, their folder, torch's version and the flags>.

    The folder counts because the build files name the sources by path: two installs of the same sources
    sharing one folder would each rewrite them, and every process would rebuild.
    """
    csrc = Path(str(resources.files("vggnet.cpu").joinpath("csrc")))
    texts = [(csrc / name).read_bytes() for name in SOURCES + HEADERS]
    flags = " ".join(COMMON_FLAGS + ISAS[isa])
    parts = [*texts, str(csrc.resolve()).encode(), torch.__version__.encode(), flags.encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return cache_root() / f"native-{key}"  # beside the downloads (weights/, datasets/)


def _build(isa: str) -> ModuleType:
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its note that CUDA is absent
    from torch.utils.cpp_extension import load

    folder = build_folder(isa)
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.so")):  # the first process pays for the build: say why it pauses
        report(f"vggnet: building the compiled {isa} kernels once (about a minute) into {folder}")
    return load(
        name=f"vggnet_native_{folder.name.removeprefix('native-')}",
        sources=[str(resources.files("vggnet.cpu").joinpath("csrc", name)) for name in SOURCES],
        extra_cflags=COMMON_FLAGS + ISAS[isa],
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        verbose=False,
    )


@dataclass(frozen=True)
class Status:
    """Which CPU kernels this process runs and why: what `vggnet info` prints."""

    cpu: str  # the CPU's model name
    cpu_isas: list[str]  # the builds the CPU can run, best first
    torch_isa: str  # torch's own dispatch level (ATEN_CPU_CAPABILITY lowers it)
    isa: str | None  # the build loaded, or None
    folder: str | None  # where it is cached
    why_not: str | None  # why none is loaded
    fp32: str  # what runs the fast fp32 path's convs
    int8: str  # what runs quantize_int8's model


def status() -> Status:
    """The kernels in use here (loading, or building, them if this process has not yet), with the reasons."""
    module = kernels()
    isa = module.isa if module is not None else None
    if module is not None:
        fp32 = f"compiled {isa} kernels: Winograd F(4x4, 3x3) convs, conv1_1 as a direct conv"
    else:
        fp32 = f"Winograd in PyTorch's GEMMs (no compiled kernels: {why_not()})"
    lack = int8_why_not()
    if lack is None:
        vnni = "AVX-512 VNNI" if isa == "avx512" else "AVX-VNNI"
        int8 = f"compiled {isa} kernels with {vnni}: Winograd F(2x2, 3x3) with int8 GEMMs, int8 FC6-FC7"
    else:
        int8 = f"PyTorch's FX int8 (fbgemm/oneDNN), slower than the fp32 path; quantize_int8 warns ({lack})"
    return Status(
        cpu=cpu_model(),
        cpu_isas=cpu_isas(),
        torch_isa=torch.backends.cpu.get_cpu_capability(),
        isa=isa,
        folder=str(build_folder(isa)) if isa else None,
        why_not=why_not(),
        fp32=fp32,
        int8=int8,
    )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
