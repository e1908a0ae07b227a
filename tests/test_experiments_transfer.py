"""The transfer experiment's report on fake metrics, and its class subsets of a cached photo split."""

import json

import numpy as np

from helpers import experiment_module

report = experiment_module("transfer", "report")
run = experiment_module("transfer", "run")


def test_report_states_mean_spread_and_missing_parts(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for seed, top1 in enumerate((30.0, 40.0, 50.0)):
        (metrics / f"full-n10-s{seed}.json").write_text(
            json.dumps({"method": "full", "n": 10, "seed": seed, "seconds": 60.0, "top1": top1, "images": 1991})
        )
    (metrics / "scratch-n10-s0.json").write_text(
        json.dumps({"method": "scratch", "n": 10, "seed": 0, "seconds": 0.0, "top1": 60.0, "images": 1991})
    )
    (metrics / "probe-n50-s0.json").write_text(
        json.dumps({"method": "probe", "n": 50, "seed": 0, "seconds": 30.0, "top1": 22.5, "images": 1991})
    )
    text = report.write_results(metrics, tmp_path, "SETUP\n").read_text()
    assert "SETUP" in text and "## The source net\n\nNot trained yet." in text
    full = next(line for line in text.splitlines() if line.startswith("| full fine-tuning"))
    assert full.split(" | ")[1:] == ["40.0 ± 10.0 (30.0-50.0)", "not run yet |"]
    probe = next(line for line in text.splitlines() if line.startswith("| linear probe"))
    assert probe.endswith("| not run yet | 22.5 (1 seed) |")
    assert "- 10 labels per class: lowest mean error 40.0%, full fine-tuning" in text
    assert "; 20.0 points below training from scratch (60.0%)." in text
    assert "- 50 labels per class: lowest mean error 22.5%, linear probe (fc7" in text
    assert "5 runs, 3.5 minutes of wall time in all." in text and "## Smaller models\n\nNot run yet." in text
    assert "| fp32 | 527.8 MiB | 138,357,544 | 100.0% |" in text  # VGG16 from its shapes


def test_class_subsets_relabel_and_draw_per_seed():
    class Cache:
        classes = ["a", "b", "c"]
        labels = [0, 1, 2] * 6
        samples = [(f"p{i}", y) for i, y in enumerate(labels)]

        def __getitem__(self, i):
            return f"img{i}", self.labels[i]

    subset = run.Classes(Cache(), ["c", "a"], per_class=2, seed=0)
    assert subset.classes == ["c", "a"] and subset.labels == [0, 0, 1, 1] and len(subset) == 4
    assert all(Cache.labels[i] == (2 if y == 0 else 0) for i, y in zip(subset.indices, subset.labels, strict=True))
    assert subset[0] == (f"img{subset.indices[0]}", 0) and subset.samples[0] == (f"p{subset.indices[0]}", 0)
    assert run.Classes(Cache(), ["c", "a"], 2, 0).indices == subset.indices  # the same seed, the same photos
    assert np.unique(run.Classes(Cache(), ["a"]).indices).size == 6  # no per_class: every photo of the class
