"""The Imagenette experiment: its report generator on fake metrics, and its driver on a tiny photo subset."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "experiments" / "imagenette"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"imagenette_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    sys.path.insert(0, str(HERE))  # run.py imports report.py by name
    spec.loader.exec_module(mod)
    return mod


report = _module("report")
run_module = _module("run")
IMAGENETTE = run_module.DATA  # /work/shared/data/imagenette, found above the checkout (main or a worktree)


def fake_run(name: str, model: str, top1: float, jitter: bool = False, init_from: str = "") -> dict:
    evals = {
        "dense_single": {"top1": top1, "top5": 5.0, "scales": [55 if jitter else 37], "seconds": 1.0},
        "dense_multi": {"top1": top1 - 1, "top5": 4.0, "scales": [37, 55, 73] if jitter else [32, 37, 42]},
        "multicrop_multi": {"top1": top1 - 0.5, "top5": 4.5, "scales": [37, 55, 73] if jitter else [32, 37, 42]},
        "fusion": {"top1": top1 - 2, "top5": 3.0},
    }
    return {
        "name": name,
        "run": {"name": name, "model": model, "init_from": init_from},
        "config": {"model": model, "width": 0.125, "init": "glorot", "lr": 0.01, "scale": [37, 73] if jitter else [37]},
        "train_seconds": 120.0,
        "history": [{"epoch": 1, "val_top1": top1 + 3}, {"epoch": 2, "val_top1": top1 + 1}],
        "evals": evals,
    }


def test_report_tables_verdicts_and_seeds(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    runs = [
        fake_run("A", "A", 40.0),
        fake_run("A-s1", "A", 42.0),
        fake_run("A-s2", "A", 44.0),
        fake_run("D", "D", 35.0, init_from="A"),
        fake_run("D-jit", "D", 37.0, jitter=True, init_from="D"),
        fake_run("A-LRN", "A-LRN", 35.0),  # better than A's seed mean (42) by more than the seeds' spread
    ]
    for r in runs:
        (metrics / f"{r['name']}.json").write_text(json.dumps(r))
    ens = {"members": ["D", "D-jit"], **{k: {"top1": 30.0, "top5": 2.0} for k in report.METHODS}}
    (metrics / "ensemble_D+E.json").write_text(json.dumps(ens))

    text = report.write_report(metrics, tmp_path, "PREAMBLE-MARK\n").read_text()

    assert "PREAMBLE-MARK" in text
    assert "| A | 37 | 37 | 40.0 / 5.0 | 29.6 / 10.4 |" in text  # Table 3 row with the paper beside
    assert "| D-jit | [37;73] | 37,55,73 | 36.0 / 4.0 | 37.0 / 5.0 | 24.8 / 7.5 |" in text  # Table 4
    assert "| B | | | not run yet | |" in text
    assert "| A | A, A-s1, A-s2 | 42.0 ± 2.0 (n=3) |" in text  # seeds: mean ± sample std
    assert "| A-s1 | A | 1/8 | glorot | — | 37 | 2 | 0.01 | 2.0 |" in text  # runs and times, with the width
    # the width probes: A-LRN at 1/8 has run, the wider ones not yet
    assert "| A-LRN | 1/8 | 37 | 2 | 2.0 | 35.0 / 5.0 | 34.0 / 4.0 | 34.5 / 4.5 | 33.0 / 3.0 |" in text
    assert "| A-LRN-w2 | | | | | not run yet | not run yet | not run yet | not run yet |" in text
    assert "**Deeper is better (A -> D/E)**: holds" in text
    # noise: A's seeds 40, 42, 44 (std 2) against one A-LRN run: 2 x 2 x sqrt(1 + 1/3) = 4.6 points
    assert "**LRN does not help**: does not hold here — A-LRN 35.0% vs A 42.0% (means of 1 and 3 seeds" in text
    assert "noise of ±4.6 points" in text
    assert "**Jittered training beats fixed S**: does not hold here" in text
    assert "better for 4 of 4 nets" in text  # A, A-LRN, D, D-jit: multi-scale 1 point better
    assert "**The ensemble beats single nets**: holds — D+E fused 30.0% vs best member fused 33.0%" in text
    assert "--only B,C,E,C-jit,E-jit,D-glorot,A-LRN-s1,A-LRN-s2,D-s1,D-s2,D-jit-s1,D-jit-s2" in text
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "methods.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("lrn_errors", "expected"),
    [
        # A 40, 42, 44 vs A-LRN 35, 37, 39: 5 points better, noise 2 x sqrt(4/3 + 4/3) = 3.3
        ((35.0, 37.0, 39.0), "does not hold here — A-LRN 37.0% vs A 42.0% (means of 3 and 3 seeds"),
        # A-LRN 39, 41, 43: 1 point better, within the noise: the null claim stands
        ((39.0, 41.0, 43.0), "holds — A-LRN 41.0% vs A 42.0% (means of 3 and 3 seeds"),
    ],
)
def test_lrn_verdict_uses_both_seed_means(lrn_errors, expected) -> None:
    runs = {n: fake_run(n, "A", e) for n, e in (("A", 40.0), ("A-s1", 42.0), ("A-s2", 44.0))}
    for name, e in zip(("A-LRN", "A-LRN-s1", "A-LRN-s2"), lrn_errors, strict=True):
        runs[name] = fake_run(name, "A-LRN", e)
    text = "\n".join(report.verdicts(runs, {}))
    assert f"**LRN does not help**: {expected}; the claim holds unless A-LRN is better" in text
    assert "noise of ±3.3 points" in text


def test_report_with_no_metrics_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    text = report.write_report(tmp_path / "metrics", tmp_path).read_text()
    assert "**Deeper is better (A -> D/E)**: not run yet" in text
    assert "No run yet." in text


@pytest.mark.skipif(not Path(IMAGENETTE, "train").is_dir(), reason=f"Imagenette photos absent at {IMAGENETTE}")
def test_driver_trains_evaluates_and_reports_a_tiny_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_module
    data = tmp_path / "data"
    for split, n in (("train", 8), ("val", 3)):
        for wnid in sorted(p.name for p in Path(IMAGENETTE, split).iterdir())[:2]:
            (data / split / wnid).mkdir(parents=True)
            for f in sorted(Path(IMAGENETTE, split, wnid).iterdir())[:n]:
                shutil.copy(f, data / split / wnid / f.name)
    monkeypatch.setitem(run.BASE, "batch", 8)
    monkeypatch.setitem(run.BASE, "workers", 0)
    monkeypatch.setitem(run.BASE, "width", 1 / 16)
    args = ["--only", "A", "--epochs", "1", "--data", str(data), "--root", str(tmp_path / "runs")]
    assert run.main([*args, "--out", str(tmp_path / "out"), "--limit", "0"]) == 0

    record = json.loads((tmp_path / "out" / "metrics" / "A.json").read_text())
    assert len(record["history"]) == 1 and record["config"]["width"] == 1 / 16
    assert {k: v["images"] for k, v in record["evals"].items()} == dict.fromkeys(report.METHODS, 6)
    s, delta = run.GEOMETRY["fixed_s"], round(32 * run.GEOMETRY["crop"] / 224)  # {S-32, S, S+32} scaled
    assert (s, delta) == (73, 9)
    assert record["evals"]["dense_multi"]["scales"] == [s - delta, s, s + delta]
    assert (tmp_path / "runs" / "cache" / "train-146.npy").is_file()  # the largest S and Q
    assert f"| A | {s} | {s} |" in (tmp_path / "out" / "RESULTS.md").read_text()
    # A second call finds the metrics and trains nothing.
    assert run.main([*args, "--out", str(tmp_path / "out")]) == 0


def test_verdict_within_the_noise_is_not_resolved(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    seeds = {"A": 40.0, "A-s1": 41.0, "A-s2": 39.0, "D": 39.0, "D-s1": 38.0, "D-s2": 40.0}
    for name, top1 in seeds.items():
        r = fake_run(name, name[0], top1)
        for e in r["evals"].values():
            e["images"] = 1000  # binomial noise of a difference near 39.5%: 2 x sqrt(2 x .395 x .605 / 1000) = 4.4
        (metrics / f"{name}.json").write_text(json.dumps(r))
    text = report.write_report(metrics, tmp_path).read_text()
    assert (
        "**Deeper is better (A -> D/E)**: not resolved at this size (leans towards it, within the noise) — "
        "A 40.0% vs D 39.0% (seed means)" in text
    )
    assert "the gap, 1.0 points, is within the noise of ±4.4" in text


def test_ensemble_verdict_counts_each_ensemble(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for name, model, top1 in (("D", "D", 40.0), ("E", "E", 41.0), ("D-jit", "D", 36.0), ("E-jit", "E", 37.0)):
        (metrics / f"{name}.json").write_text(json.dumps(fake_run(name, model, top1)))
    for ens, members, fused in (("D+E", ["D", "E"], 35.0), ("D-jit+E-jit", ["D-jit", "E-jit"], 36.0)):
        record = {"members": members, **{k: {"top1": fused, "top5": 2.0} for k in report.METHODS}}
        (metrics / f"ensemble_{ens}.json").write_text(json.dumps(record))
    text = report.write_report(metrics, tmp_path).read_text()
    # members' fused errors are top1 - 2: D 38, E 39, D-jit 34, E-jit 35; only D+E (35 < 38) beats its best member
    assert (
        "**The ensemble beats single nets**: holds for 1 of 2 — D+E fused 35.0% vs best member fused 38.0%; "
        "D-jit+E-jit fused 36.0% vs best member fused 34.0%." in text
    )


def test_shrink_copies_a_folder_at_a_smaller_side_and_skips_corrupt_photos(tmp_path: Path, capsys) -> None:
    from PIL import Image

    shrink = _module("shrink")
    src = tmp_path / "src"
    (src / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (300, 180), (200, 10, 10)).save(src / "train" / "a" / "wide.jpg")
    Image.new("RGB", (50, 100), (10, 200, 10)).save(src / "train" / "a" / "tall.png")
    (src / "train" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    assert shrink.main([str(src), str(tmp_path / "dst"), "--side", "84"]) == 0
    out = tmp_path / "dst" / "train" / "a"
    assert Image.open(out / "wide.jpg").size == (140, 84)  # shorter side 84, aspect kept
    assert Image.open(out / "tall.jpg").size == (84, 168)  # PNG re-encoded as JPEG
    assert not (out / "broken.jpg").exists()
    captured = capsys.readouterr()
    assert "broken.jpg: skipped, unreadable" in captured.err and "2 photos written" in captured.out
    assert shrink.main([str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "is not a folder" in capsys.readouterr().err
