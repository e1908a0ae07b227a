"""vggnet.limits: budgets that name themselves and the variable that raises them."""

import pytest

from vggnet.limits import ACTIVATION_BYTES, CHECKPOINT_BYTES, GIB, WEIGHTS_BYTES, Limit


def test_a_budget_refuses_past_its_value_and_says_how_to_raise_it(monkeypatch):
    limit = Limit("VGGNET_MAX_TEST_BYTES", 2 * GIB, "the test's bytes")
    limit.check(2 * GIB, "w.h5: its datasets declare")  # at the budget: allowed
    with pytest.raises(ValueError) as refused:
        limit.check(3 * GIB, "w.h5: its datasets declare")
    assert str(refused.value) == (
        "w.h5: its datasets declare 3.0 GiB, over the limit of 2.0 GiB on the test's bytes "
        "(set VGGNET_MAX_TEST_BYTES to a larger byte count to allow it)"
    )
    monkeypatch.setenv("VGGNET_MAX_TEST_BYTES", str(4 * GIB))
    limit.check(3 * GIB, "w.h5: its datasets declare")
    monkeypatch.setenv("VGGNET_MAX_TEST_BYTES", "1e6")
    with pytest.raises(ValueError, match=r"declare 2.0 MiB, over the limit of 1.0 MiB on"):  # 1e6 bytes
        limit.check(1 << 21, "w.h5: its datasets declare")


@pytest.mark.parametrize("text", ["lots", "-5", "0"])
def test_a_budget_set_to_nonsense_is_one_line_naming_the_variable(monkeypatch, text):
    monkeypatch.setenv("VGGNET_MAX_WEIGHTS_BYTES", text)
    with pytest.raises(
        ValueError, match=rf"^VGGNET_MAX_WEIGHTS_BYTES='{text}': expected a (positive )?number of bytes"
    ):
        WEIGHTS_BYTES.value()


def test_the_default_budgets_hold_the_largest_real_files_and_inputs():
    import torch

    from vggnet.analysis import activation_bytes
    from vggnet.configs import ModelConfig
    from vggnet.model import VGG, count_parameters

    with torch.device("meta"):
        e_bn, d = VGG(ModelConfig("E", batch_norm=True)), VGG(ModelConfig("D", head="conv"))
    weights = 4 * sum(t.numel() for t in e_bn.state_dict().values())  # VGG19_bn in float32, BN buffers included
    assert weights < WEIGHTS_BYTES.default and 3 * weights < CHECKPOINT_BYTES.default  # weights + Adam's two
    assert 4 * count_parameters(e_bn) > WEIGHTS_BYTES.default / 2  # and no looser than twice that
    assert 2 * activation_bytes(d, 512, 910) < ACTIVATION_BYTES.default  # a 16:9 photo at Q=512, flipped
    assert activation_bytes(d, 512, 910, backward=True) < ACTIVATION_BYTES.default  # and its Grad-CAM
    assert 2 * activation_bytes(d, 256, 25600) > ACTIVATION_BYTES.default  # a 100x1 sliver at Q=256, flipped
