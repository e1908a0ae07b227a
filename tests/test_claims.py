"""The claims experiment: its decision rule on built posteriors, its report, and its data split."""

import json
from pathlib import Path

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
    assert (o.b, o.c) == (20 + 19 + 21, 0) and o.seeds == [0, 1, 2]
    assert o.gain == pytest.approx(20.0) and o.se == pytest.approx(((1 + 4) / 3) ** 0.5)
    assert o.p == pytest.approx(2 * 0.5**60) and o.verdict == "holds"
    text = report.write_results(metrics, probs, tmp_path).read_text()
    assert "## Claim: small kernels" in text and "**Verdict: holds.**" in text
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


def test_a_significant_loss_is_reversed():
    o = report.Outcome(report.Comparison("D", "D-gap"), [0, 1, 2], (40.0, 0.5), (30.0, 0.5), b=5, c=300, p=1e-60)
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
    assert len(run.RUNS) == len(run.ARMS) * len(run.SEEDS) + len(run.MORE_ARMS) * len(run.MORE_SEEDS) == 31
    assert run.RUNS[21:26] == ["A-s3", "B-s3", "B-5x5-s3", "D-s3", "D-7x7-s3"]


def outcome(cmp, seeds, gain, sd=0.5, b=300, c=100, p=1e-20):
    return report.Outcome(cmp, list(range(seeds)), (30.0, sd), (30.0 + gain, sd), b, c, p)


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
