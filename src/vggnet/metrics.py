"""Top-k error, confusion matrices and per-class accuracy, shared by training and evaluation; the tests that
compare two training recipes over seeds and test photos (sign test, Welch's t-test, a two-level bootstrap)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

TOP_KS = (1, 5)  # the paper's top-1 and top-5 errors


def count_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the k highest scores, for each k (k capped at the class count)."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # (N, k)
    hit = top == labels[:, None]
    return [hit[:, : min(k, scores.shape[1])].any(1).sum() for k in ks]


def topk_error(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage of samples whose true class is not among the k highest scores (k capped at the class count)."""
    (hits,) = count_correct(scores, labels, (k,))
    return 100.0 * (1.0 - (hits.float() / max(len(labels), 1)).item())  # float32, as a mean of hits


def reported_ks(num_classes: int, ks: Iterable[int] = TOP_KS) -> list[int]:
    """The k whose top-k error says something: 1, and each k below the class count.

    With k classes or fewer every label is among the top k, so that error is 0% whatever the network does.
    """
    return [k for k in ks if k == 1 or k < num_classes]


def errors_text(errors: Mapping[int, float], num_classes: int) -> str:
    """ "top-1 error 12.00%, top-5 error 3.00%": each k of `errors` that `reported_ks` keeps."""
    return ", ".join(f"top-{k} error {errors[k]:.2f}%" for k in reported_ks(num_classes, errors))


def error_columns(class_counts: Iterable[int], ks: Iterable[int] = TOP_KS) -> list[int]:
    """The top-k columns of a table whose rows have these class counts: each k some row reports."""
    counts = list(class_counts)
    return [k for k in ks if any(k in reported_ks(n, ks) for n in counts)]


def error_cells(errors: Mapping[int, float], num_classes: int, columns: Iterable[int]) -> list[str]:
    """A row's cells under `error_columns`: the error in % to 0.1, or "-" where k is not below the class count."""
    return [f"{errors[k]:.1f}" if k in reported_ks(num_classes, columns) else "-" for k in columns]


def confusion_matrix(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(classes, classes) counts: row = true class, column = top-1 prediction."""
    c = scores.shape[1]
    pred = scores.argmax(dim=1)
    return torch.bincount(labels * c + pred, minlength=c * c).view(c, c)


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Top-1 accuracy (%) of each class; None for a class without images."""
    rows = confusion.sum(dim=1)
    return [None if n == 0 else 100.0 * float(confusion[i, i]) / float(n) for i, n in enumerate(rows.tolist())]


def sign_test(b: int, c: int) -> float:
    """Two-sided exact sign test (exact McNemar) of b against c discordant pairs: the p-value of b != c."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def discordant(correct_a: torch.Tensor, correct_b: torch.Tensor) -> tuple[int, int]:
    """On the same samples: (right by a and wrong by b, wrong by a and right by b), the pairs a sign test counts."""
    return int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())


# -- two recipes compared over seeds and photos (experiments/claims) ------------------------------------------


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (Numerical Recipes' betacf)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below the mean: use the symmetry
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    return math.exp(log_front) * h / a


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (a whole number or not)."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


@dataclass(frozen=True)
class Welch:
    """Welch's t-test of mean(b) - mean(a) for two samples with unequal variances (here: per-seed errors)."""

    difference: float  # mean(b) - mean(a)
    se: float  # sqrt(var_a / n_a + var_b / n_b), sample variances
    df: float  # Welch-Satterthwaite degrees of freedom

    def _sf(self, bound: float) -> float:
        """P(T > (difference - bound) / se): the one-sided p of "the difference is at most `bound`"."""
        if self.se == 0:
            return 0.0 if self.difference > bound else 1.0
        return student_t_sf((self.difference - bound) / self.se, self.df)

    @property
    def p(self) -> float:
        """Two-sided p of "no difference"."""
        return min(1.0, 2 * min(self._sf(0.0), 1.0 - self._sf(0.0))) if self.se > 0 else float(self.difference == 0)

    def p_below(self, margin: float) -> float:
        """One-sided p of "the difference is at least `margin`": small when it is shown to lie below it."""
        return 1.0 - self._sf(margin) if self.se > 0 else float(self.difference >= margin)

    def p_within(self, margin: float) -> float:
        """Two one-sided tests of equivalence: the larger p of "at least +margin" and "at most -margin"."""
        above = self.p_below(margin)
        below = self._sf(-margin) if self.se > 0 else float(self.difference <= -margin)
        return max(above, below)


def welch(a: list[float], b: list[float]) -> Welch:
    """Welch's t-test of mean(b) - mean(a); each sample needs two values at least."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's t-test needs two values per sample at least; got {len(a)} and {len(b)}")
    va, vb = (float(np.var(x, ddof=1)) / len(x) for x in (a, b))
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else math.inf
    return Welch(float(np.mean(b) - np.mean(a)), se, df)


def bootstrap_difference(wrong_a: torch.Tensor, wrong_b: torch.Tensor, draws: int = 10000, seed: int = 0) -> np.ndarray:
    """Two-level bootstrap of mean error(b) - mean error(a), in points of %: each draw resamples each arm's seeds
    with replacement, then the test photos with replacement (the same photos for both arms).

    wrong_a (seeds_a, photos) and wrong_b (seeds_b, photos): which photos each seed's net gets wrong. Integer counts
    throughout, so a draw's value is the same on every machine; returns the `draws` differences in draw order.
    """
    if wrong_a.shape[1] != wrong_b.shape[1]:
        raise ValueError(f"the arms were tested on different photos: {wrong_a.shape[1]} and {wrong_b.shape[1]}")
    wrong = torch.cat([wrong_a, wrong_b]).to(torch.float64)  # (S_a + S_b, N): exact for counts below 2**53
    sa, sb, n = len(wrong_a), len(wrong_b), wrong.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty(draws)
    for start in range(0, draws, 500):
        k = min(500, draws - start)
        photos = rng.integers(0, n, size=(k, n))
        weights = torch.zeros(k, n, dtype=torch.float64)
        weights.scatter_add_(1, torch.from_numpy(photos), torch.ones(k, n, dtype=torch.float64))
        counts = (wrong @ weights.T).numpy()  # (S_a + S_b, k): errors of every seed on each draw's photos
        pick_a = rng.integers(0, sa, size=(k, sa))
        pick_b = sa + rng.integers(0, sb, size=(k, sb))
        cols = np.arange(k)[:, None]
        err_a = counts[pick_a, cols].sum(1) / (sa * n)
        err_b = counts[pick_b, cols].sum(1) / (sb * n)
        out[start : start + k] = 100.0 * (err_b - err_a)
    return out


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap values (order statistics, no interpolation)."""
    ordered = np.sort(values)
    tail = (1.0 - level) / 2
    return float(ordered[int(math.floor(tail * len(ordered)))]), float(
        ordered[int(math.ceil((1 - tail) * len(ordered))) - 1]
    )


def seeds_needed(sd_a: float, sd_b: float, gap: float) -> int | None:
    """Seeds per arm for a difference `gap` to exceed two standard errors at these spreads: 4 (sd_a² + sd_b²) / gap²,
    rounded up (None when the gap is 0)."""
    if gap == 0:
        return None
    return math.ceil(4 * (sd_a**2 + sd_b**2) / gap**2 - 1e-9)
