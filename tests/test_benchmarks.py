"""The GPU benchmark script: its exit without a GPU, its logic on a tiny CPU run, its peak table."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def load_gpu_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), *args], capture_output=True, text=True, env=env
    )


@pytest.mark.slow
def test_exits_cleanly_without_a_gpu(tmp_path):
    r = run_script(tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no CUDA GPU visible to torch" in r.stdout and "nothing measured" in r.stdout
    assert list(tmp_path.iterdir()) == []  # a machine without a GPU never overwrites recorded GPU figures


@pytest.mark.slow
def test_smoke_run_on_the_cpu_writes_results(tmp_path):
    r = run_script("--smoke-cpu", "--peak-tflops", "1", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert set(results["runs"]) == {"train eager", "inference eager"}
    for row in results["runs"].values():
        assert row["images_per_s"] > 0 and row["batch"] == 4 and row["steps"] == 2
        assert row["mfu"] == pytest.approx(row["model_tflops"] / 1.0)
    assert results["skipped"] == ["train compiled (--no-compile)", "inference compiled (--no-compile)"]
    assert "| train eager | 4 |" in (tmp_path / "gpu.md").read_text()


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-40GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA A10", 125.0),
        ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", 989.0 * 3 / 7),
        ("NVIDIA A10G", None),  # not in the table: "unknown peak", not A10's or A100's
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_table(name, peak):
    found, source = load_gpu_script().peak_tflops(name)
    assert found == (pytest.approx(peak) if peak else None)
    assert (source == "unknown peak") == (peak is None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, check",
    [
        ("train_step", lambda r: [run["batch"] for run in r["runs"]] == [4] and r["runs"][0]["rounds"] == 2),
        ("data_pipeline", lambda r: r["images"] == 4 and r["rounds"] == 2 and r["workers"] == 0),
    ],
)
def test_cpu_benchmark_smoke_run_writes_results(script, check, tmp_path):
    path = SCRIPT.parent / f"{script}.py"
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1] / "src")}
    r = subprocess.run(
        [sys.executable, str(path), "--smoke", "--out", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / f"{script}.json").read_text())
    assert check(results)
    rows = results["runs"] if script == "train_step" else [results]
    for row in rows:
        assert set(row["images_per_s"]) == {"ours", "torchvision"} and min(row["images_per_s"].values()) > 0
        assert row["ratio"] == pytest.approx(row["images_per_s"]["ours"] / row["images_per_s"]["torchvision"])
    assert "ours / torchvision" in (tmp_path / f"{script}.md").read_text()


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_weights_verify_smoke_run_writes_results(tmp_path, monkeypatch):
    weights_verify = load_benchmark("weights_verify")
    monkeypatch.setattr(sys, "argv", ["weights_verify.py", "--smoke", "--out", str(tmp_path)])
    monkeypatch.setattr(sys.modules["common"], "RESULTS", sys.modules["common"].RESULTS)  # --out changes it: restore
    assert weights_verify.main() == 0
    results = json.loads((tmp_path / "weights_verify.json").read_text())
    assert results["rounds"] == 1 and all(len(t) == 1 and t[0] > 0 for t in results["seconds"].values())
    assert "load_weights, verify=True" in results["medians"] and results["sizes_bytes"]["checkpoint"] > 0
    assert "Verification adds" in (tmp_path / "weights_verify.md").read_text()


def test_long_runs_measures_a_run_in_process(tmp_path):
    import numpy as np
    from PIL import Image

    from vggnet import build
    from vggnet.weights import save_weights

    long_runs = load_benchmark("long_runs")
    for c in ("n01", "n02"):
        (tmp_path / "val" / c).mkdir(parents=True)
        Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(tmp_path / "val" / c / "a.JPEG")
    weights = tmp_path / "w.safetensors"
    save_weights(build("A", width=1 / 16, num_classes=2, input_size=32), weights, extra={"scale": [36, 36]})
    for command, n in (("evaluate", 5), ("predict", 3)):
        run = long_runs.child(command, n, str(weights), tmp_path)  # the dataset cycles the 2 photos
        assert run["images"] == n and run["peak_rss_mib"] > 0 and run["command"] == command


@pytest.mark.slow
def test_input_pipeline_smoke_run_writes_results(tmp_path):
    path = SCRIPT.parent / "input_pipeline.py"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run(
        [sys.executable, str(path), "--smoke", "--out", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    assert "no CUDA GPU visible to torch; the GPU rows are skipped" in r.stdout
    results = json.loads((tmp_path / "input_pipeline.json").read_text())
    assert (
        set(results["pipeline"]) == {"pil", "cpu"} and min(v["images_per_s"] for v in results["pipeline"].values()) > 0
    )
    assert set(results["training"]) == {"synthetic", "pil", "cpu"}
    assert results["fidelity"]["cpu"]["max_abs"] == 0  # the batched CPU path gives the PIL path's tensors
    assert 0 < results["fidelity"]["F.interpolate"]["max_abs"] < 1.01  # torch's resize: a unit here and there
    assert "| pipeline alone, --decode cpu |" in (tmp_path / "input_pipeline.md").read_text()


@pytest.mark.slow
def test_input_pipeline_prepare_copies_photos_across_classes(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    for c in ("a", "b"):
        (src / "train" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (20, 10), (i, 0, 0)).save(src / "train" / c / f"{i}.jpg")
    path = SCRIPT.parent / "input_pipeline.py"
    r = subprocess.run(
        [sys.executable, str(path), "--data", str(src), "--limit", "4", "--prepare", str(tmp_path / "dst")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    copied = sorted(str(p.relative_to(tmp_path / "dst")) for p in (tmp_path / "dst").rglob("*.jpg"))
    assert copied == ["a/0.jpg", "a/3.jpg", "b/0.jpg", "b/3.jpg"]


@pytest.mark.slow
def test_gpu_pipeline_script_parses_and_asks_for_its_arguments():
    script = SCRIPT.parent / "gpu_pipeline.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage: bash" in r.stderr and "PHOTOS OUT [BUDGET_SECONDS]" in r.stderr


def test_runtimes_report_compares_each_round_with_that_rounds_faster_runtime(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as runtimes.py runs it: its neighbours import by name
    report = importlib.import_module("runtimes_report")

    def row(precision, family, rates):
        return {
            "precision": precision,
            "family": family,
            "batches": {"1": {"images_per_s": sorted(rates)[1], "per_round": rates}},
        }

    rows = {
        "ONNX Runtime int8": row("int8", "onnxruntime", [10.0, 8.0, 9.0]),
        "OpenVINO int8": row("int8", "openvino", [6.0, 12.0, 9.5]),
        "vggnet int8": row("int8", "torch", [5.0, 6.0, 9.5]),
        "ONNX Runtime fp32": row("fp32", "onnxruntime", [2.0, 2.0, 2.0]),
    }
    assert report.ratios(rows, "1")["vggnet int8"] == pytest.approx(6.0 / 9.5)  # medians: 6 against OpenVINO's 9.5
    assert report.round_ratios(rows, "1")["vggnet int8"] == pytest.approx([5 / 10, 6 / 12, 9.5 / 9.5])
    assert report.round_ratios(rows, "1")["ONNX Runtime fp32"] == [1.0, 1.0, 1.0]  # fp32 against fp32 only


@pytest.mark.slow
def test_compress_smoke_run_writes_results(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1] / "src")}
    r = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "compress.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "compress_smoke.json").read_text())
    assert set(results["runs"]) == {"rank 8", "rank 8 + int8"}
    for run in results["runs"].values():
        for layer in ("fc6", "fc7"):
            assert run[layer]["rank"] == 8 and 1 - 1e-6 <= run[layer]["error"] / run[layer]["exact_error"] <= 1.01
        assert [line.split(":")[0] for line in run["progress"][1:3]] == ["fc6 256x128", "fc7 256x256"]
        assert 0 < run["bytes"] < results["uncompressed_bytes"]
    assert results["runs"]["rank 8 + int8"]["bytes"] < results["runs"]["rank 8"]["bytes"] / 3
    assert {n.rsplit(", ", 1)[1] for n in results["images_per_s"]} == {"fp32", "--fast"}
    assert "ImageNet accuracy a setting costs cannot be measured here" in (tmp_path / "compress_smoke.md").read_text()
