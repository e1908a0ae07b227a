"""The Imagenette experiment: its report generator on fake metrics, and its driver on a tiny photo subset."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from helpers import experiment_module

HERE = Path(__file__).resolve().parents[1] / "experiments" / "imagenette"


report = experiment_module("imagenette", "report")
run_module = experiment_module("imagenette", "run")
IMAGENETTE = run_module.DATA  # /work/shared/data/imagenette, found above the checkout (main or a worktree)
NUMBER = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?!\w)")  # 35.0, 4, ±4.6; not the digits of A-w1, D-s1, 1x1, top-1


def numbers(prose: str) -> list[float]:
    """The numbers a line of the report states, in order."""
    return [float(x) for x in NUMBER.findall(prose)]


def verdict_on(text: str, claim: str) -> tuple[str, list[float]]:
    """The report's verdict on one claim: its outcome (the words before the dash) and the numbers after it."""
    line = next(x for x in text.splitlines() if x.startswith(f"- **{claim}**: "))
    outcome, _, detail = line.split("**: ", 1)[1].removesuffix(".").partition(" — ")
    return outcome, numbers(detail)


def line_starting(text: str, start: str) -> str:
    return next(x for x in text.splitlines() if x.startswith(start))


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

    text = report.write_results(metrics, tmp_path, "PREAMBLE-MARK\n").read_text()

    assert "PREAMBLE-MARK" in text
    assert "| A | 37 | 37 | 40.0 / 5.0 | 29.6 / 10.4 |" in text  # Table 3 row with the paper beside
    assert "| D-jit | [37;73] | 37,55,73 | 36.0 / 4.0 | 37.0 / 5.0 | 24.8 / 7.5 |" in text  # Table 4
    assert "| B | | | not run yet | |" in text
    assert "| A | A, A-s1, A-s2 | 42.0 ± 2.0 (n=3) |" in text  # seeds: mean ± sample std
    assert "| A-s1 | A | 1/8 | glorot | — | 37 | 2 | 0.01 | 2.0 |" in text  # runs and times, with the width
    # the width probes: A-LRN at 1/8 has run, the wider ones not yet
    assert "| A-LRN | 1/8 | 37 | 2 | 2.0 | 35.0 / 5.0 | 34.0 / 4.0 | 34.5 / 4.5 | 33.0 / 3.0 |" in text
    assert "| A-LRN-w2 | | | | | not run yet | not run yet | not run yet | not run yet |" in text
    assert verdict_on(text, "Deeper is better (A -> D/E)")[0] == "holds"
    # A-LRN 35.0 vs A 42.0, means of 1 and 3 runs; noise: A's seeds 40, 42, 44 (std 2) against one A-LRN run,
    # 2 x 2 x sqrt(1 + 1/3) = 4.6 points
    assert verdict_on(text, "LRN does not help") == ("does not hold here", [35.0, 42.0, 1, 3, 4.6])
    assert verdict_on(text, "Jittered training beats fixed S")[0] == "does not hold here"
    outcome, counts = verdict_on(text, "Multi-scale testing beats single-scale")
    assert (outcome, counts[:2]) == ("holds", [4, 4])  # A, A-LRN, D, D-jit: multi-scale 1 point better
    # D+E fused 30.0 against its best member fused, D-jit: 37 - 2 = 35, D: 35 - 2 = 33
    assert verdict_on(text, "The ensemble beats single nets") == ("holds", [30.0, 33.0])
    assert "--only B,C,E,C-jit,E-jit,D-glorot,A-LRN-s1,A-LRN-s2,D-s1,D-s2,D-jit-s1,D-jit-s2" in text
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "methods.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("lrn_errors", "outcome", "lrn_mean", "p"),
    [
        # A 40, 42, 44 vs A-LRN 35, 37, 39: 5 points better, noise 2 x sqrt(4/3 + 4/3) = 3.3; Welch: t = 3.06 on
        # 4 degrees of freedom, p = 0.038 (scipy.stats.ttest_ind, equal_var=False)
        ((35.0, 37.0, 39.0), "does not hold here", 37.0, 0.038),
        # A-LRN 39, 41, 43: 1 point better, within the noise: the null claim stands; t = 0.61, p = 0.57
        ((39.0, 41.0, 43.0), "holds", 41.0, 0.57),
    ],
)
def test_lrn_verdict_uses_both_seed_means(lrn_errors, outcome, lrn_mean, p) -> None:
    runs = {n: fake_run(n, "A", e) for n, e in (("A", 40.0), ("A-s1", 42.0), ("A-s2", 44.0))}
    for name, e in zip(("A-LRN", "A-LRN-s1", "A-LRN-s2"), lrn_errors, strict=True):
        runs[name] = fake_run(name, "A-LRN", e)
    text = "\n".join(report.verdicts(runs, {}))
    # A-LRN's mean vs A's 42.0, means of 3 and 3 seeds, noise 3.3, and Welch's p beside it
    assert verdict_on(text, "LRN does not help") == (outcome, [lrn_mean, 42.0, 3, 3, 3.3, p])


def test_report_with_no_metrics_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    text = report.write_results(tmp_path / "metrics", tmp_path).read_text()
    assert verdict_on(text, "Deeper is better (A -> D/E)")[0] == "not run yet (needs A and D)"
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
    # The posteriors are kept beside the metrics (committed, so ensembles need no checkpoint).
    probs = torch.load(tmp_path / "out" / "probs" / "A.pt", weights_only=True)
    assert sorted(probs) == sorted(["labels", *run.EVALS])
    assert probs["labels"].shape == (6,) and probs["multicrop_multi"].shape == (6, 2)
    assert torch.allclose(probs["dense_multi"].sum(1), torch.ones(6), atol=1e-5)
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
    text = report.write_results(metrics, tmp_path).read_text()
    outcome, values = verdict_on(text, "Deeper is better (A -> D/E)")
    assert outcome == "not resolved at this size (leans towards it, within the noise)"
    assert values == [40.0, 39.0, 1.0, 4.4]  # A's and D's seed means, the gap and the noise
    assert "(seed means)" in line_starting(text, "- **Deeper")  # A and D alone are 40 and 39 as well


def test_ensemble_verdict_counts_each_ensemble(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for name, model, top1 in (("D", "D", 40.0), ("E", "E", 41.0), ("D-jit", "D", 36.0), ("E-jit", "E", 37.0)):
        (metrics / f"{name}.json").write_text(json.dumps(fake_run(name, model, top1)))
    for ens, members, fused in (("D+E", ["D", "E"], 35.0), ("D-jit+E-jit", ["D-jit", "E-jit"], 36.0)):
        record = {"members": members, **{k: {"top1": fused, "top5": 2.0} for k in report.METHODS}}
        (metrics / f"ensemble_{ens}.json").write_text(json.dumps(record))
    text = report.write_results(metrics, tmp_path).read_text()
    # members' fused errors are top1 - 2: D 38, E 39, D-jit 34, E-jit 35; only D+E (35 < 38) beats its best member
    assert verdict_on(text, "The ensemble beats single nets") == ("holds for 1 of 2", [35.0, 38.0, 36.0, 34.0])


def test_shrink_copies_a_folder_at_a_smaller_side_and_skips_corrupt_photos(tmp_path: Path, capsys) -> None:
    from PIL import Image

    shrink = experiment_module("imagenette", "shrink")
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


def test_full_width_grid_gets_its_own_tables_and_verdicts(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    runs = [
        ("A-w1", "A", 30.0, ""),
        ("D-w1", "D", 20.0, "A-w1"),
        ("E-w1", "E", 22.0, "A-w1"),
        ("C-w1", "C", 24.0, "A-w1"),
        ("A-LRN-w1-e32", "A-LRN", 27.0, ""),
        ("A-LRN-w1-e32-r2", "A-LRN", 29.0, ""),
    ]
    for name, model, top1, parent in runs:
        r = fake_run(name, model, top1, init_from=parent)
        r["config"]["width"] = 1
        (metrics / f"{name}.json").write_text(json.dumps(r))
    record = {"members": ["D-w1", "E-w1"], **{k: {"top1": 16.0, "top5": 1.0, "images": 1000} for k in report.METHODS}}
    (metrics / "ensemble_D-w1+E-w1.json").write_text(json.dumps(record))

    text = report.write_results(metrics, tmp_path).read_text()

    full = text.split("## Verdicts: full width (GPU)")[1].split("## Reading")[0]
    # A-w1 30 vs D-w1 20, one run each; E-w1 22
    assert verdict_on(full, "Deeper is better (A -> D/E)") == ("holds", [30.0, 20.0, 1, 1, 22.0])
    # A-LRN's two draws (27, 29) average 28: 2 points better than A-w1's one run, within the noise of their
    # spread, 2 x sqrt(2) x sqrt(1 + 1/2) = 3.5 points, so the null stands
    assert verdict_on(full, "LRN does not help") == ("holds", [28.0, 30.0, 2, 1, 3.5])
    assert verdict_on(full, "1x1 convs (C) help less than 3x3 (D)") == ("holds", [20.0, 24.0])  # D-w1 vs C-w1
    assert verdict_on(full, "Jittered training beats fixed S")[0] == "not run yet (needs D-w1 and D-jit-w1)"
    # D-w1+E-w1 fused 16 vs D-w1 fused 20 - 2 = 18: 20 of 1000 photos, with no posteriors for a paired test
    outcome = "holds, in direction only (1 of the wins not shown beyond photo noise)"
    assert verdict_on(full, "The ensemble beats single nets") == (outcome, [16.0, 18.0, 20, 1000])
    # the 1/8 grid's verdicts do not count the full-width runs
    eighth = text.split("## Verdicts: 1/8 width (CPU)")[1].split("## Verdicts: full")[0]
    assert verdict_on(eighth, "Deeper is better (A -> D/E)")[0] == "not run yet (needs A and D)"
    assert "| D-w1 | 73 | 73 | 20.0 / 5.0 | 27.0 / 8.8 |" not in text  # fake_run's Q is 37
    assert "| D-w1 | 37 | 37 | 20.0 / 5.0 | 27.0 / 8.8 |" in text  # Table 3 at full width, paper's D beside
    assert "| B-w1 | | | not run yet | |" in text
    assert "| full width (GPU) | A-LRN-w1-e32 | A-LRN-w1-e32, A-LRN-w1-e32-r2 | 28.0 ± 1.4 (n=2) |" in text
    # 2 points on 1000 photos is 20 photos; the standard error near 18% is 1.2 points, so 2 points is within 2 SE
    line = line_starting(text, "Best ensemble result: D-w1+E-w1")
    assert numbers(line) == [16.0, 20, 1000, 1.2, 18, 1000] and "within" in line
    assert "- full width (GPU): B-w1, C-jit-w1, D-jit-w1, E-jit-w1, D-w1-e32," in text
    assert "gpu_grid.sh DATA ROOT OUT" in text


def _tiny_folder(root: Path) -> Path:
    """Two classes of generated photos, enough for the driver's cache and stats."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("n01", "n02"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_whole_grid_on_a_cpu_skips_the_full_width_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    run = run_module
    monkeypatch.setattr(run.torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    (out / "metrics").mkdir(parents=True)
    for r in run.RUNS:  # every CPU run has its metrics already: nothing is left to train here
        if not r.needs_gpu:
            fake = fake_run(r.name, r.model, 40.0, jitter=r.jitter, init_from=r.init_from)
            (out / "metrics" / f"{r.name}.json").write_text(json.dumps(fake))
    data = _tiny_folder(tmp_path / "data")
    assert run.main(["--data", str(data), "--root", str(tmp_path / "runs"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    gpu = [r.name for r in run.RUNS if r.needs_gpu]
    assert gpu[:2] == ["A-LRN-w1", "A-LRN-w1-e32"] and "E-w1" in gpu
    assert f"skipped (full width, needs a GPU: see gpu_grid.sh): {', '.join(gpu)}" in printed
    assert not any((tmp_path / "runs" / n).exists() for n in gpu)  # none started
    assert (out / "RESULTS.md").is_file()


def test_prepare_only_builds_the_cache_and_stats_once(tmp_path: Path, capsys) -> None:
    data, root = _tiny_folder(tmp_path / "data"), tmp_path / "runs"
    assert run_module.main(["--prepare-only", "--data", str(data), "--root", str(root), "--out", str(tmp_path)]) == 0
    side = run_module.CACHE_SIDE
    assert {p.name for p in (root / "cache").glob("*.npy")} == {f"train-{side}.npy", f"val-{side}.npy"}
    assert (root / "stats.json").is_file() and not (tmp_path / "RESULTS.md").exists()
    assert "prepared" in capsys.readouterr().out


def test_gpu_grid_script_runs_known_runs_after_their_parents(tmp_path: Path) -> None:
    import subprocess

    script = HERE / "gpu_grid.sh"
    phases = [  # ${EXTRA_DRAWS-a b c} counts as its default, a b c
        re.sub(r"\$\{EXTRA_DRAWS-([^}]*)\}", r"\1", line).split(" in ", 1)[1].split(";", 1)[0].split()
        for line in script.read_text().splitlines()
        if line.startswith("for name in ")
    ]
    assert "A-LRN-w1-e32-s1" in phases[0]  # the default draws beside A-w1
    assert phases[0][0] == "A-w1" and len(phases) == 3
    seen: set[str] = set()
    for phase in phases:
        for name in phase:
            parent = run_module.RUNS_BY_NAME[name].init_from  # KeyError: a name run.py does not know
            assert not parent or parent in seen, f"{name} starts beside or before {parent}"
        seen |= set(phase)
    # every full-width run without committed metrics is in the script
    committed = {p.stem for p in (HERE / "metrics").glob("*.json")}
    assert {r.name for r in run_module.RUNS if r.needs_gpu} - committed <= seen
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: bash" in done.stderr


def test_best_ensemble_line_weighs_the_gap_against_the_noise() -> None:
    ens = {"X+Y": {"members": ["X", "Y"], "fusion": {"top1": 10.0, "top5": 1.0, "images": 400}}}
    # 20% vs 10% on 400 photos: 40 photos, and 10 points is beyond twice the 2.0-point standard error at 20%
    line = report._best_ensemble_line(("X", "fusion", 20.0), ("X+Y", "fusion", 10.0), ens)
    assert numbers(line) == [10.0, 40, 400, 2.0, 20, 400] and "beyond" in line
    line = report._best_ensemble_line(("X", "fusion", 9.0), ("X+Y", "fusion", 10.0), ens)
    assert numbers(line) == [10.0] and "not below" in line  # no gap to weigh
    assert report._best_ensemble_line(None, None, ens) == ""


def test_best_ensemble_line_pairs_the_photos_when_posteriors_are_kept(tmp_path: Path) -> None:
    labels = torch.ones(6, dtype=torch.long)  # two classes, every photo of class 1

    def posterior(p_right: list[float]) -> torch.Tensor:
        p = torch.tensor(p_right)
        return torch.stack([1 - p, p], 1)

    # averaged, X and Y give class 1 [.85, .6, .45, .425, .45, .65]: right on photos 0, 1 and 5;
    # Z is right on photos 0 and 3: the ensemble alone is right on 1 and 5, Z alone on 3
    nets = {
        "X": [0.9, 0.9, 0.2, 0.4, 0.8, 0.6],
        "Y": [0.8, 0.3, 0.7, 0.45, 0.1, 0.7],
        "Z": [0.9, 0.1, 0.4, 0.7, 0.2, 0.3],
    }
    for name, p_right in nets.items():
        p = posterior(p_right)
        record = {"labels": labels, "dense_single": p, "dense_multi": p, "multicrop_multi": p}
        torch.save(record, tmp_path / f"{name}.pt")
    assert report.paired_counts(tmp_path, ["X", "Y"], "fusion", "Z", "dense_single") == (2, 1)
    assert report.paired_counts(tmp_path, ["X", "Y"], "dense_multi", "X", "multicrop_multi") == (0, 1)  # photo 4
    assert report.paired_counts(tmp_path, ["X", "missing"], "fusion", "Z", "dense_single") is None

    ens = {"X+Y": {"members": ["X", "Y"], "fusion": {"top1": 50.0, "top5": 0.0, "images": 6}}}
    line = report._best_ensemble_line(("Z", "dense_single", 66.7), ("X+Y", "fusion", 50.0), ens, tmp_path)
    # 50.0%, 1 of 6 photos better; the ensemble alone right on 2, Z alone on 1: p = 1.00, not significant
    assert numbers(line) == [50.0, 1, 6, 2, 1, 1.0] and "not significant" in line
