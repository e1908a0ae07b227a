"""Top-k error, confusion matrices and per-class accuracy, shared by training and evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

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
