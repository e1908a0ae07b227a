"""vggnet.cpu.compiled: the best build the CPU runs loads (or the one VGGNET_ISA names), or it says why none can."""

import types
from pathlib import Path

import pytest
import torch

from vggnet.cpu import compiled
from vggnet.download import cache_root


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not tried to load the kernels yet, on a CPU with both ISAs unless a test says otherwise."""
    monkeypatch.setattr(compiled, "_state", {})
    monkeypatch.delenv("VGGNET_NATIVE", raising=False)
    monkeypatch.delenv("VGGNET_ISA", raising=False)
    monkeypatch.setattr(compiled, "cpu_isas", lambda: ["avx512", "avx2"])


def test_switched_off_by_the_environment(fresh, monkeypatch):
    monkeypatch.setenv("VGGNET_NATIVE", "0")
    assert compiled.kernels() is None and compiled.why_not() == "VGGNET_NATIVE=0"


def test_the_best_isa_unless_vggnet_isa_names_another(fresh, monkeypatch):
    monkeypatch.setattr(compiled, "_build", lambda isa: isa)  # the module stands for its ISA
    assert compiled.kernels() == "avx512" and compiled.why_not() is None
    monkeypatch.setenv("VGGNET_ISA", "AVX2")
    assert compiled.kernels() == "avx2" and compiled.why_not() is None
    monkeypatch.setattr(compiled, "cpu_isas", lambda: ["avx2"])
    monkeypatch.setenv("VGGNET_ISA", "")
    compiled._state.clear()
    assert compiled.kernels() == "avx2"


def test_int8_runs_where_the_cpu_has_the_builds_vnni(fresh, monkeypatch):
    def build(isa, vnni):
        return types.SimpleNamespace(isa=isa, cpu_has_vnni=lambda: vnni)

    monkeypatch.setattr(compiled, "_build", lambda isa: build(isa, True))
    assert compiled.int8_why_not() is None and compiled.kernels().isa == "avx512"
    monkeypatch.setenv("VGGNET_ISA", "avxvnni")  # the avx2 build with its int8 kernels
    assert compiled.int8_why_not() is None and compiled.kernels().isa == "avx2"
    monkeypatch.setenv("VGGNET_ISA", "avx2")  # the same build, as on a CPU without AVX-VNNI
    assert compiled.kernels().isa == "avx2"
    assert compiled.int8_why_not() == "VGGNET_ISA=avx2: as on a CPU without AVX-VNNI"
    compiled._state.clear()
    monkeypatch.setattr(compiled, "_build", lambda isa: build(isa, False))
    monkeypatch.setenv("VGGNET_ISA", "")
    assert compiled.int8_why_not() == "they need AVX-512 VNNI, which this CPU lacks"
    monkeypatch.setenv("VGGNET_ISA", "avxvnni")
    assert compiled.int8_why_not() == "they need AVX-VNNI, which this CPU lacks"
    monkeypatch.setenv("VGGNET_NATIVE", "0")
    assert compiled.int8_why_not() == "no compiled kernels: VGGNET_NATIVE=0"


def test_an_isa_the_cpu_lacks_or_does_not_exist(fresh, monkeypatch):
    monkeypatch.setattr(compiled, "cpu_isas", lambda: ["avx2"])
    monkeypatch.setenv("VGGNET_ISA", "avx512")
    assert compiled.kernels() is None
    assert compiled.why_not() == "VGGNET_ISA=avx512, but this CPU lacks it (it runs: avx2)"
    monkeypatch.setenv("VGGNET_ISA", "neon")
    assert compiled.kernels() is None and compiled.why_not() == "VGGNET_ISA='neon' is not one of: avx512, avxvnni, avx2"


def test_a_cpu_with_neither(fresh, monkeypatch):
    monkeypatch.setattr(compiled, "cpu_isas", lambda: [])
    monkeypatch.setattr(compiled.torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert compiled.kernels() is None
    assert compiled.why_not() == "this CPU has neither AVX-512 nor AVX2 with FMA (torch sees DEFAULT)"


def test_a_failed_build_is_a_reason_not_an_error(fresh, monkeypatch):
    def broken(isa):
        raise RuntimeError("ninja: build stopped\nwinograd.cpp:12:3: error: 'foo' was not declared\nmore")

    monkeypatch.setattr(compiled, "_build", broken)
    assert compiled.kernels() is None
    assert compiled.why_not() == "the avx512 build failed: winograd.cpp:12:3: error: 'foo' was not declared"


def test_no_compiler(fresh, monkeypatch):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    assert compiled.kernels() is None and compiled.why_not() == "no C++ compiler (c++ or g++) on PATH"


def test_each_isa_has_its_own_build_folder():
    folders = {isa: compiled.build_folder(isa) for isa in compiled.ISAS}
    assert len(set(folders.values())) == len(compiled.ISAS) == 2
    assert all(f.parent == cache_root() and f.name.startswith("native-") for f in folders.values())


def test_a_second_install_of_the_same_sources_builds_in_its_own_folder(tmp_path, monkeypatch):
    """Two checkouts sharing one cache would rewrite each other's build files (they name sources by path)."""
    import shutil

    here = compiled.build_folder("avx2")
    copy = tmp_path / "cpu"
    shutil.copytree(Path(str(compiled.resources.files("vggnet.cpu"))) / "csrc", copy / "csrc")
    monkeypatch.setattr(compiled.resources, "files", lambda package: copy)
    assert compiled.build_folder("avx2") != here
    assert compiled.build_folder("avx2") == compiled.build_folder("avx2")  # and the same install keeps its folder


def test_status_names_the_reason(fresh, monkeypatch):
    monkeypatch.setenv("VGGNET_NATIVE", "0")
    s = compiled.status()
    assert s.isa is None and s.folder is None and s.why_not == "VGGNET_NATIVE=0"
    assert s.fp32 == "Winograd in PyTorch's GEMMs (no compiled kernels: VGGNET_NATIVE=0)"
    assert s.int8.startswith("PyTorch's FX int8") and s.int8.endswith("(no compiled kernels: VGGNET_NATIVE=0)")


def test_loaded_once_per_process_and_setting(isa):
    first = compiled.kernels()
    assert compiled.kernels() is first and compiled.why_not() is None
    assert first.isa == isa and first.panel == {"avx512": 64, "avx2": 16}[isa]
    if isa == "avx512":
        assert first.cpu_has_vnni() == torch.cpu._is_vnni_supported()
    elif Path("/proc/cpuinfo").is_file():
        assert first.cpu_has_vnni() == ("avx_vnni" in Path("/proc/cpuinfo").read_text().split())
    s = compiled.status()
    assert s.isa == isa and s.folder == str(compiled.build_folder(isa)) and s.fp32.startswith(f"compiled {isa} kernels")


def test_vggnet_info_prints_the_kernels_and_the_reason(fresh, monkeypatch, capsys):
    from vggnet.cli import main

    monkeypatch.setenv("VGGNET_NATIVE", "0")
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"CPU: {compiled.cpu_model()} (kernel builds it can run: avx512, avx2; torch dispatches")
    assert lines[1] == "compiled kernels: none (VGGNET_NATIVE=0)"
    assert lines[2] == (
        "fp32, --fast / optimize_for_inference(winograd=True): Winograd in PyTorch's GEMMs "
        "(no compiled kernels: VGGNET_NATIVE=0)"
    )


def test_vggnet_info_names_the_build_in_use(isa, capsys):
    from vggnet.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"compiled kernels: {isa} build, cached in {compiled.build_folder(isa)}\n" in out
    assert f"optimize_for_inference(winograd=True): compiled {isa} kernels: Winograd F(4x4, 3x3) convs" in out
