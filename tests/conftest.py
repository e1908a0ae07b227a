"""Shared test settings: small thread counts keep the suite fast on 2 cores."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# /work/shared/data/imagenette: beside the checkout, or beside a folder holding it (worktrees under /work/wt).
IMAGENETTE = next(
    (
        os.path.join(p, "shared", "data", "imagenette")
        for p in Path(__file__).resolve().parents
        if os.path.isdir(os.path.join(p, "shared", "data", "imagenette"))
    ),
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "imagenette"),
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _frozen_cache(tmp_path_factory):
    """Cached outputs of frozen layers (vggnet.frozen) in a temporary folder, subprocesses included, never in ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VGGNET_FROZEN_CACHE", str(tmp_path_factory.mktemp("frozen")))
        yield


@pytest.fixture
def file_server():
    """A real HTTP server on 127.0.0.1 serving files the test adds (tests/http_files.py); stopped afterwards."""
    from http_files import FileServer

    server = FileServer()
    yield server
    server.stop()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """$VGGNET_CACHE and every peer's cache (torch hub, Keras, Hugging Face) in tmp_path; online, no mirror.

    Afterwards no compiled-kernel build may have landed in the temporary cache: these tests load weights but
    never run the fast path, which would build the kernels there.
    """
    cache = tmp_path / "cache"
    monkeypatch.setenv("VGGNET_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("VGGNET_TIMEOUT", "5")
    for name in ("HF_HUB_CACHE", "VGGNET_OFFLINE", "HF_HUB_OFFLINE", "VGGNET_MIRROR", "VGGNET_CATALOGUE"):
        monkeypatch.delenv(name, raising=False)
    yield cache
    assert not list(cache.glob("native-*")), "a test built the compiled kernels in its temporary cache"


@pytest.fixture(params=["avx512", "avx2"])
def isa(request, monkeypatch) -> str:
    """A test once per build of the compiled CPU kernels (VGGNET_ISA picks it), skipped where this CPU lacks it."""
    from vggnet.cpu import compiled

    monkeypatch.setenv("VGGNET_ISA", request.param)
    if compiled.kernels() is None:
        pytest.skip(f"no {request.param} kernels here: {compiled.why_not()}")
    return request.param


@pytest.fixture(params=["avx512", "avxvnni"])
def int8_isa(request, monkeypatch) -> str:
    """A test once per build of the int8 kernels: AVX-512 VNNI, AVX-VNNI; skipped where this CPU lacks it."""
    from vggnet.cpu import compiled

    monkeypatch.setenv("VGGNET_ISA", request.param)
    if compiled.int8_why_not() is not None:
        pytest.skip(f"no {request.param} int8 kernels here: {compiled.int8_why_not()}")
    return request.param
