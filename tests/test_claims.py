"""The claims experiment: its decision rule on built posteriors, its report, and its data split."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import experiment_module

report = experiment_module("claims", "report")
run = experiment_module("claims", "run")


def record(arm: str, seed: int, top1: float, arch: str, head: str = "fc") -> dict:
    return {
        "name": f"{arm}-s{seed}",
        "arm": arm,
        "seed": seed,
        "net": {"arch": arch, "head": head},
        "test": {"top1": top1, "top5": 1.0, "images": 100, "q": 73},
        "cost": {
            "trained": {"params": 1000 if arm != "B-5x5" else 1200, "macs": 5000},
            "full": {"params": 1_000_000, "macs": 9_000_000},
        },
    }


def write(tmp_path: Path, records: list[dict], right: dict[str, list[bool]]) -> tuple[Path, Path]:
    """metrics/<run>.json and probs/<run>.pt whose argmax is right on exactly the photos marked True."""
    metrics, probs = tmp_path / "metrics", tmp_path / "probs"
    metrics.mkdir()
    probs.mkdir()
    labels = torch.zeros(100, dtype=torch.long)
    for r in records:
        (metrics / f"{r['name']}.json").write_text(json.dumps(r))
        p = torch.zeros(100, 2)
        p[:, 0] = torch.tensor(right[r["name"]], dtype=torch.float32)
        p[:, 1] = 1 - p[:, 0]
        torch.save({"labels": labels, "dense": p}, probs / f"{r['name']}.pt")
    return metrics, probs


def correct_on(n: int) -> list[bool]:
    return [i < n for i in range(100)]


def test_a_clear_gain_holds_and_the_numbers_are_exact(tmp_path):
    # B right on 80, 81, 79 photos (errors 20, 19, 21); B-5x5 right on 60, 62, 58 (40, 38, 42): 20 points apart.
    recs, right = [], {}
    for s, (b, w) in enumerate(((80, 60), (81, 62), (79, 58))):
        recs += [record("B", s, 100 - b, "B_bn"), record("B-5x5", s, 100 - w, "B-5x5_bn")]
        right[f"B-s{s}"], right[f"B-5x5-s{s}"] = correct_on(b), correct_on(w)
    metrics, probs = write(tmp_path, recs, right)
    o = report.compare(report.Comparison("B", "B-5x5"), report.by_arm(report.load(metrics)), probs)
    assert (o.b, o.c) == (20 + 19 + 21, 0) and o.seeds == 3 and o.pairs == 3
    assert o.gain == pytest.approx(20.0) and o.se == pytest.approx(((1 + 4) / 3) ** 0.5)
    assert o.p == pytest.approx(2 * 0.5**60) and o.verdict == "holds"
    text = report.write_results(metrics, probs, tmp_path).read_text()
    assert "## Claim: small kernels" in text
    assert "**Verdict: holds (from the comparisons with all their seeds; still short of seeds: D vs D-7x7).**" in text
    assert "Not run yet: D vs D-7x7." in text and (tmp_path / "claims.png").is_file()


def test_a_gain_within_the_seed_noise_is_not_decided(tmp_path):
    # Means 30 and 31, seeds spread 28-32: the difference is below two standard errors whatever the photos say.
    recs, right = [], {}
    for s, (d, a) in enumerate(((72, 71), (68, 70), (70, 66))):
        recs += [record("D", s, 100 - d, "D_bn"), record("A", s, 100 - a, "A_bn")]
        right[f"D-s{s}"], right[f"A-s{s}"] = correct_on(d), correct_on(a)
    metrics, probs = write(tmp_path, recs, right)
    o = report.compare(report.Comparison("D", "A"), report.by_arm(report.load(metrics)), probs)
    assert o.gain == pytest.approx(1.0) and o.verdict == "not decided at this scale"


def errors(mean: float, sd: float, n: int) -> list[float]:
    """n per-seed errors with this mean and sample sd (n = 1, 2 or 3)."""
    return {1: [mean], 2: [mean - sd / 2**0.5, mean + sd / 2**0.5], 3: [mean - sd, mean, mean + sd]}[n]


def test_a_significant_loss_is_reversed():
    o = report.Outcome(report.Comparison("D", "D-gap"), errors(40.0, 0.5, 3), errors(30.0, 0.5, 3), 5, 300, 1e-60)
    assert o.gain == -10.0 and o.verdict == "reversed"
    assert report.claim_verdict([o]) == "does not hold here" and report.claim_verdict([]) == "not run yet"


def test_holdout_is_a_fixed_tenth_of_each_class():
    class Fake(torch.utils.data.Dataset):
        classes = ["a", "b"]
        samples = [(f"{i}.jpg", 0 if i < 30 else 1) for i in range(80)]

        def __len__(self):
            return 80

        def __getitem__(self, i):
            return None, self.samples[i][1]

    kept, held = run.holdout_split(Fake())
    labels = [y for _, y in held.samples]
    assert (labels.count(0), labels.count(1)) == (3, 5) and len(kept) == 72
    assert not set(kept.indices) & set(held.indices)
    assert run.holdout_split(Fake())[1].indices == held.indices  # the same photos every time
    assert kept.classes == held.classes == ["a", "b"]


def test_runs_are_named_by_arm_and_seed_and_share_one_recipe(tmp_path):
    assert run.arm_of("B-5x5-s2") == ("B-5x5", 2) and run.arm_of("D-gap-s0") == ("D-gap", 0)
    cfg = run.config("D-gap-s1", tmp_path, tmp_path / "stats.json")
    assert (cfg.arch, cfg.head, cfg.seed, cfg.width, cfg.epochs) == ("D_bn", "gap", 1, run.RECIPE["width"], 16)
    assert {run.arm_of(r)[0] for r in run.RUNS} == set(run.ARMS) and len(set(run.RUNS)) == len(run.RUNS)
    assert len(run.RUNS) == len(run.ARMS) * len(run.SEEDS) + len(run.MORE_ARMS) * len(run.MORE_SEEDS) == 37
    assert run.RUNS[21:26] == ["A-s3", "B-s3", "B-5x5-s3", "D-s3", "D-7x7-s3"]
    assert run.RUNS[31:] == ["A-again-s0", "E-initA-s0", "A-again-s1", "E-initA-s1", "A-again-s2", "E-initA-s2"]
    assert run.source_of("E-initA-s2") == "A-again-s2" and run.source_of("A-again-s2") is None
    assert run.with_sources(["D-s0", "E-initA-s1"]) == ["D-s0", "A-again-s1", "E-initA-s1"]
    assert run.with_sources(["A-again-s1", "E-initA-s1"]) == ["A-again-s1", "E-initA-s1"]
    initial = run.config("E-initA-s1", tmp_path, tmp_path / "stats.json")
    assert (initial.arch, initial.init_from, initial.epochs) == ("E_bn", str(tmp_path / "A-again-s1"), 16)
    assert initial.backbone_lr_scale == 1.0 and initial.init == "kaiming"  # the rest of E's recipe, every layer
    assert run.config("E-s1", tmp_path, tmp_path / "stats.json").init_from == ""


def tiny_photos(n: int, seed: int) -> object:
    """n random 36x36 photos of two classes, as the decoded cache holds them."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 36, 36, 3), dtype=np.uint8)
    labels = [i % 2 for i in range(n)]
    return run.imagenette.CachedImages(pixels, labels, ["a", "b"], [f"{i}.jpg" for i in range(n)])


def test_e_inita_starts_from_exactly_the_same_seeds_a(tmp_path, monkeypatch):
    from vggnet.data import compute_stats
    from vggnet.train import Dist, build_run
    from vggnet.train.initialize import NET_A_LAYERS, paper_names
    from vggnet.weights import load_weights

    tiny = {"width": 1 / 16, "crop": 32, "scale": [36], "batch": 8, "epochs": 1, "threads": 0, "workers": 0}
    for key, value in tiny.items():
        monkeypatch.setitem(run.RECIPE, key, value)
    parts = run.holdout_split(tiny_photos(40, 0))
    compute_stats(parts[0], 40, 0).save(tmp_path / "stats.json")
    with pytest.raises(FileNotFoundError, match="A-again-s1: E-initA-s1 starts from this run, which has not finished"):
        run.train_run("E-initA-s1", tmp_path, tmp_path / "stats.json", parts)
    run.train_run("A-again-s1", tmp_path, tmp_path / "stats.json", parts)  # one epoch: A's weights have moved
    a, _ = load_weights(tmp_path / "A-again-s1" / "model.safetensors")

    cfg = run.config("E-initA-s1", tmp_path, tmp_path / "stats.json")
    e = build_run(cfg, Dist(), parts).model  # what train() would train, before its first step
    a_names, e_names = paper_names(a), paper_names(e)
    theirs, mine = a.state_dict(), e.state_dict()
    copied = [*NET_A_LAYERS[:4], *(n.replace("conv", "bn") for n in NET_A_LAYERS[:4]), *NET_A_LAYERS[4:]]
    for layer in copied:
        keys = [k for k in mine if k.startswith(e_names[layer] + ".")]
        assert keys, layer
        for key in keys:
            source = a_names[layer] + key[len(e_names[layer]) :]
            assert torch.equal(mine[key], theirs[source].reshape(mine[key].shape)), key
    # Every other layer is as E from scratch draws it with the same seed (Kaiming); the copied ones are not.
    scratch = build_run(run.config("E-s1", tmp_path, tmp_path / "stats.json"), Dist(), parts).model.state_dict()
    from_a = {k for layer in copied for k in mine if k.startswith(e_names[layer] + ".")}
    assert all(torch.equal(mine[k], scratch[k]) for k in mine if k not in from_a)
    assert not any(torch.equal(mine[k], scratch[k]) for k in from_a if k.endswith("weight") and "classifier" in k)
    start = run.start_record(tmp_path / "E-initA-s1")
    assert start["from"] == "A-again-s1" and len(start["sha256"]) == 64
    assert start["new_layers"] == [n for n in e_names if n.startswith(("conv", "fc")) and n not in NET_A_LAYERS]


def outcome(cmp, seeds, gain, sd=0.5, b=300, c=100, p=1e-20):
    return report.Outcome(cmp, errors(30.0, sd, seeds), errors(30.0 + gain, sd, seeds), b, c, p, seeds)


def test_no_verdict_on_fewer_than_three_seeds():
    o = outcome(report.Comparison("B", "B-5x5"), 2, gain=8.0)
    assert o.verdict == "not decided yet (2 of 3 seeds)"
    assert report.claim_verdict([o]) == "not decided yet (seeds still training)"


def test_a_comparison_short_of_seeds_waits_without_blocking_the_others():
    full = outcome(report.Comparison("D", "B"), 3, gain=8.0)  # se 0.41, b > c, p tiny: holds
    short = outcome(report.Comparison("E", "D"), 1, gain=-20.0, b=10, c=900)  # one seed, however bad
    assert full.verdict == "holds" and short.verdict == "not decided yet (1 of 3 seeds)"
    assert report.claim_verdict([full, short]) == (
        "holds (from the comparisons with all their seeds; still short of seeds: E vs D)"
    )
    assert report.claim_verdict([full], ["D ≈ E-initA"]) == (
        "holds (from the comparisons with all their seeds; still short of seeds: D ≈ E-initA)"
    )
    reversed_ = outcome(report.Comparison("B", "A"), 3, gain=-8.0, b=100, c=300)
    assert report.claim_verdict([full, reversed_, short]).startswith("does not hold here (from the comparisons")


def test_little_loss_claims_use_the_margin():
    cmp = report.Comparison("D", "D-gap", margin=2.0)
    # the gap head 0.5 points worse, se = sqrt((0.5^2 + 0.5^2) / 3) = 0.41: 0.5 + 0.82 < 2
    assert outcome(cmp, 3, gain=0.5).verdict == "holds"
    assert outcome(cmp, 3, gain=-1.0).verdict == "holds"  # the gap head better: no loss at all
    assert outcome(cmp, 3, gain=1.5).verdict == "not decided at this scale"  # 1.5 + 0.82 > 2 > 1.5 - 0.82
    assert outcome(cmp, 3, gain=4.0).verdict == "does not hold"  # 4 - 0.82 > 2, and the photos agree
    assert "D-gap loses 4.0 points (the claim allows less than 2)" in report.outcome_line(outcome(cmp, 3, gain=4.0))
    assert "E higher by 5.5 points" in report.outcome_line(outcome(report.Comparison("E", "D"), 3, gain=-5.5))
    lower = report.outcome_line(outcome(cmp, 3, gain=-0.8))
    assert "D-gap loses nothing: it is 0.8 points lower (the claim allows a loss under 2)" in lower


def test_about_equal_needs_the_whole_interval_inside_the_margin():
    cmp = report.Comparison("D", "E-initA", margin=2.0, equivalent=True)
    assert cmp.label == "D ≈ E-initA"
    # se = 0.41: 0.5 +- 0.82 inside (-2, 2); -1.0 +- 0.82 too (E better by a little is "about equal" as well)
    assert outcome(cmp, 3, gain=0.5).verdict == "holds" and outcome(cmp, 3, gain=-1.0).verdict == "holds"
    assert outcome(cmp, 3, gain=1.5).verdict == "not decided at this scale"  # 1.5 + 0.82 > 2
    assert outcome(cmp, 3, gain=4.0, b=300, c=100).verdict == "does not hold"  # E worse, D right more often
    assert outcome(cmp, 3, gain=4.0, b=100, c=300).verdict == "not decided at this scale"  # the photos disagree
    assert outcome(cmp, 3, gain=-4.0, b=100, c=300).verdict == "does not hold"  # E far better: not equal either
    line = report.outcome_line(outcome(cmp, 3, gain=0.5))
    assert "E-initA higher by 0.5 points, interval -0.3 to +1.3 (the claim needs it inside ±2)" in line


def test_arms_with_more_seeds_use_them_all_and_pair_the_common_ones(tmp_path):
    # D on five seeds, E-initA on three: the means and sds use every seed, the sign test the three pairs.
    recs, right = [], {}
    for s, d in enumerate((72, 70, 74, 73, 71)):
        recs.append(record("D", s, 100 - d, "D_bn"))
        right[f"D-s{s}"] = correct_on(d)
    for s, e in enumerate((71, 72, 70)):
        recs.append(record("E-initA", s, 100 - e, "E_bn"))
        right[f"E-initA-s{s}"] = correct_on(e)
    metrics, probs = write(tmp_path, recs, right)
    o = report.compare(report.Comparison("D", "E-initA", 2.0, True), report.by_arm(report.load(metrics)), probs)
    assert (len(o.better_errors), len(o.worse_errors), o.pairs, o.seeds) == (5, 3, 3, 3)
    assert (o.b, o.c) == (1 + 0 + 4, 0 + 2 + 0)  # D right on 72, 70, 74 against 71, 72, 70
    assert o.gain == pytest.approx(29.0 - 28.0) and o.se == pytest.approx((2.5 / 5 + 1.0 / 3) ** 0.5)
    assert o.boot is not None and o.boot.draws == report.BOOT_DRAWS and o.boot.low <= o.gain <= o.boot.high
    line = report.outcome_line(o)
    assert "(5 and 3 seeds)" in line and "on the same photos (the 3 seeds both have)" in line
    assert "Welch's t-test over seeds: p = " in line and "inside ±2 (two one-sided tests): p = " in line


def test_undecided_comparisons_say_how_many_seeds_would_decide_them():
    o = outcome(report.Comparison("B", "A"), 3, gain=1.0, sd=2.0)  # se 1.63 > gain / 2
    assert o.verdict == "not decided at this scale" and o.seeds_needed == 32  # 4 (4 + 4) / 1
    assert "about 32 seeds per arm would put it beyond 2 standard errors" in report.outcome_line(o)
    margin = outcome(report.Comparison("D", "D-gap", margin=2.0), 3, gain=1.0, sd=2.0)
    assert margin.distance == 1.0 and margin.seeds_needed == 32  # the gap to the margin, not to 0
    assert "seeds per arm" not in report.outcome_line(outcome(report.Comparison("B", "A"), 3, gain=8.0))


def test_a_comparison_left_out_of_the_verdict_is_shown_and_says_why(tmp_path):
    # D far better than E (trained from scratch) and nothing else: the depth claim waits for its comparisons.
    recs, right = [], {}
    for s in range(3):
        recs += [record("D", s, 20.0 + s, "D_bn"), record("E", s, 40.0 + s, "E_bn")]
        right[f"D-s{s}"], right[f"E-s{s}"] = correct_on(80 - s), correct_on(60 - s)
    metrics, probs = write(tmp_path, recs, right)
    text = report.write_results(metrics, probs, tmp_path).read_text()
    depth = text.split("## Claim: depth")[1].split("## Claim:")[0]
    assert "**Verdict: not run yet.**" in depth and "Not run yet: B vs A, D vs B, D vs A, D ≈ E-initA." in depth
    assert "- (E trained from scratch, reported beside the claim and not counted in its verdict" in depth
    assert "-> **does not hold**." in depth
    assert "the pooled sign test counts each photo once per seed pair" in text  # photo noise only, in words
