import pytest
import torch

from vggnet.metrics import (
    confusion_matrix,
    count_correct,
    discordant,
    error_cells,
    error_columns,
    errors_text,
    per_class_accuracy,
    reported_ks,
    sign_test,
    topk_error,
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
