import math

import numpy as np
import pytest
import torch

from vggnet.metrics import (
    bootstrap_difference,
    confusion_matrix,
    count_correct,
    discordant,
    error_cells,
    error_columns,
    errors_text,
    interval,
    per_class_accuracy,
    reported_ks,
    seeds_needed,
    sign_test,
    student_t_sf,
    topk_error,
    welch,
)


def test_sign_test_is_exact() -> None:
    assert sign_test(5, 0) == pytest.approx(2 / 32)  # all five discordant photos one way: 2 x 0.5^5
    assert sign_test(6, 0) == pytest.approx(2 / 64)
    assert sign_test(0, 6) == pytest.approx(2 / 64)
    assert sign_test(27, 19) == pytest.approx(0.3020, abs=1e-4)  # the Imagenette ensemble's 27 against 19
    assert sign_test(3, 3) == 1.0
    assert sign_test(0, 0) == 1.0


def test_discordant_pairs_count_each_direction() -> None:
    a = torch.tensor([True, True, False, False, True])
    b = torch.tensor([True, False, True, False, False])
    assert discordant(a, b) == (2, 1) and discordant(b, a) == (1, 2)


def test_topk_error_confusion_and_per_class() -> None:
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.8, 0.05, 0.15], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]])
    labels = torch.tensor([1, 2, 2, 0])
    assert topk_error(scores, labels, 1) == pytest.approx(50.0) and topk_error(scores, labels, 2) == pytest.approx(25.0)
    assert [int(c) for c in count_correct(scores, labels, (1, 3))] == [2, 4]
    conf = confusion_matrix(scores, labels)
    assert conf.tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert per_class_accuracy(conf) == [0.0, 100.0, 50.0]


@pytest.mark.parametrize("classes, ks", [(2, [1]), (5, [1]), (6, [1, 5]), (1000, [1, 5])])
def test_top_k_is_reported_only_where_k_is_below_the_class_count(classes, ks) -> None:
    assert reported_ks(classes) == ks
    errors = {1: 12.5, 5: 0.0}
    text = "top-1 error 12.50%" + (", top-5 error 0.00%" if 5 in ks else "")
    assert errors_text(errors, classes) == text


def test_error_columns_and_cells_of_a_table_with_mixed_class_counts() -> None:
    assert error_columns([2, 3]) == [1] and error_columns([2, 10]) == [1, 5]
    assert error_cells({1: 12.34, 5: 1.0}, 10, [1, 5]) == ["12.3", "1.0"]
    assert error_cells({1: 12.34, 5: 0.0}, 2, [1, 5]) == ["12.3", "-"]


@pytest.mark.parametrize("classes, shown", [(2, False), (10, True)])
def test_training_epoch_line_shows_top5_only_above_5_classes(classes, shown, capsys) -> None:
    from vggnet.train.loop import log_epoch

    record = {"epoch": 1, "lr": 0.01, "train_loss": 0.5, "train_top1": 20.0, "val_loss": 0.6, "val_top1": 25.0}
    log_epoch({**record, "val_top5": 0.0, "images_per_s": 10.0, "seconds": 2.0, "best": True}, 3, "keep", 0, classes)
    line = capsys.readouterr().err
    assert line.startswith("epoch 1/3  lr 1.0e-02  train loss 0.500 top-1 20.00%  val loss 0.600 top-1 25.00% ")
    assert ("top-5 0.00%  10 img/s" in line) == shown and line.endswith("10 img/s  2.0 s  (best)\n")


# -- comparing two recipes over seeds ---------------------------------------------------------------------


@pytest.mark.parametrize("t", [-3.0, -0.5, 0.0, 0.4, 2.1213203435596424, 7.0])
def test_student_t_tail_matches_closed_forms(t: float) -> None:
    assert student_t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-12, abs=1e-15)  # Cauchy
    assert student_t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)), rel=1e-12, abs=1e-15)


def test_welch_by_hand() -> None:
    # a = (0, 2), b = (3, 5): both variances 2, se = sqrt(2/2 + 2/2), t = 3 / sqrt(2), df = 2 exactly;
    # two-sided p = 1 - t / sqrt(t^2 + 2) with df = 2.
    w = welch([0.0, 2.0], [3.0, 5.0])
    t = 3 / math.sqrt(2)
    assert (w.difference, w.se, w.df) == pytest.approx((3.0, math.sqrt(2), 2.0))
    assert w.p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-12)
    assert welch([3.0, 5.0], [0.0, 2.0]).p == pytest.approx(w.p, rel=1e-12)  # the sign does not matter
    # One-sided against a margin of 4: t = (3 - 4) / sqrt(2) = -1/sqrt(2); P(T < t) with df 2.
    u = -1 / math.sqrt(2)
    assert w.p_below(4.0) == pytest.approx(0.5 + u / (2 * math.sqrt(u * u + 2)), rel=1e-12)
    assert w.p_within(4.0) == pytest.approx(w.p_below(4.0))  # far from -4: the upper test is the larger p
    with pytest.raises(ValueError, match="two values per sample at least; got 1 and 2"):
        welch([1.0], [1.0, 2.0])


def test_welch_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats", reason="scipy is an optional extra; the closed forms above still run")
    for a, b in (([25.9, 26.4, 27.1], [32.2, 31.9, 38.6]), ([37.0, 30.8, 25.5, 29.0, 31.2], [30.5, 31.9, 25.7])):
        assert welch(a, b).p == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue, rel=1e-9)
    for t, df in ((-4.2, 2.1), (1.7, 3.3), (12.0, 7.9), (0.02, 40.0)):
        assert student_t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-9)


def test_bootstrap_is_deterministic_and_centred_on_the_observed_difference() -> None:
    g = torch.Generator().manual_seed(0)
    wrong_a, wrong_b = torch.rand(3, 400, generator=g) < 0.3, torch.rand(4, 400, generator=g) < 0.4
    draws = bootstrap_difference(wrong_a, wrong_b, draws=1200, seed=7)
    assert draws.shape == (1200,)
    assert np.array_equal(draws, bootstrap_difference(wrong_a, wrong_b, draws=1200, seed=7))
    assert not np.array_equal(draws, bootstrap_difference(wrong_a, wrong_b, draws=1200, seed=8))
    observed = 100 * (wrong_b.float().mean() - wrong_a.float().mean()).item()
    assert abs(draws.mean() - observed) < 1.0
    low, high = interval(draws)
    assert low < observed < high
    # Every photo wrong for one arm and right for the other: every draw is exactly -100 points.
    fixed = bootstrap_difference(torch.ones(2, 10, dtype=torch.bool), torch.zeros(2, 10, dtype=torch.bool), 30)
    assert np.all(fixed == -100.0)
    with pytest.raises(ValueError, match="different photos: 10 and 9"):
        bootstrap_difference(torch.ones(2, 10, dtype=torch.bool), torch.ones(2, 9, dtype=torch.bool))


def test_interval_takes_order_statistics() -> None:
    assert interval(np.arange(1000.0)[::-1]) == (25.0, 974.0)  # the 26th and the 975th of 1,000, sorted


def test_seeds_needed_is_the_formula_of_the_design() -> None:
    assert seeds_needed(3.0, 4.0, 5.0) == 4  # 4 (9 + 16) / 25 = 4 exactly
    assert seeds_needed(5.8, 3.2, 1.8) == math.ceil(4 * (5.8**2 + 3.2**2) / 1.8**2)
    assert seeds_needed(1.0, 1.0, -2.0) == 2  # the sign of the gap does not matter
    assert seeds_needed(1.0, 1.0, 0.0) is None
