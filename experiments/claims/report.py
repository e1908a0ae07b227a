"""RESULTS.md and claims.png of the claims experiment, from the committed metrics/ and probs/ alone.

Each comparison is decided by a rule stated in the file before any number (DESIGN.md), over at least three
seeds per arm. "Better" claims: the claimed-better arm must have the lower mean top-1 error over seeds by more
than twice the standard error of that difference (training noise), and the same-photo sign test, pooled over
seeds, must give p < 0.05 (test-set noise); the reverse of both is "reversed". "Little loss" claims: the
candidate's mean error may exceed the reference's by less than MARGIN points, counting twice the standard error.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vggnet.configs import weight_layers
from vggnet.metrics import discordant, sign_test
from vggnet.tables import markdown_table, short

Records = dict[str, dict[str, Any]]  # run name -> metrics/<run>.json


@dataclass(frozen=True)
class Comparison:
    """One comparison of a claim: `better` is the arm the claim says has the lower error.

    With `margin`, the claim is only that `worse` loses little: its error may exceed `better`'s by < margin points.
    """

    better: str
    worse: str
    margin: float | None = None


# The claims and the comparisons that decide them, in the words of the study note.
CLAIMS: dict[str, tuple[str, list[Comparison]]] = {
    "small kernels": (
        "a stack of 3x3 convolutions beats one large kernel with the same receptive field (section 4.1: B against "
        "B-5x5, each pair of 3x3 convolutions as one 5x5; D against D-7x7, each triple as one 7x7)",
        [Comparison("B", "B-5x5"), Comparison("D", "D-7x7")],
    ),
    "depth": (
        "deeper is better (Table 3: A, 11 weight layers; B, 13; D, 16; E, 19)",
        [Comparison("B", "A"), Comparison("D", "B"), Comparison("D", "A"), Comparison("E", "D")],
    ),
    "fc head": (
        "the FC layers, which hold most of the parameters, can be removed with little loss (D with its three FC "
        "layers against D with global average pooling and one linear layer, the same convolutional stack)",
        [Comparison("D", "D-gap", margin=2.0)],
    ),
}
# What the paper itself measured for each claim (ImageNet, full width, no batch norm), printed beside the verdict.
PAPER: dict[str, str] = {
    "small kernels": "In the paper (section 4.1), the shallow B with each pair of 3x3 convolutions as one 5x5 had a "
    "top-1 error (centre crop) 7% higher than B's; no 7x7 variant was trained there.",
    "depth": "In the paper's Table 3, at a fixed training scale S = 256 (this recipe's S scaled), top-1 errors were "
    "A 29.6%, B 28.7%, D 27.0%, E 27.3%: the gain stopped at D, and E was within 0.3 points of D in every row.",
    "fc head": "The paper kept its three FC layers; the gap head is the later practice (network in network, "
    "GoogLeNet, ResNet), and torchvision's VGG16 has 89% of its parameters in FC6-FC8.",
}
RULE_SE, RULE_P, MIN_SEEDS = 2.0, 0.05, 3


def load(metrics_dir: Path) -> Records:
    """Every run's metrics, by name."""
    if not metrics_dir.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(metrics_dir.glob("*.json"))}


ORDER = ("A", "B", "B-5x5", "D", "D-7x7", "D-gap", "E")  # the arms as the tables list them


def by_arm(runs: Records) -> dict[str, dict[int, dict[str, Any]]]:
    """arm -> seed -> record, arms in ORDER (others after them), seeds ascending."""
    arms: dict[str, dict[int, dict[str, Any]]] = {}
    for r in sorted(runs.values(), key=lambda r: r["seed"]):
        arms.setdefault(r["arm"], {})[r["seed"]] = r
    rank = {a: i for i, a in enumerate(ORDER)}
    return dict(sorted(arms.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def correct(probs_dir: Path, run: str) -> torch.Tensor | None:
    """Which test photos a run gets right (top-1), from its kept posteriors; None without them."""
    path = probs_dir / f"{run}.pt"
    if not path.is_file():
        return None
    kept = torch.load(path, weights_only=True)
    return kept["dense"].argmax(1) == kept["labels"]


@dataclass
class Outcome:
    """What one comparison measured, and its verdict under the rule."""

    comparison: Comparison
    seeds: list[int]
    better: tuple[float, float]  # mean, sd of the claimed-better arm's top-1 error
    worse: tuple[float, float]
    b: int  # photos right by the claimed-better arm and wrong by the other, summed over seed pairs
    c: int
    p: float

    @property
    def gain(self) -> float:
        """How much lower the claimed-better arm's mean error is (points; negative: higher)."""
        return self.worse[0] - self.better[0]

    @property
    def se(self) -> float:
        """Standard error of the difference of the two seed means."""
        n = len(self.seeds)
        return math.sqrt((self.better[1] ** 2 + self.worse[1] ** 2) / n) if n else math.inf

    @property
    def verdict(self) -> str:
        if len(self.seeds) < MIN_SEEDS:
            return f"not decided yet ({len(self.seeds)} of {MIN_SEEDS} seeds)"
        margin, noise = self.comparison.margin, RULE_SE * self.se
        if margin is not None:  # little loss: the candidate's loss, noise included, stays under the margin
            if self.gain + noise < margin:  # gain: how much higher the candidate's error is
                return "holds"
            if self.gain - noise > margin and self.b > self.c and self.p < RULE_P:
                return "does not hold"
            return "not decided at this scale"
        if self.gain > noise and self.b > self.c and self.p < RULE_P:
            return "holds"
        if -self.gain > noise and self.c > self.b and self.p < RULE_P:
            return "reversed"
        return "not decided at this scale"


def compare(cmp: Comparison, arms: dict[str, dict[int, dict[str, Any]]], probs_dir: Path) -> Outcome | None:
    """The comparison over the seeds both arms have; None until both have one."""
    seeds = sorted(set(arms.get(cmp.better, {})) & set(arms.get(cmp.worse, {})))
    if not seeds:
        return None
    errors = {arm: [arms[arm][s]["test"]["top1"] for s in seeds] for arm in (cmp.better, cmp.worse)}
    b = c = 0
    for s in seeds:
        right = [correct(probs_dir, arms[arm][s]["name"]) for arm in (cmp.better, cmp.worse)]
        if right[0] is not None and right[1] is not None:
            bs, cs = discordant(right[0], right[1])
            b, c = b + bs, c + cs
    return Outcome(cmp, seeds, mean_sd(errors[cmp.better]), mean_sd(errors[cmp.worse]), b, c, sign_test(b, c))


def arm_table(arms: dict[str, dict[int, dict[str, Any]]]) -> str:
    """One row per arm: what it is, its size and cost, and its test error per seed and over seeds."""
    rows = []
    for arm, seeds in arms.items():
        first = next(iter(seeds.values()))
        trained, full = first["cost"]["trained"], first["cost"]["full"]
        top1 = [seeds[s]["test"]["top1"] for s in sorted(seeds)]
        m, sd = mean_sd(top1)
        letter = first["net"]["arch"].removesuffix("_bn")
        rows.append(
            [
                arm,
                f"{letter} + BN, {first['net']['head']} head",
                weight_layers(letter) - (2 if first["net"]["head"] == "gap" else 0),
                f"{trained['params']:,}",
                short(trained["macs"]),
                f"{full['params'] / 1e6:.1f} M",
                f"{full['macs'] / 1e9:.2f} G",
                " / ".join(f"{v:.1f}" for v in top1),
                f"{m:.1f} ± {sd:.1f}",
                f"{statistics.fmean(seeds[s]['test']['top5'] for s in seeds):.1f}",
            ]
        )
    header = [
        "arm", "network", "weight layers", "params (trained)", "MACs (trained, 64 px)", "params (full, 224)",
        "MACs (full, 224)", "top-1 err per seed (%)", "top-1 err mean ± sd", "top-5 err mean",
    ]  # fmt: skip
    return markdown_table(header, rows, "llrrrrrlrr")


def outcome_line(o: Outcome) -> str:
    """One comparison in words, with every number the verdict rests on."""
    cmp = o.comparison
    seeds = f"{len(o.seeds)} seed{'s' if len(o.seeds) != 1 else ''}"
    if cmp.margin is None:
        gain = f"{cmp.better} {'lower' if o.gain >= 0 else 'higher'} by {abs(o.gain):.1f} points"
    elif o.gain >= 0:
        gain = f"{cmp.worse} loses {o.gain:.1f} points (the claim allows less than {cmp.margin:g})"
    else:
        gain = f"{cmp.worse} loses nothing: it is {-o.gain:.1f} points lower (the claim allows a loss under {cmp.margin:g})"
    return (
        f"{cmp.better} {o.better[0]:.1f} ± {o.better[1]:.1f}% against {cmp.worse} {o.worse[0]:.1f} ± {o.worse[1]:.1f}% "
        f"({seeds}): {gain}, standard error {o.se:.1f}; on the same photos {cmp.better} alone is right on "
        f"{o.b:,}, {cmp.worse} alone on {o.c:,}, sign test p = {o.p:.2g} -> **{o.verdict}**"
    )


def claim_verdict(outcomes: list[Outcome]) -> str:
    """A claim holds when every comparison with all its seeds holds; it fails when one is reversed or does
    not hold. Comparisons still short of seeds are named and wait: they count once their seeds are in."""
    if not outcomes:
        return "not run yet"
    done = [o for o in outcomes if len(o.seeds) >= MIN_SEEDS]
    waiting = [f"{o.comparison.better} vs {o.comparison.worse}" for o in outcomes if o not in done]
    if not done:
        return "not decided yet (seeds still training)"
    verdicts = [o.verdict for o in done]
    if any(v in ("reversed", "does not hold") for v in verdicts):
        verdict = "does not hold here"
    elif all(v == "holds" for v in verdicts):
        verdict = "holds"
    else:
        verdict = "not decided at this scale"
    if waiting:
        verdict += f" (from the comparisons with all their seeds; still short of seeds: {', '.join(waiting)})"
    return verdict


def cost_lines(outcomes: list[Outcome], arms: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """Each gain read against what it costs: parameters and MACs of both arms at the trained and full size."""
    rows = []
    for o in outcomes:
        a, b = (next(iter(arms[x].values()))["cost"] for x in (o.comparison.better, o.comparison.worse))
        rows.append(
            [
                f"{o.comparison.better} vs {o.comparison.worse}",
                f"{o.gain:+.1f}",
                f"{a['trained']['params'] / b['trained']['params']:.2f}x",
                f"{a['trained']['macs'] / b['trained']['macs']:.2f}x",
                f"{a['full']['params'] / b['full']['params']:.2f}x",
                f"{a['full']['macs'] / b['full']['macs']:.2f}x",
            ]
        )
    header = ["comparison", "error gain (points)", "params ratio (trained)", "MACs ratio (trained)",
              "params ratio (full)", "MACs ratio (full)"]  # fmt: skip
    return [markdown_table(header, rows, "lrrrrr")] if rows else []


def plot(arms: dict[str, dict[int, dict[str, Any]]], path: Path) -> None:
    """Top-1 error against parameters and against MACs (trained size), every seed a dot, the mean a marker."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from vggnet.tables import short

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "macs", "multiply-accumulates per image")):
        for i, (arm, seeds) in enumerate(arms.items()):
            cost = next(iter(seeds.values()))["cost"]["trained"][key]
            errors = [r["test"]["top1"] for r in seeds.values()]
            colour = f"C{i}"
            ax.scatter([cost] * len(errors), errors, s=12, color=colour, alpha=0.5)
            ax.scatter([cost], [statistics.fmean(errors)], s=60, color=colour, marker="D", label=arm)
            ax.annotate(arm, (cost, statistics.fmean(errors)), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))  # the arms span less than a decade
        ax.set_xlabel(f"{label} (width 1/8, 64-px input)")
        ax.set_ylabel("top-1 error on 3,925 photos (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Imagenette, every arm with batch norm, same recipe and epochs; dots: seeds, diamonds: means")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})


def results_markdown(runs: Records, probs_dir: Path) -> str:
    """The whole RESULTS.md."""
    arms = by_arm(runs)
    parts = [
        "# VGG's best-known claims on real photos",
        "Generated by `experiments/claims/run.py` (`--report-only` rebuilds it from `metrics/` and `probs/`). "
        "Setup, the decision rule and why: [DESIGN.md](DESIGN.md).",
        f"Rule: a comparison **holds** when the claimed-better arm's mean top-1 error over seeds is lower by more "
        f"than {RULE_SE:g} standard errors of the difference **and** the sign test on the same photos, pooled over "
        f"seed pairs, gives p < {RULE_P:g}; **reversed** when both say the opposite; otherwise **not decided at "
        f"this scale**. For the FC layers the claim is *little loss*: it holds when the gap head's extra error, "
        f"plus {RULE_SE:g} standard errors, stays under the margin fixed beforehand. No verdict on fewer than "
        f"{MIN_SEEDS} seeds per arm. A claim holds when each of its comparisons with all their seeds holds; a "
        "comparison still short of seeds is named beside the verdict and counts once its seeds are in.",
        "## Arms",
        arm_table(arms) if arms else "No run has finished yet.",
        "![top-1 error against parameters and MACs](claims.png)" if arms else "",
    ]
    for name, (words, comparisons) in CLAIMS.items():
        outcomes = [o for cmp in comparisons if (o := compare(cmp, arms, probs_dir)) is not None]
        waiting = [f"{c.better} vs {c.worse}" for c in comparisons if compare(c, arms, probs_dir) is None]
        parts += [f"## Claim: {name}", f"*{words}*", f"**Verdict: {claim_verdict(outcomes)}.**", PAPER[name]]
        if outcomes:
            parts.append("\n".join(f"- {outcome_line(o)}" for o in outcomes))
        if waiting:
            parts.append(f"Not run yet: {', '.join(waiting)}.")
        parts += cost_lines(outcomes, arms)
    return "\n\n".join(p for p in parts if p) + "\n"


def write_results(metrics_dir: Path, probs_dir: Path, out_dir: Path) -> Path:
    """RESULTS.md and claims.png in out_dir; returns the Markdown path."""
    runs = load(metrics_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if runs:
        plot(by_arm(runs), out_dir / "claims.png")
    path = out_dir / "RESULTS.md"
    path.write_text(results_markdown(runs, probs_dir))
    return path
