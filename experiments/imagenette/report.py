"""RESULTS.md and the plots of the Imagenette experiment, from the committed metrics/*.json alone.

PYTHONPATH=src python experiments/imagenette/run.py --report-only
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vggnet.metrics import sign_test, welch
from vggnet.tables import markdown_table

Records = dict[str, dict[str, Any]]  # runs or ensembles by name, each as its metrics/*.json holds it
Best = tuple[str, str, float]  # (run or ensemble, evaluation, top-1 error)

# ILSVRC-2012 validation, top-1 / top-5 error (%), from /work/shared/PAPER.md (Tables 3-6).
PAPER_T3 = {  # (config, fixed or jittered) -> single-scale dense
    ("A", False): (29.6, 10.4),
    ("A-LRN", False): (29.7, 10.5),
    ("B", False): (28.7, 9.9),
    ("C", False): (28.1, 9.4),
    ("D", False): (27.0, 8.8),
    ("E", False): (27.3, 9.0),
    ("C", True): (27.3, 8.8),
    ("D", True): (25.6, 8.1),
    ("E", True): (25.5, 8.0),
}
PAPER_T4 = {("C", True): (26.3, 8.2), ("D", True): (24.8, 7.5), ("E", True): (24.8, 7.5)}
PAPER_T5 = {  # jittered D / E, Q in {256, 384, 512}
    ("D", "dense_multi"): (24.8, 7.5),
    ("D", "multicrop_multi"): (24.6, 7.5),
    ("D", "fusion"): (24.4, 7.2),
    ("E", "dense_multi"): (24.8, 7.5),
    ("E", "multicrop_multi"): (24.6, 7.4),
    ("E", "fusion"): (24.4, 7.1),
}
PAPER_T6 = {"dense_multi": (24.0, 7.1), "fusion": (23.7, 6.8)}  # D+E (jittered S)

METHODS = {
    "dense_single": "dense, single scale",
    "dense_multi": "dense, multi-scale",
    "multicrop_multi": "multi-crop, multi-scale",
    "fusion": "dense + multi-crop",
}
MAIN = ["A", "A-LRN", "B", "C", "D", "E", "C-jit", "D-jit", "E-jit", "D-glorot"]
WIDTH_PROBES = [
    "A-LRN",
    "A-LRN-w4",
    "A-LRN-w4-jit",
    "A-LRN-w2",
    "A-LRN-w2-e32",
    "A-LRN-w2-e32-s1",
    "A-LRN-w2-e32-s2",
    "A-LRN-w2-e32-s1-jit",
    "A-LRN-w1",
    "A-LRN-w1-e32",
    "A-LRN-w1-e32-r2",
    "D-w1-e32",
    "A-LRN-w1-e32-s1",
    "A-LRN-w1-e32-s2",
    "D-w1-e32-r2",
    "D-w1-e32-s1",
]  # the best configuration at growing width (and D at full width)
COMMAND = "PYTHONPATH=src python experiments/imagenette/run.py"


@dataclass(frozen=True)
class Tier:
    """One grid of the experiment: which run plays each of the paper's nets, and which runs are its seeds."""

    title: str
    roles: dict[str, str]  # the paper's net (Table 3's rows, "D-glorot" for the later remark) -> our run
    seeds: dict[str, list[str]]  # the key comparisons' nets -> the runs averaged for each (seeds or reruns)
    ensembles: list[str]  # the ensembles (metrics/ensemble_<name>.json) this grid's verdict counts

    @property
    def nets(self) -> list[str]:
        return list(self.roles.values())

    def group(self, role: str) -> list[str]:
        """The runs averaged for one of the paper's nets: its seeds, or the one run playing it."""
        return self.seeds.get(role) or ([self.roles[role]] if role in self.roles else [])

    def label(self, role: str) -> str:
        """The run playing one of the paper's nets, as the verdicts name it."""
        return self.roles.get(role, role)


EIGHTH = Tier(
    "1/8 width (CPU)",
    {n: n for n in MAIN},
    {
        "A": ["A", "A-s1", "A-s2"],
        "A-LRN": ["A-LRN", "A-LRN-s1", "A-LRN-s2"],
        "D": ["D", "D-s1", "D-s2"],
        "D-jit": ["D-jit", "D-jit-s1", "D-jit-s2"],
    },
    ["D+E", "D-jit+E-jit"],
)
FULL = Tier(
    "full width (GPU)",
    {
        "A": "A-w1",
        "A-LRN": "A-LRN-w1-e32",
        "B": "B-w1",
        "C": "C-w1",
        "D": "D-w1",
        "E": "E-w1",
        "C-jit": "C-jit-w1",
        "D-jit": "D-jit-w1",
        "E-jit": "E-jit-w1",
        "D-glorot": "D-w1-e32",
    },
    {
        "A": ["A-w1"],
        "A-LRN": ["A-LRN-w1-e32", "A-LRN-w1-e32-r2", "A-LRN-w1-e32-s1", "A-LRN-w1-e32-s2"],
        "D": ["D-w1"],
        "D-glorot": ["D-w1-e32", "D-w1-e32-r2", "D-w1-e32-s1"],
    },
    ["D-w1+E-w1", "D-jit-w1+E-jit-w1", "A-LRN-w1+D-w1 (r2)", "A-LRN-w1 x3+D-w1 x2"],
)
TIERS = [EIGHTH, FULL]
# Draws of a width probe's recipe, outside the verdicts: is its result the recipe's or one lucky draw's?
PROBE_SEEDS = {"A-LRN-w2-e32": ["A-LRN-w2-e32", "A-LRN-w2-e32-s1", "A-LRN-w2-e32-s2"]}
EIGHTH_WIDTH = 1 / 8


def load(metrics_dir: Path) -> tuple[Records, Records]:
    """(runs by name, ensembles by name) from metrics/*.json."""
    runs, ensembles = {}, {}
    for f in sorted(Path(metrics_dir).glob("*.json")):
        d = json.loads(f.read_text())
        if f.stem.startswith("ensemble_"):
            ensembles[f.stem[len("ensemble_") :]] = d
        else:
            runs[d["name"]] = d
    return runs, ensembles


def _pair(v: tuple[float, float] | None) -> str:
    return "—" if v is None else f"{v[0]:.1f} / {v[1]:.1f}"


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def _err(r: dict[str, Any] | None, key: str) -> tuple[float, float] | None:
    if r is None or key not in r.get("evals", r):
        return None
    e = r.get("evals", r)[key]
    return e["top1"], e["top5"]


def _scales(r: dict[str, Any]) -> str:
    s = r["config"]["scale"]
    return str(s[0]) if len(s) == 1 else f"[{s[0]};{s[1]}]"


def _q(r: dict[str, Any], key: str) -> str:
    return ",".join(map(str, r["evals"][key].get("scales") or []))


def _jittered(r: dict[str, Any]) -> bool:
    return len(r["config"]["scale"]) == 2


def _letter(name: str) -> str:
    return name.split("-jit")[0].split("-s")[0].replace("-glorot", "")


Rows = list[list[object]]  # a Markdown table's rows of cells; None for a blank cell


def _tier_table(header: list[str], runs: Records, rows: Callable[[str, str, dict[str, Any]], Rows], tier: Tier) -> str:
    """A Markdown table with one block of rows per net of the tier; a net not run yet gets one placeholder row."""
    out: Rows = []
    blanks = [None] * (len(header) - 4)
    for role, name in tier.roles.items():
        r = runs.get(name)
        out += rows(role, name, r) if r is not None else [[name, None, None, "not run yet", *blanks]]
    return markdown_table(header, out)


def _paper(table: dict, role: str, key: Any) -> tuple[float, float] | None:
    return table.get((_letter(role), key)) if role != "D-glorot" else None


def table3(runs: Records, tier: Tier = EIGHTH) -> str:
    """Table 3: single-scale dense evaluation of every net."""
    header = ["ConvNet config.", "train S", "test Q", "top-1 / top-5 error (%)", "paper (ImageNet)"]
    return _tier_table(header, runs, _table3_rows, tier)


def _table3_rows(role: str, name: str, r: dict[str, Any]) -> Rows:
    paper = _paper(PAPER_T3, role, _jittered(r))
    return [[name, _scales(r), _q(r, "dense_single"), _pair(_err(r, "dense_single")), _pair(paper)]]


def table4(runs: Records, tier: Tier = EIGHTH) -> str:
    """Table 4: multi-scale dense evaluation ({S-32,S,S+32} scaled for fixed S; {Smin, mid, Smax} jittered)."""
    header = ["ConvNet config.", "train S", "test Q", "top-1 / top-5 error (%)", "single-scale (Table 3)"]
    return _tier_table([*header, "paper (ImageNet)"], runs, _table4_rows, tier)


def _table4_rows(role: str, name: str, r: dict[str, Any]) -> Rows:
    errors = [_pair(_err(r, "dense_multi")), _pair(_err(r, "dense_single"))]
    return [[name, _scales(r), _q(r, "dense_multi"), *errors, _pair(_paper(PAPER_T4, role, _jittered(r)))]]


def table5(runs: Records, tier: Tier = EIGHTH) -> str:
    """Table 5: dense vs multi-crop vs their fusion, every net at its multi-scale Q."""
    header = ["ConvNet config.", "method", "test Q", "top-1 / top-5 error (%)", "paper (ImageNet)"]
    return _tier_table(header, runs, _table5_rows, tier)


def _table5_rows(role: str, name: str, r: dict[str, Any]) -> Rows:
    rows: Rows = []
    for key in ("dense_multi", "multicrop_multi", "fusion"):
        paper = PAPER_T5.get((_letter(role), key)) if role in ("D-jit", "E-jit") else None
        rows.append([name, METHODS[key], _q(r, "dense_multi"), _pair(_err(r, key)), _pair(paper)])
    return rows


def table6(ensembles: Records) -> str:
    """Table 6: the ensembles (posteriors averaged)."""
    header = ["ensemble", "members", "method", "top-1 / top-5 error (%)", "paper (ImageNet, D+E jittered)"]
    rows: Rows = [] if ensembles else [["D+E", None, None, "not run yet", None]]
    for name, e in ensembles.items():
        for key in ("dense_multi", "multicrop_multi", "fusion"):
            paper = PAPER_T6.get(key) if name == "D-jit+E-jit" else None
            rows.append([name, ", ".join(e.get("members", [])), METHODS[key], _pair(_err(e, key)), _pair(paper)])
    return markdown_table(header, rows)


def mean_std(values: list[float]) -> str:
    """'mean ± std (n=k)'; the sample std needs two values."""
    if not values:
        return "not run yet"
    if len(values) == 1:
        return f"{values[0]:.1f} (n=1)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def seed_values(runs: Records, members: list[str], key: str, k: int = 0) -> list[float]:
    """The top-1 (k=0) or top-5 (k=1) errors of one evaluation over the runs of a seed group that have run."""
    out = []
    for n in members:
        e = _err(runs.get(n), key)
        if e is not None:
            out.append(e[k])
    return out


def seeds_table(runs: Records) -> str:
    """The key comparisons over seeds (and reruns), every grid: mean ± std of top-1 error."""
    header = ["grid", "net", "seeds run", "dense single-scale", "dense multi-scale", "multi-crop", "dense + multi-crop"]
    groups = [(t.title, t.roles.get(role, role), members) for t in TIERS for role, members in t.seeds.items()]
    groups += [("width probe (CPU)", net, members) for net, members in PROBE_SEEDS.items()]
    rows: Rows = []
    for title, net, members in groups:
        if len(members) < 2:
            continue
        have = ", ".join(m for m in members if m in runs) or "none"
        rows.append([title, net, have, *(mean_std(seed_values(runs, members, key)) for key in METHODS)])
    return markdown_table(header, rows)


def width_table(runs: Records) -> str:
    """The best configuration at each width: top-1 / top-5 error of every evaluation method."""
    header = ["run", "width", "train S", "epochs", "train time (min)", *METHODS.values()]
    rows: Rows = []
    for name in WIDTH_PROBES:
        r = runs.get(name)
        if r is None:
            rows.append([name, None, None, None, None, *["not run yet"] * len(METHODS)])
            continue
        recipe = [_width(r["config"].get("width")), _scales(r), len(r["history"]), f"{r['train_seconds'] / 60:.1f}"]
        rows.append([name, *recipe, *(_pair(_err(r, key)) for key in METHODS)])
    return markdown_table(header, rows)


def _width(w: float | None) -> str:
    """1/8 for 0.125; '?' when a record predates the field."""
    return "?" if w is None else (f"1/{round(1 / w)}" if w < 1 and abs(1 / w - round(1 / w)) < 1e-9 else f"{w:g}")


def times_table(runs: Records) -> str:
    """Wall time, epochs, init and best per-epoch validation error of each run."""
    header = ["run", "config", "width", "init", "from", "train S", "epochs", "lr", "train time (min)"]
    header += ["eval time (min)", "best epoch val top-1 (%)"]
    rows: Rows = []
    for name, r in runs.items():
        c, h = r["config"], r["history"]
        recipe = [c["model"], _width(c.get("width")), c["init"], r["run"].get("init_from") or "—", _scales(r)]
        train = [len(h), f"{c['lr']:g}", f"{r['train_seconds'] / 60:.1f}"]
        evaluate = sum(e.get("seconds", 0) for e in r["evals"].values()) / 60
        best = min(x["val_top1"] for x in h) if h else float("nan")
        rows.append([name, *recipe, *train, f"{evaluate:.1f}", f"{best:.1f}"])
    return markdown_table(header, rows)


def verdicts(runs: Records, ensembles: Records, tier: Tier = EIGHTH, probs_dir: Path | None = None) -> list[str]:
    """One line per claim of the paper, decided by one grid's numbers (top-1 error; lower is better); with
    `probs_dir`, each ensemble is also compared with its best member on the same photos."""
    return [
        deeper_is_better(runs, tier),
        lrn_does_not_help(runs, tier),
        conv1x1_helps_less_than_3x3(runs, tier),
        jitter_beats_fixed_scale(runs, tier),
        multiscale_beats_single_scale(runs, tier),
        dense_and_multicrop_complement(runs, tier),
        ensemble_beats_single_nets(runs, ensembles, tier, probs_dir),
    ]


def deeper_is_better(runs: Records, tier: Tier) -> str:
    """A against the better of D and E, dense single-scale (A and D as seed means where the grid has seeds)."""
    a_runs, d_runs = _seed_errors(runs, tier, "A"), _seed_errors(runs, tier, "D")
    a, d = _mean(a_runs), _mean(d_runs)
    e = _top1(runs, tier, "E", "dense_single")
    deeper = None if a is None or d is None else min(d, e if e is not None else d)
    A, D, E = tier.label("A"), tier.label("D"), tier.label("E")
    detail = f"{A} {_f(a)}% vs {D} {_f(d)}% ({_means_of(a_runs, d_runs)}), {E} {_f(e)}% (dense single-scale top-1)"
    spreads = [a_runs, d_runs] if deeper == d else []  # E is one run: no spread of its own
    return _compare(runs, "Deeper is better (A -> D/E)", deeper, a, detail, f"needs {A} and {D}", spreads)


def lrn_does_not_help(runs: Records, tier: Tier) -> str:
    """A null claim: it holds unless A-LRN is better than A by more than the noise (seed means, dense single-scale)."""
    claim, A, LRN = "LRN does not help", tier.label("A"), tier.label("A-LRN")
    lrn_runs, a_runs = _seed_errors(runs, tier, "A-LRN"), _seed_errors(runs, tier, "A")
    if not lrn_runs or not a_runs:
        return _line(claim, f"not run yet (needs {A} and {LRN})")
    lrn, a = statistics.mean(lrn_runs), statistics.mean(a_runs)
    if len(lrn_runs) >= 2 and len(a_runs) >= 2:
        seeds = _seed_noise([lrn_runs, a_runs])
    else:  # one run against the other's seed mean: that side's spread counts as noise too
        seeds = _one_against_seeds_noise(a_runs if len(a_runs) >= 2 else lrn_runs)
    noise = max(_noise(runs, (lrn + a) / 2), seeds)
    word = "holds" if lrn >= a - noise else "does not hold here"
    confidence = ""
    if len(lrn_runs) >= 2 and len(a_runs) >= 2:
        p = welch(lrn_runs, a_runs).p
        confidence = f"; Welch's t-test over the seeds: p = {p:.2g}"
        if word == "does not hold here" and p >= 0.05:
            confidence += ", so LRN's gain here is likely but not settled by so few seeds"
    return _line(
        claim,
        f"{word} — {LRN} {lrn:.1f}% vs {A} {a:.1f}% (means of {len(lrn_runs)} and {len(a_runs)} seeds; the claim "
        f"holds unless A-LRN is better by more than the noise of ±{noise:.1f} points{confidence})",
    )


def conv1x1_helps_less_than_3x3(runs: Records, tier: Tier) -> str:
    """D (3x3 convs) against C (1x1 in their place), one run each, dense single-scale."""
    C, D = tier.label("C"), tier.label("D")
    c, d = _top1(runs, tier, "C", "dense_single"), _top1(runs, tier, "D", "dense_single")
    return _compare(
        runs, "1x1 convs (C) help less than 3x3 (D)", d, c, f"{D} {_f(d)}% vs {C} {_f(c)}%", f"needs {C} and {D}"
    )


def jitter_beats_fixed_scale(runs: Records, tier: Tier) -> str:
    """D trained at jittered S against fixed S (seed means where the grid has seeds); C and E beside, one run each."""
    jit_runs, fixed_runs = _seed_errors(runs, tier, "D-jit"), _seed_errors(runs, tier, "D")
    jit, fixed = _mean(jit_runs), _mean(fixed_runs)
    others = [(x, _top1(runs, tier, f"{x}-jit", "dense_single"), _top1(runs, tier, x, "dense_single")) for x in "CE"]
    extra = "".join(f"; {x}: {j:.1f}% vs {f:.1f}%" for x, j, f in others if j is not None and f is not None)
    detail = (
        f"D jittered {_f(jit)}% vs fixed {_f(fixed)}% ({_means_of(jit_runs, fixed_runs)}, dense single-scale){extra}"
    )
    missing = f"needs {tier.label('D')} and {tier.label('D-jit')}"
    return _compare(runs, "Jittered training beats fixed S", jit, fixed, detail, missing, [jit_runs, fixed_runs])


def multiscale_beats_single_scale(runs: Records, tier: Tier) -> str:
    """Dense multi-scale against single-scale testing, counted over the grid's nets that have both."""
    claim, nets = "Multi-scale testing beats single-scale", _per_net(runs, tier, "dense_multi", "dense_single")
    if not nets:
        return _line(claim, "not run yet")
    better = sum(m < s for _, m, s in nets)
    gains = [s - m for _, m, s in nets]
    cells = ", ".join(f"{n} {s:.1f} -> {m:.1f}" for n, m, s in nets)
    return _line(
        claim,
        f"{_majority(better, len(nets))} — better for {better} of {len(nets)} nets, by {min(gains):.1f} to "
        f"{max(gains):.1f} points on the same photos (single -> multi top-1: {cells})",
    )


def dense_and_multicrop_complement(runs: Records, tier: Tier) -> str:
    """Their fusion against the better of dense and multi-crop (multi-scale), counted over the grid's nets."""
    claim = "Dense and multi-crop are complementary"
    nets = _per_net(runs, tier, "fusion", "dense_multi", "multicrop_multi")
    if not nets:
        return _line(claim, "not run yet")
    better = sum(f < b for _, f, b in nets)
    diffs = [f - b for _, f, b in nets]
    cells = ", ".join(f"{n} {f:.1f} vs {b:.1f}" for n, f, b in nets)
    return _line(
        claim,
        f"{_majority(better, len(nets))} — fusion beats the better of the two for {better} of {len(nets)} nets; "
        f"it lands {min(diffs):+.1f} to {max(diffs):+.1f} points from it, close to the better method rather than "
        f"below it (fusion vs best single method: {cells})",
    )


def ensemble_beats_single_nets(runs: Records, ensembles: Records, tier: Tier, probs_dir: Path | None = None) -> str:
    """Each of the grid's ensembles, fused, against its best member fused; where the posteriors are kept, a sign
    test on the same photos says whether a win is more than photo noise."""
    claim = "The ensemble beats single nets"
    counted = [(name, e) for name, e in ensembles.items() if name in tier.ensembles]
    if not counted:
        return _line(claim, f"not run yet (needs {', or '.join(tier.ensembles)})")
    parts, wins, unsure = [], 0, 0
    for name, e in counted:
        member, best = min(
            ((m, f[0]) for m in e["members"] if (f := _err(runs.get(m), "fusion")) is not None), key=lambda t: t[1]
        )
        mine = e["fusion"]["top1"]
        wins += mine < best
        part = f"{name} fused {mine:.1f}% vs best member fused {best:.1f}%"
        pair = paired_counts(probs_dir, e["members"], "fusion", member, "fusion") if probs_dir else None
        if pair is not None:
            p = sign_test(*pair)
            part += f" (on the same photos {pair[0]} against {pair[1]}, sign test p = {p:.2g})"
            unsure += mine < best and p >= 0.05
        elif mine < best and (n := e["fusion"].get("images", 0)):
            part += f" ({round((best - mine) * n / 100)} of {n} photos; no posteriors kept for a paired test)"
            unsure += 1
        parts.append(part)
    n = len(counted)
    word = "holds" if wins == n else "does not hold here" if wins == 0 else f"holds for {wins} of {n}"
    if unsure:
        word += f", in direction only ({unsure} of the wins not shown beyond photo noise)"
    return _line(claim, f"{word} — {'; '.join(parts)}")


def _compare(
    runs: Records,
    claim: str,
    ours: float | None,
    theirs: float | None,
    detail: str,
    missing: str,
    spreads: Sequence[list[float]] = (),
) -> str:
    """The claim that `ours` is the lower error: it holds, does not, or is not resolved within the noise (the test
    photos', or the seeds' where `spreads` holds each side's seed errors)."""
    if ours is None or theirs is None:
        return _line(claim, f"not run yet ({missing})")
    noise = max(_noise(runs, (ours + theirs) / 2), _seed_noise(spreads))
    gap = abs(ours - theirs)
    if noise and gap < noise:
        lean = "leans towards it" if ours < theirs else "leans against it"
        word = f"not resolved at this size ({lean}, within the noise)"
    else:
        word = "holds" if ours < theirs else "does not hold here"
    side = "within" if gap < noise else "beyond"
    within = f"; the gap, {gap:.1f} points, is {side} the noise of ±{noise:.1f}" if noise else ""
    return _line(claim, f"{word} — {detail}{within}")


def _line(claim: str, text: str) -> str:
    """One verdict as a Markdown bullet."""
    return f"- **{claim}**: {text}."


def _per_net(runs: Records, tier: Tier, method: str, *others: str) -> list[tuple[str, float, float]]:
    """(run, top-1 of `method`, the lowest top-1 of `others`) for each of the grid's nets evaluated by all of them."""
    nets = []
    for role, name in tier.roles.items():
        errors = [_top1(runs, tier, role, key) for key in (method, *others)]
        if None not in errors:
            nets.append((name, errors[0], min(errors[1:])))
    return nets


def _majority(better: int, nets: int) -> str:
    return "holds" if better > nets / 2 else "does not hold here"


def _seed_errors(runs: Records, tier: Tier, role: str) -> list[float]:
    """Dense single-scale top-1 errors of the runs averaged for one of the paper's nets."""
    return seed_values(runs, tier.group(role), "dense_single")


def _top1(runs: Records, tier: Tier, role: str, key: str) -> float | None:
    """Top-1 error of one evaluation of the one run playing `role`; None where it has not run."""
    e = _err(runs.get(tier.roles.get(role, "")), key)
    return None if e is None else e[0]


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _means_of(*sides: list[float]) -> str:
    """'seed means' when every side averages seeds, else how many runs each side averages."""
    n = [len(v) for v in sides]
    return "seed means" if all(k > 1 for k in n) else "means of " + " and ".join(map(str, n)) + " runs"


def _seed_noise(spreads: Sequence[list[float]]) -> float:
    """Two standard errors of a difference of seed means, from the seeds' spread; 0 unless each side has two."""
    if not spreads or any(len(v) < 2 for v in spreads):
        return 0.0
    return 2 * sum(statistics.variance(v) / len(v) for v in spreads) ** 0.5


def _one_against_seeds_noise(seeds: list[float]) -> float:
    """Two standard errors of one run against the mean of `seeds`, the run as noisy as a seed; 0 under two seeds."""
    if len(seeds) < 2:
        return 0.0
    return 2 * statistics.stdev(seeds) * (1 + 1 / len(seeds)) ** 0.5


def _noise(runs: Records, error: float) -> float:
    """Two standard errors of the difference of two top-1 errors near `error` (%) on the test photos; 0 when no
    evaluation records how many photos it used."""
    images = _test_images(runs)
    if not images:
        return 0.0
    p = error / 100
    return 2 * (2 * p * (1 - p) / images) ** 0.5 * 100


def _test_images(runs: Records) -> int:
    """How many test photos the evaluations used (the largest count recorded; 0 if none is)."""
    return max((e.get("images", 0) for r in runs.values() for e in r["evals"].values()), default=0)


def caveats(runs: Records) -> list[str]:
    """What limits the verdicts: training length, the confound of fine-tuning, the size of the test set."""
    epochs = {n: len(r["history"]) for n, r in runs.items()}
    images = _test_images(runs)
    top1 = [r["evals"]["dense_single"]["top1"] for r in runs.values() if "dense_single" in r["evals"]]
    lines = [
        "- Training is short (epochs run: "
        + ", ".join(f"{n} {k}" for n, k in epochs.items())
        + "; the paper trained 74 epochs of 1.28M images, here an epoch is 9,469 photos). Deeper nets start "
        "further from a good solution and need more steps, so at this budget depth is measured against "
        "training time as well as capacity.",
        "- Jittered nets are fine-tuned from the fixed-S net of the same configuration for extra epochs at "
        "lr 1e-3, as in the paper; their gain over the fixed-S net mixes jittering with the extra training.",
    ]
    lines.append(
        "- The test photos also chose: each run's plateau rule and the epoch whose weights are tested looked at all "
        "3,925 validation photos, which include the test photos, so every error here is optimistic by an unknown "
        "amount, most for the runs whose validation error moved most between epochs (experiments/claims holds out "
        "training photos instead)."
    )
    if images and top1:
        error = statistics.mean(top1)
        se = _standard_error(error, images)
        lines.append(
            f"- {images} test photos: the standard error of a top-1 error near {error:.0f}% is {se:.1f} points, so "
            f"differences between nets below ~{2 * 2**0.5 * se:.0f} points are within noise; method comparisons "
            "on one net use the same photos and are tighter."
        )
    return lines


def plot_curves(runs: Records, path: Path) -> None:
    """Validation top-1 error against epoch, every run in one figure (fine-tunes start at their parent's end):
    the 1/8-width grid on the left, the wider runs on the right."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 5.5))
    axes = fig.subplots(1, 2, sharey=True)
    for name, r in runs.items():
        offset, h = _epochs_before(runs, r), r["history"]
        style = "--" if "-s" in name.replace("-jit", "") or "-r2" in name else "-"  # seeds and reruns dashed
        ax = axes[0] if (r["config"].get("width") or 0) <= EIGHTH_WIDTH else axes[1]
        ax.plot([x["epoch"] + offset for x in h], [x["val_top1"] for x in h], style, marker=".", label=name)
    crop = next(iter(runs.values()))["config"].get("crop", "?") if runs else "?"
    q = runs["A"]["config"]["scale"][0] if "A" in runs else "?"
    axes[0].set_title(f"Imagenette, 1/8-width grid at {crop} px")
    axes[1].set_title("wider nets (1/4, 1/2: CPU; full width: GPU)")
    axes[0].set_ylabel(f"validation top-1 error (%), centre crop at Q = {q}")
    for ax in axes:
        ax.set_xlabel("epochs since random init (B-E continue from their A's, jittered nets from their fixed-S net's)")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(ncol=2, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _epochs_before(runs: Records, r: dict[str, Any]) -> int:
    """The epochs a run's ancestors trained before it started (net A's for B-E, the fixed-S net's for a jittered)."""
    epochs, parent = 0, r["run"].get("init_from")
    while parent in runs:
        epochs += len(runs[parent]["history"])
        parent = runs[parent]["run"].get("init_from")
    return epochs


def plot_methods(runs: Records, ensembles: Records, path: Path) -> None:
    """Top-1 error of each evaluation method per configuration (grouped bars)."""
    from matplotlib.figure import Figure

    nets = [n for t in TIERS for n in t.nets if n in runs]
    items = [(n, runs[n]["evals"]) for n in nets] + [(n, e) for n, e in ensembles.items()]
    fig = Figure(figsize=(max(6, 1.1 * len(items) + 2), 4.5))
    ax = fig.subplots()
    width = 0.8 / len(METHODS)
    for j, (key, label) in enumerate(METHODS.items()):
        xs = [i + (j - 1.5) * width for i in range(len(items))]
        ys = [e[key]["top1"] if key in e else float("nan") for _, e in items]
        ax.bar(xs, ys, width, label=label)
    ax.set_xticks(range(len(items)), [n for n, _ in items], rotation=30)
    ax.set_ylabel("top-1 error (%)")
    ys_all = [e[k]["top1"] for _, e in items for k in METHODS if k in e]
    if ys_all:
        ax.set_ylim(max(0, min(ys_all) - 5), max(ys_all) + 3)
    ax.set_title("Error of each evaluation method (section 3.2) per network")
    ax.grid(axis="y", alpha=0.3)
    if items:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def average_posteriors(loaded: list[dict[str, Any]], method: str) -> Any:
    """The members' posteriors (`probs/<run>.pt` contents) averaged for one evaluation key of METHODS; "fusion"
    averages each member's dense and multi-crop posteriors first, as `method="dense+multicrop"` does."""
    import torch

    if method == "fusion":
        return torch.stack([(d["dense_multi"] + d["multicrop_multi"]) / 2 for d in loaded]).mean(0)
    return torch.stack([d[method] for d in loaded]).mean(0)


def load_posteriors(probs_dir: Path, runs: list[str]) -> list[dict[str, Any]] | None:
    """The kept posteriors (`probs/<run>.pt`) of these runs, in order; None unless every one is there."""
    import torch

    files = [probs_dir / f"{r}.pt" for r in runs]
    if not all(f.is_file() for f in files):
        return None
    return [torch.load(f, weights_only=True) for f in files]


def paired_counts(
    probs_dir: Path, members: list[str], method: str, single: str, single_method: str
) -> tuple[int, int] | None:
    """On the same photos: (right by the ensemble and wrong by the single net, the reverse); None without posteriors."""
    loaded = load_posteriors(probs_dir, [*members, single])
    if loaded is None:
        return None
    labels = loaded[0]["labels"]
    ens = average_posteriors(loaded[:-1], method).argmax(1) == labels
    one = average_posteriors(loaded[-1:], single_method).argmax(1) == labels
    return int((ens & ~one).sum()), int((~ens & one).sum())


def _lowest(records: Records) -> Best | None:
    """(name, evaluation, top-1) of the lowest top-1 error over these records' evaluations."""
    found = ((n, k, e["top1"]) for n, evals in records.items() for k, e in evals.items() if k != "members")
    return min(found, key=lambda t: t[2], default=None)


def _best_single_line(best: Best | None, candidates: int = 0) -> str:
    """The best single net (name, method, top-1) against the issue's quality bar of 20% top-1; `candidates`: how
    many (run, method) results it was the lowest of, on the same photos."""
    if not best:
        return "No run yet."
    bar = "met" if best[2] <= 20 else "not met at this size and budget"
    line = f"Best single-net result: {best[0]} at {best[2]:.1f}% top-1 (the issue's quality bar: at most 20%; {bar})"
    if candidates > 1:
        line += (
            f"; the lowest of {candidates} results (runs x evaluation methods) on the same test photos, so an "
            "optimistic figure for its recipe: the seeds table gives the spread of a recipe"
        )
    return line + "."


def _best_ensemble_line(
    best: Best | None,
    best_ens: Best | None,
    ensembles: Records,
    probs_dir: Path | None = None,
) -> str:
    """The best ensemble (name, method, top-1) against the best single net: the gap in photos and, where the
    posteriors are at hand, a paired sign test on the same photos; else the standard error of one error rate."""
    if not best_ens:
        return ""
    line = f"Best ensemble result: {best_ens[0]} at {best_ens[2]:.1f}% top-1"
    if not best:
        return line + "."
    if best_ens[2] >= best[2]:
        return line + " (not below the best single net)."
    n = ensembles[best_ens[0]][best_ens[1]].get("images", 0)
    if not n:  # a record without its photo count (hand-written): the gap alone
        return line + " (below the best single net)."
    gap = round((best[2] - best_ens[2]) * n / 100)
    line += f" (below the best single net by {gap} of {n} photos"
    pair = None
    if probs_dir is not None:
        pair = paired_counts(probs_dir, ensembles[best_ens[0]]["members"], best_ens[1], best[0], best[1])
    if pair is not None:
        return line + _sign_test_clause(best[0], *pair)
    se = _standard_error(best[2], n)
    size = "within" if best[2] - best_ens[2] < 2 * se else "beyond"
    return (
        f"{line}, {size} twice the {se:.1f}-point standard error of one error rate near {best[2]:.0f}% on {n} photos)."
    )


def _sign_test_clause(single: str, b: int, c: int) -> str:
    """The paired comparison: b photos right by the ensemble alone, c by the single net alone."""
    p = sign_test(b, c)
    verdict = "significant at 5%" if p < 0.05 else "not significant at this test-set size"
    return (
        f"; on the same photos the ensemble is right where {single} is wrong on {b} and the reverse on {c}, "
        f"a two-sided sign test p = {p:.2f}: {verdict})."
    )


def _standard_error(error: float, images: int) -> float:
    """The standard error (points) of one top-1 error rate near `error` (%) on `images` photos."""
    p = error / 100
    return 100 * math.sqrt(p * (1 - p) / images)


def not_run(runs: Records) -> str:
    """The runs each grid still lacks, with the command that runs them; or that nothing is missing."""
    lines = []
    for tier in TIERS:
        wanted = [*tier.nets, *(m for group in tier.seeds.values() for m in group)]
        names = [n for n in dict.fromkeys(wanted) if n not in runs]
        if not names:
            continue
        gpu = "; on a GPU machine, all of them side by side: `bash experiments/imagenette/gpu_grid.sh DATA ROOT OUT`"
        lines.append(
            f"- {tier.title}: {', '.join(names)}. Run them with `{COMMAND} --only {','.join(names)}` (finished runs "
            f"are skipped; a run waits for the run it is initialised from){gpu if tier is FULL else ''}."
        )
    return "\n".join(lines or ["Nothing: every run of the grid has metrics."])


def write_results(metrics_dir: str | Path, out_dir: str | Path, preamble: str = "") -> Path:
    """Write RESULTS.md, curves.png and methods.png into out_dir from metrics_dir; returns RESULTS.md's path."""
    out_dir = Path(out_dir)
    runs, ensembles = load(Path(metrics_dir))
    plot_curves(runs, out_dir / "curves.png")
    plot_methods(runs, ensembles, out_dir / "methods.png")
    path = out_dir / "RESULTS.md"
    path.write_text(results_markdown(runs, ensembles, preamble, out_dir / "probs"))
    return path


def results_markdown(runs: Records, ensembles: Records, preamble: str = "", probs_dir: Path | None = None) -> str:
    """RESULTS.md: each grid's verdicts, what limits them, Tables 3-6, seeds, widths, times and what has not run."""
    best = _lowest({n: r["evals"] for n, r in runs.items()})
    candidates = sum(len(r["evals"]) for r in runs.values())
    best_lines = [
        _best_single_line(best, candidates),
        _best_ensemble_line(best, _lowest(ensembles), ensembles, probs_dir),
    ]
    intro = (
        f"Generated by `experiments/imagenette/report.py` from `metrics/*.json`; regenerate with `{COMMAND} "
        f"--report-only` (the whole grid, resuming: `{COMMAND}`). Errors are top-1 / top-5 (%) on the Imagenette "
        "validation photos (10 classes, so top-5 error is small; how many: see Evaluation below); the paper's "
        "numbers are ILSVRC-2012 validation (1000 classes) and are beside ours for shape, not for size."
    )
    full_grid = (
        "The same grid with every layer at the paper's width and twice the epochs (A 32, B-E from A 20, "
        "jittered C-E from those 6; A-LRN and D-glorot are the 32-epoch runs A-LRN-w1-e32 and D-w1-e32)."
    )
    sections = [
        ["# VGG in miniature on Imagenette: the paper's Tables 3-6", "", intro, "", preamble],
        _section(f"## Verdicts: {EIGHTH.title}", *verdicts(runs, ensembles, EIGHTH, probs_dir)),
        _section(
            f"## Verdicts: {FULL.title}, one run per net unless the seeds table says more",
            *verdicts(runs, ensembles, FULL, probs_dir),
            "",
            *best_lines,
        ),
        _section("## Reading these numbers", *caveats(runs)),
        _section("## Table 3: single-scale dense evaluation", table3(runs)),
        _section("## Table 4: multi-scale dense evaluation", table4(runs)),
        _section("## Table 5: dense, multi-crop and their fusion (multi-scale)", table5(runs)),
        _section(f"## Tables 3-5 again: {FULL.title}", full_grid),
        _section("### Table 3: single-scale dense evaluation", table3(runs, FULL)),
        _section("### Table 4: multi-scale dense evaluation", table4(runs, FULL)),
        _section("### Table 5: dense, multi-crop and their fusion (multi-scale)", table5(runs, FULL)),
        _section("## Table 6: ensembles (posteriors of the members averaged)", table6(ensembles)),
        _section(
            "## Seeds: the key comparisons, mean ± sample std of top-1 error (%) (full width: reruns count)",
            seeds_table(runs),
        ),
        _section(
            "## Width: the best configuration (A-LRN) at 2x, 4x and 8x the width (8x: on a GPU), outside the verdicts",
            width_table(runs),
        ),
        _section("## Runs and times", times_table(runs)),
        ["![validation error per epoch](curves.png)", "", "![error per evaluation method](methods.png)", ""],
        _section("## Not run yet", not_run(runs)),
    ]
    return "\n".join(line for section in sections for line in section)


def _section(title: str, *lines: str) -> list[str]:
    """A Markdown section: its title, a blank line, its lines and a blank line after them."""
    return [title, "", *lines, ""]
