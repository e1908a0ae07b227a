import pytest
import torch

from vggnet.metrics import confusion_matrix, count_correct, discordant, per_class_accuracy, sign_test, topk_error


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
