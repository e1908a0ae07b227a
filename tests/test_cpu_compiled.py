"""vggnet.cpu.compiled: the compiled kernels load where they can, and say why not where they cannot."""

import pytest

from vggnet.cpu import compiled


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not tried to load the kernels yet."""
    monkeypatch.setattr(compiled, "_state", {})


def test_switched_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv("VGGNET_NATIVE", "0")
    assert compiled.kernels() is None and compiled.why_not() == "VGGNET_NATIVE=0"


def test_a_failed_build_is_a_reason_not_an_error(fresh, monkeypatch):
    monkeypatch.delenv("VGGNET_NATIVE", raising=False)
    monkeypatch.setattr(compiled, "_reason", lambda: None)

    def broken():
        raise RuntimeError("ninja: build stopped\nwinograd.cpp:12:3: error: 'foo' was not declared\nmore")

    monkeypatch.setattr(compiled, "_build", broken)
    assert compiled.kernels() is None
    assert compiled.why_not() == "the build failed: winograd.cpp:12:3: error: 'foo' was not declared"


def test_no_compiler(fresh, monkeypatch):
    monkeypatch.delenv("VGGNET_NATIVE", raising=False)
    monkeypatch.setattr(compiled.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    assert compiled.kernels() is None and compiled.why_not() == "no C++ compiler (c++ or g++) on PATH"


def test_no_avx512(fresh, monkeypatch):
    monkeypatch.delenv("VGGNET_NATIVE", raising=False)
    monkeypatch.setattr(compiled.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert compiled.kernels() is None and compiled.why_not() == "this CPU lacks AVX-512 (torch sees AVX2)"


def test_loaded_once_per_process():
    first = compiled.kernels()
    assert compiled.kernels() is first
    if first is not None:
        assert compiled.why_not() is None and hasattr(first, "conv3x3_f4")
