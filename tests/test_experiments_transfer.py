"""The transfer experiment's report on fake metrics, and its class subsets of a cached photo split."""

import json

import numpy as np
import torch

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
    assert "- 10 labels per class: full fine-tuning 40.0 vs from scratch 60.0." in text  # one seed in common
    assert "- 50 labels per class: fc7 probe 22.5." in text
    assert "5 runs, 3.5 minutes of wall time in all." in text and "## Smaller models\n\nNot run yet." in text
    assert "| fp32 | 527.8 MiB | 138,357,544 | 100.0% |" in text  # VGG16 from its shapes
    (metrics / "machine.json").write_text(json.dumps({"machine": "x86_64", "torch": "9.9"}))
    text = report.write_results(metrics, tmp_path, "SETUP on {machine}, torch {torch}\n").read_text()
    assert "SETUP on x86_64, torch 9.9\n" in text  # the machine the runs recorded, not the one writing the report


def write_runs(metrics, method, n, errors):
    for seed, top1 in enumerate(errors):
        record = {"method": method, "n": n, "seed": seed, "seconds": 60.0, "top1": top1, "images": 1991}
        (metrics / f"{method}-n{n}-s{seed}.json").write_text(json.dumps(record))


def test_rankings_say_whether_each_step_exceeds_the_seed_spread(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    write_runs(metrics, "gap-head", 10, (47.0, 45.0, 50.0))
    write_runs(metrics, "full", 10, (47.5, 49.0, 48.0))  # per seed +0.5 / +4.0 / -2.0: mean 0.83, se 1.74
    write_runs(metrics, "scratch", 10, (60.0, 62.0, 66.0))  # against full: +12.5 / +13 / +18, se 1.76
    write_runs(
        metrics, "scratch", 50, (61.0, 67.0, 72.0)
    )  # against n10's scratch: +4.0, se sqrt(9.33/3 + 30.33/3) = 3.6 (unpaired)
    text = report.write_results(metrics, tmp_path, "SETUP\n").read_text()
    assert "- 10 labels per class: gap head 47.3 ≈ full fine-tuning 48.2 < from scratch 62.7." in text
    assert (
        "full fine-tuning minus gap head +0.8 points (per seed +0.5 / +4.0 / -2.0; standard error 1.7): within" in text
    )
    assert "from scratch minus gap head +15.3 points" in text and ": beyond 2 standard errors" in text
    assert "- **From scratch, 50 labels against 10**: +4.0 points, standard error 3.6: within 2 standard errors" in text


def test_the_earlier_recipe_is_named_until_the_source_is_made_again(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    source = {"seconds": 600.0, "history": [{}] * 3, "top1": 18.4, "images": 1934}
    (metrics / "source.json").write_text(json.dumps(source))
    write_runs(metrics, "full", 10, (40.0, 41.0, 42.0))
    text = report.write_results(metrics, tmp_path, "SETUP\n").read_text()
    assert "**These figures come from the earlier recipe.**" in text
    assert "`run.py --redo-source` (the source net, 3 transfer runs and the smaller-models table: 13 minutes" in text
    assert "its best epoch chosen on these same validation photos (the earlier recipe)" in text
    source |= {"selected_on": "held-out", "held_out": 471, "trained_on": 4239}
    (metrics / "source.json").write_text(json.dumps(source))
    text = report.write_results(metrics, tmp_path, "SETUP\n").read_text()
    assert "earlier recipe" not in text and "its best epoch chosen on 471 held-out training photos" in text


def test_redo_source_forgets_what_the_source_made_and_keeps_the_scratch_runs(tmp_path):
    metrics, root = tmp_path / "metrics", tmp_path / "runs"
    names = ["source.json", "compression.json", "probe-n10-s0.json", "gap-head-n50-s2.json", "scratch-n10-s0.json"]
    for name in [*names, "machine.json", "curves-scratch-n10-s0.json"]:
        (metrics / name).parent.mkdir(exist_ok=True)
        (metrics / name).write_text("{}")
    for folder in ("source", "source-gap", "full-n10-s1", "scratch-n10-s1", "cache"):
        (root / folder).mkdir(parents=True)
    (root / "compressed-SVD_rank_8.safetensors").write_bytes(b"")
    removed = run.forget_source(root, metrics)
    assert len(removed) == 4 + 4
    left = sorted(p.name for p in [*metrics.iterdir(), *root.iterdir()])
    assert left == ["cache", "curves-scratch-n10-s0.json", "machine.json", "scratch-n10-s0.json", "scratch-n10-s1"]


def test_centre_crops_sit_where_evaluate_puts_the_centre_crop():
    from vggnet.evaluate import grid_positions

    class Photos:
        def __init__(self):
            self.pixels = np.arange(2 * 73 * 73 * 3, dtype=np.int64).reshape(2, 73, 73, 3) % 251

        def __len__(self):
            return 2

        def __getitem__(self, i):
            from PIL import Image

            return Image.fromarray(self.pixels[i].astype(np.uint8)), i

    crops, labels = run.centre_crops(Photos())
    ((top, left),) = grid_positions(73, 73, 64, 1)
    assert (top, left) == (5, 5) and crops.shape == (2, 3, 64, 64) and labels.tolist() == [0, 1]
    expected = torch.from_numpy(Photos().pixels[1, 5:69, 5:69].astype(np.uint8)).permute(2, 0, 1)
    assert torch.equal(crops[1], expected)


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


def test_the_curves_measurement_is_tabled_and_summed_up_in_numbers(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    write_runs(metrics, "scratch", 10, (61.0, 62.0, 63.0))
    write_runs(metrics, "scratch", 50, (66.0, 67.0, 68.0))
    for n, seed, errors in ((10, 0, (79.0, 70.0, 72.0, 61.0)), (50, 0, (80.0, 75.0, 69.0, 66.0))):
        readings = [
            {"step": 25 * (k + 1), "train_loss": 1.6 - 0.1 * k * (60 - n) / 50, "train_top1": 50.0, "top1": e}
            for k, e in enumerate(errors)
        ]
        record = {"method": "scratch", "n": n, "seed": seed, "seconds": 9.0, "epochs": 400 // n, "readings": readings}
        (metrics / f"curves-scratch-n{n}-s{seed}.json").write_text(json.dumps(record))
    text = report.write_results(metrics, tmp_path, "SETUP\n").read_text()
    assert "6 runs," in text  # the curves are a measurement, not runs of the table
    # second halves: n10 72 -> 61 (11), n50 69 -> 66 (3): mean 7.0, largest 11.0
    assert "error moves by 7.0 points on average from one reading to the next (largest 11.0)" in text
    assert "2 of 2 final readings reproduce the committed from-scratch errors (within 0.05)." in text
    assert "At the last step: 10 labels 61.0%, 50 labels 66.0% (seeds 0)." in text
    # the last 25 steps: 10 labels 1.6 - 0.3 = 1.30, 50 labels 1.6 - 0.06 = 1.54
    assert "the 10-label nets reach a loss of 1.30 (50% training error), the 50-label nets 1.54 (50%)" in text
    assert "| 100 | 61.0 (1 seed) | 1.30 | 66.0 (1 seed) | 1.54 |" in text
    assert "So the gap is real" not in text  # one seed per budget cannot say the gap exceeds the noise
