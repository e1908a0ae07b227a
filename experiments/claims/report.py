"""RESULTS.md and claims.png of the claims experiment, from the committed metrics/ and probs/ alone.

Each comparison is decided by a rule written in DESIGN.md before the runs it judges, over at least three seeds
per arm. "Better" claims: the claimed-better arm must have the lower mean top-1 error over seeds by more than
twice the standard error of that difference (training noise), and the same-photo sign test, pooled over seed
pairs, must give p < 0.05 (test-set noise); the reverse of both is "reversed". "Little loss" claims: the
candidate's mean error may exceed the reference's by less than a margin, counting twice the standard error.
"About equal" claims (D and E): the difference, plus and minus twice its standard error, must lie inside the
margin. Beside each verdict, not deciding it: Welch's t-test over seeds and a two-level bootstrap (seeds, then
photos), which count seed noise as well as photo noise.
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
from vggnet.metrics import bootstrap_difference, discordant, interval, seeds_needed, sign_test, welch
from vggnet.tables import markdown_table, short

Records = dict[str, dict[str, Any]]  # run name -> metrics/<run>.json


@dataclass(frozen=True)
class Comparison:
    """One comparison of a claim: `better` is the arm the claim says has the lower error (or the reference).

    With `margin`, the claim is only that `worse` loses little: its error may exceed `better`'s by < margin points;
    with `equivalent` too, that the two are about equal: the difference lies within (-margin, +margin).
    `counts`: False for a comparison reported beside a claim but left out of its verdict (DESIGN.md says why).
    """

    better: str
    worse: str
    margin: float | None = None
    equivalent: bool = False
    counts: bool = True

    @property
    def label(self) -> str:
        """ "B vs A", or "D ≈ E" for an equivalence."""
        return f"{self.better} {'≈' if self.equivalent else 'vs'} {self.worse}"


# The claims and the comparisons that decide them, in the words of the study note.
CLAIMS: dict[str, tuple[str, list[Comparison]]] = {
    "small kernels": (
        "a stack of 3x3 convolutions beats one large kernel with the same receptive field (section 4.1: B against "
        "B-5x5, each pair of 3x3 convolutions as one 5x5; D against D-7x7, each triple as one 7x7)",
        [Comparison("B", "B-5x5"), Comparison("D", "D-7x7")],
    ),
    "depth": (
        "deeper is better up to 16 layers, and 19 layers are about as good as 16 (Table 3: A < B < D ≈ E in error; "
        "A, 11 weight layers; B, 13; D, 16; E, 19, started from A's layers as in section 3.1)",
        [
            Comparison("B", "A"),
            Comparison("D", "B"),
            Comparison("D", "A"),
            Comparison("D", "E-initA", margin=2.0, equivalent=True),
            Comparison("D", "E", margin=2.0, equivalent=True, counts=False),
        ],
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
    "A 29.6%, B 28.7%, D 27.0%, E 27.3%: the gain stopped at D, and E was within 0.3 points of D in every row. "
    "The paper trained B to E starting from net A's first four conv layers and three FC layers (section 3.1).",
    "fc head": "The paper kept its three FC layers; the gap head is the later practice (network in network, "
    "GoogLeNet, ResNet), and torchvision's VGG16 has 89% of its parameters in FC6-FC8.",
}
# Why a comparison is shown beside its claim but left out of the verdict (DESIGN.md, 2026-12-07).
NOT_COUNTED: dict[str, str] = {
    "D ≈ E": "E trained from scratch, reported beside the claim and not counted in its verdict: its margin was fixed "
    "after its errors were seen (DESIGN.md, 2026-12-07); the claim's E is E-initA, trained as the paper trained E",
}
RULE_SE, RULE_P, MIN_SEEDS = 2.0, 0.05, 3
AGAIN = (
    "A-again: A trained again with the same recipe and seeds on a later day, as E-initA's source (the first A "
    "runs kept no weights); its errors beside A's show how far a rerun of the same seed moves. It is in no "
    "comparison."
)
BOOT_DRAWS, BOOT_SEED = 10000, 0  # the two-level bootstrap beside each verdict (DESIGN.md, 2026-12-07)


def load(metrics_dir: Path) -> Records:
    """Every run's metrics, by name."""
    if not metrics_dir.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(metrics_dir.glob("*.json"))}


ORDER = ("A", "A-again", "B", "B-5x5", "D", "D-7x7", "D-gap", "E", "E-initA")  # the arms as the tables list them


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


@dataclass(frozen=True)
class Bootstrap:
    """The two-level bootstrap of the difference of mean errors (worse arm minus better arm, points)."""

    low: float  # 95% interval
    high: float
    against: int  # draws against the claim: no gain; for a margin, a loss at or beyond it
    draws: int


@dataclass
class Outcome:
    """What one comparison measured, and its verdict under the rule."""

    comparison: Comparison
    better_errors: list[float]  # the claimed-better arm's top-1 error (%) on each of its seeds
    worse_errors: list[float]
    b: int  # photos right by the claimed-better arm and wrong by the other, summed over the seeds both have
    c: int
    p: float  # sign test of b against c
    pairs: int = 0  # seeds both arms have: the seed pairs the sign test pools
    boot: Bootstrap | None = None

    @property
    def better(self) -> tuple[float, float]:
        """Mean and sd of the claimed-better arm's error."""
        return mean_sd(self.better_errors)

    @property
    def worse(self) -> tuple[float, float]:
        return mean_sd(self.worse_errors)

    @property
    def seeds(self) -> int:
        """The fewer seeds of the two arms: what the seed rule looks at."""
        return min(len(self.better_errors), len(self.worse_errors))

    @property
    def gain(self) -> float:
        """How much lower the claimed-better arm's mean error is (points; negative: higher)."""
        return self.worse[0] - self.better[0]

    @property
    def se(self) -> float:
        """Standard error of the difference of the two seed means."""
        if not self.seeds:
            return math.inf
        return math.sqrt(self.better[1] ** 2 / len(self.better_errors) + self.worse[1] ** 2 / len(self.worse_errors))

    @property
    def verdict(self) -> str:
        if self.seeds < MIN_SEEDS:
            return f"not decided yet ({self.seeds} of {MIN_SEEDS} seeds)"
        cmp, noise = self.comparison, RULE_SE * self.se
        margin = cmp.margin
        if margin is not None and cmp.equivalent:  # about equal: the whole interval inside the margin
            low, high = self.gain - noise, self.gain + noise
            if -margin < low and high < margin:
                return "holds"
            agrees = (self.b > self.c) if self.gain > 0 else (self.c > self.b)
            if (low > margin or high < -margin) and agrees and self.p < RULE_P:
                return "does not hold"
            return "not decided at this scale"
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

    @property
    def distance(self) -> float:
        """How far the observed difference lies from the rule's nearest boundary (0; the margin; ±margin)."""
        margin = self.comparison.margin
        if margin is None:
            return abs(self.gain)
        return abs(abs(self.gain) - margin) if self.comparison.equivalent else abs(margin - self.gain)

    @property
    def seeds_needed(self) -> int | None:
        """Seeds per arm for this distance to exceed two standard errors at the observed spreads (DESIGN.md)."""
        return seeds_needed(self.better[1], self.worse[1], self.distance)


def compare(cmp: Comparison, arms: dict[str, dict[int, dict[str, Any]]], probs_dir: Path) -> Outcome | None:
    """The comparison over every seed each arm has (the sign test over the seeds both have); None until both
    arms have a run."""
    mine, theirs = arms.get(cmp.better, {}), arms.get(cmp.worse, {})
    if not mine or not theirs:
        return None
    rights = {arm: {s: correct(probs_dir, r["name"]) for s, r in arms[arm].items()} for arm in (cmp.better, cmp.worse)}
    b = c = 0
    paired = sorted(set(mine) & set(theirs))
    for s in paired:
        right = rights[cmp.better][s], rights[cmp.worse][s]
        if right[0] is not None and right[1] is not None:
            bs, cs = discordant(right[0], right[1])
            b, c = b + bs, c + cs
    outcome = Outcome(
        cmp, [mine[s]["test"]["top1"] for s in mine], [theirs[s]["test"]["top1"] for s in theirs], b, c,
        sign_test(b, c), len(paired),
    )  # fmt: skip
    kept = [list(rights[arm].values()) for arm in (cmp.better, cmp.worse)]
    if outcome.seeds >= 2 and all(r is not None for side in kept for r in side):
        wrong_better, wrong_worse = (~torch.stack(side) for side in kept)
        draws = bootstrap_difference(wrong_better, wrong_worse, BOOT_DRAWS, BOOT_SEED)
        if cmp.margin is None:
            against = int((draws <= 0).sum())
        elif cmp.equivalent:
            against = int((abs(draws) >= cmp.margin).sum())
        else:
            against = int((draws >= cmp.margin).sum())
        outcome.boot = Bootstrap(*interval(draws), against, len(draws))
    return outcome


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
                f"{letter} + BN, {first['net']['head']} head"
                + (f"; 4 convs, 3 FCs from {init} (same seed)" if (init := first["net"].get("init_from")) else ""),
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
    """One comparison in words: every number the verdict rests on, then the confidences reported beside it."""
    cmp = o.comparison
    nb, nw = len(o.better_errors), len(o.worse_errors)
    seeds = f"{nb} seed{'s' if nb != 1 else ''}" if nb == nw else f"{nb} and {nw} seeds"
    if cmp.margin is None:
        gain = f"{cmp.better} {'lower' if o.gain >= 0 else 'higher'} by {abs(o.gain):.1f} points"
    elif cmp.equivalent:
        gain = (
            f"{cmp.worse} {'higher' if o.gain >= 0 else 'lower'} by {abs(o.gain):.1f} points, interval "
            f"{o.gain - RULE_SE * o.se:+.1f} to {o.gain + RULE_SE * o.se:+.1f} (the claim needs it inside "
            f"±{cmp.margin:g})"
        )
    elif o.gain >= 0:
        gain = f"{cmp.worse} loses {o.gain:.1f} points (the claim allows less than {cmp.margin:g})"
    else:
        gain = f"{cmp.worse} loses nothing: it is {-o.gain:.1f} points lower (the claim allows a loss under {cmp.margin:g})"
    pairs = f" (the {o.pairs} seeds both have)" if o.pairs != max(nb, nw) else ""
    line = (
        f"{cmp.better} {o.better[0]:.1f} ± {o.better[1]:.1f}% against {cmp.worse} {o.worse[0]:.1f} ± {o.worse[1]:.1f}% "
        f"({seeds}): {gain}, standard error {o.se:.1f}; on the same photos{pairs} {cmp.better} alone is right on "
        f"{o.b:,}, {cmp.worse} alone on {o.c:,}, sign test p = {o.p:.2g} -> **{o.verdict}**."
    )
    return line + "".join(f" {x}" for x in beside(o))


def beside(o: Outcome) -> list[str]:
    """The sentences reported beside a verdict, not deciding it: Welch's test, the bootstrap, seeds needed."""
    cmp = o.comparison
    if o.seeds < 2:
        return []
    test = welch(o.better_errors, o.worse_errors)
    said = f"Welch's t-test over seeds: p = {test.p:.2g}"
    if cmp.margin is not None and cmp.equivalent:
        said += f"; inside ±{cmp.margin:g} (two one-sided tests): p = {test.p_within(cmp.margin):.2g}"
    elif cmp.margin is not None:
        said += f"; loss under {cmp.margin:g} (one-sided): p = {test.p_below(cmp.margin):.2g}"
    out = [said + "."]
    if o.boot is not None:
        if cmp.margin is None:
            against = f"{cmp.better} not lower"
        elif cmp.equivalent:
            against = f"the difference outside ±{cmp.margin:g}"
        else:
            against = f"{cmp.worse}'s loss at or over {cmp.margin:g}"
        out.append(
            f"Bootstrap over seeds and photos: {cmp.worse} minus {cmp.better} {o.boot.low:+.1f} to {o.boot.high:+.1f} "
            f"points (95%), {against} in {o.boot.against:,} of {o.boot.draws:,} draws."
        )
    if o.verdict == "not decided at this scale":
        n = o.seeds_needed
        if n is None:
            out.append("No number of seeds would decide it at this effect size: the observed difference is 0.")
        elif n <= o.seeds:
            out.append("The difference already exceeds 2 standard errors; the sign test does not agree.")
        else:
            what = "the rule's boundary" if cmp.margin is not None else "0"
            out.append(
                f"At the observed spreads and difference ({o.distance:.1f} points from {what}), about {n} seeds per "
                "arm would put it beyond 2 standard errors."
            )
    return out


def claim_verdict(outcomes: list[Outcome], missing: list[str] | None = None) -> str:
    """A claim holds when every comparison with all its seeds holds; it fails when one is reversed or does
    not hold. Comparisons short of seeds (or not run) are named and wait: they count once their seeds are in.
    Only comparisons that count toward the claim belong in `outcomes` and `missing`."""
    done = [o for o in outcomes if o.seeds >= MIN_SEEDS]
    waiting = [o.comparison.label for o in outcomes if o not in done] + list(missing or [])
    if not outcomes:
        return "not run yet"
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
                o.comparison.label,
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


RULE = (
    f"Rule (DESIGN.md, fixed before the runs it judges): a comparison **holds** when the claimed-better arm's mean "
    f"top-1 error over seeds is lower by more than {RULE_SE:g} standard errors of the difference **and** the sign "
    f"test on the same photos, pooled over seed pairs, gives p < {RULE_P:g}; **reversed** when both say the "
    f"opposite; otherwise **not decided at this scale**. For the FC layers the claim is *little loss*: it holds "
    f"when the gap head's extra error, plus {RULE_SE:g} standard errors, stays under the margin fixed beforehand. "
    f"For D ≈ E the claim is *about equal*: it holds when E's mean error minus D's, plus and minus {RULE_SE:g} "
    "standard errors, lies inside ±2 points (a margin dated before any E-initA run); it does not hold when that "
    "interval lies wholly outside and the sign test agrees. Every seed of each arm counts (the standard error is "
    "sqrt(sd_a²/n_a + sd_b²/n_b)); the sign test pools the seeds both arms have. No verdict on fewer than "
    f"{MIN_SEEDS} seeds per arm. **A claim holds** when every one of its comparisons, with all their seeds, holds; "
    "it **does not hold here** when any of them is reversed or does not hold; otherwise it is **not decided at "
    "this scale**. A comparison still short of seeds is named beside the verdict and counts once its seeds are in."
)
CONFIDENCE = (
    "How sure: the pooled sign test counts each photo once per seed pair as an independent trial, although the "
    "same photos recur under every pair; its p measures **photo (test-set) noise only**, not how much another "
    "seed would move an arm, so a tiny p does not settle a comparison by itself. Beside each verdict, not deciding "
    "it, are two confidences that count seed noise: **Welch's t-test** on the per-seed errors (two-sided p; for a "
    "margin, the one-sided or two-one-sided p against it) and a **two-level bootstrap** "
    f"({BOOT_DRAWS:,} draws, seed {BOOT_SEED}: each arm's seeds resampled with replacement, then the test photos, "
    "the same for both arms), with the 95% interval of the difference and the share of draws against the claim. "
    "On three seeds the bootstrap's seed level can only redraw the three errors it has (10 distinct sets per arm) and "
    "has no small-sample correction, so it understates seed noise: where it and Welch's test disagree, Welch's is "
    "the more cautious reading. "
    "Where a comparison is not decided, the report gives the seeds per arm that the observed spreads would need "
    "for the observed difference to exceed 2 standard errors: n = 4 (sd_a² + sd_b²) / gap², with the gap measured "
    "from the rule's boundary (0, or the margin)."
)


def results_markdown(runs: Records, probs_dir: Path) -> str:
    """The whole RESULTS.md."""
    arms = by_arm(runs)
    parts = [
        "# VGG's best-known claims on real photos",
        "Generated by `experiments/claims/run.py` (`--report-only` rebuilds it from `metrics/` and `probs/`). "
        "Setup, the decision rule and why: [DESIGN.md](DESIGN.md).",
        RULE,
        CONFIDENCE,
        "## Arms",
        arm_table(arms) if arms else "No run has finished yet.",
        "![top-1 error against parameters and MACs](claims.png)" if arms else "",
        AGAIN if "A-again" in arms else "",
    ]
    for name, (words, comparisons) in CLAIMS.items():
        found = {c: compare(c, arms, probs_dir) for c in comparisons}
        outcomes = [o for o in found.values() if o is not None]
        counted = [o for o in outcomes if o.comparison.counts]
        missing = [c.label for c, o in found.items() if o is None and c.counts]
        parts += [f"## Claim: {name}", f"*{words}*", f"**Verdict: {claim_verdict(counted, missing)}.**", PAPER[name]]
        lines = [f"- {outcome_line(o)}" for o in counted]
        lines += [f"- ({NOT_COUNTED[o.comparison.label]}.) {outcome_line(o)}" for o in outcomes if o not in counted]
        if lines:
            parts.append("\n".join(lines))
        if missing:
            parts.append(f"Not run yet: {', '.join(missing)}.")
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
