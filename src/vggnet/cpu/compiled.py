"""The compiled kernels (cpu/csrc/*.cpp, AVX-512): built on first use with torch's extension tooling, then cached.

`kernels()` returns the loaded extension, or None where it cannot be had: no AVX-512 CPU, no C++
compiler or ninja, a failed build, or VGGNET_NATIVE=0 in the environment. Callers then take their
Python path; `why_not()` says which reason applied. The build (about a minute) lands in
$VGGNET_CACHE (default ~/.cache/vggnet)/native-<key>, the key hashing the sources, torch's version and
the flags, so a changed source or torch builds afresh and every later process loads it in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from importlib import resources
from pathlib import Path
from types import ModuleType

import torch

from ..download import cache_root
from ..io import report

SOURCES = ("bindings.cpp", "winograd_f32.cpp", "winograd_int8.cpp", "conv_small.cpp", "linear.cpp")
HEADERS = ("kernels.h",)
FLAGS = ["-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx512vnni", "-mfma"]

_state: dict[str, object] = {}


def _reason() -> str | None:
    """Why the kernels cannot be built here, or None if they can be tried."""
    if os.environ.get("VGGNET_NATIVE", "1") == "0":
        return "VGGNET_NATIVE=0"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return f"this CPU lacks AVX-512 (torch sees {torch.backends.cpu.get_cpu_capability()})"
    if not (shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")):
        return "no C++ compiler (c++ or g++) on PATH"
    try:
        import ninja  # noqa: F401  # torch.utils.cpp_extension.load builds with ninja
    except ImportError:
        if not shutil.which("ninja"):
            return "ninja is not installed (pip install ninja)"
    return None


def kernels() -> ModuleType | None:
    """The compiled extension, built and loaded once per process; None where it is unavailable (see why_not)."""
    if "module" in _state:
        return _state["module"]  # type: ignore[return-value]
    module, reason = None, _reason()
    if reason is None:
        try:
            module = _build()
        except Exception as e:  # a compiler error is a reason to run the Python path, not to fail
            reason = f"the build failed: {_first_error(str(e)) or type(e).__name__}"
    _state.update(module=module, reason=reason)
    return module


def _first_error(log: str) -> str:
    """The compiler's first error line of a build log ('' if none)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    found = [line for line in lines if ": error:" in line] or [line for line in lines if "error" in line.lower()]
    return found[0] if found else (lines[-1] if lines else "")


def why_not() -> str | None:
    """Why `kernels()` returned None (None when it loaded)."""
    kernels()
    return _state["reason"]  # type: ignore[return-value]


def _build() -> ModuleType:
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its note that CUDA is absent
    from torch.utils.cpp_extension import load

    files = [resources.files("vggnet.cpu").joinpath("csrc", name) for name in SOURCES]
    texts = [Path(str(resources.files("vggnet.cpu").joinpath("csrc", name))).read_bytes() for name in SOURCES + HEADERS]
    key = hashlib.sha256(b"\0".join([*texts, torch.__version__.encode(), " ".join(FLAGS).encode()])).hexdigest()[:16]
    folder = cache_root() / f"native-{key}"  # beside the downloads (weights/, datasets/)
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.so")):  # the first process pays for the build: say why it pauses
        report(f"vggnet: building the compiled kernels once (about a minute) into {folder}")
    return load(
        name=f"vggnet_native_{key}",
        sources=[str(f) for f in files],
        extra_cflags=FLAGS,
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        verbose=False,
    )
