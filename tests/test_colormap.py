import numpy as np
import pytest

from vggnet.colormap import jet


def test_jet_ends_and_middle():
    colours = jet(np.array([0.0, 0.5, 1.0]))
    assert colours.shape == (3, 3)
    np.testing.assert_allclose(colours[0], [0, 0, 0.5])  # dark blue
    np.testing.assert_allclose(colours[2], [0.5, 0, 0])  # dark red
    r, g, b = colours[1]
    assert g == 1 and 0.45 < r < 0.55 and 0.45 < b < 0.55  # green between cyan and yellow
    # out of range clips to the ends; any array shape gains a last axis of 3
    np.testing.assert_array_equal(jet(np.array([[-1.0, 2.0]])), colours[[0, 2]][None])


def test_jet_equals_matplotlibs_within_one_level():
    colormaps = pytest.importorskip("matplotlib").colormaps
    x = np.concatenate([np.linspace(-0.1, 1.1, 20001), np.arange(257) / 256, np.arange(256) / 255])
    for values in (x, x.astype(np.float32)):
        assert np.abs(jet(values) - colormaps["jet"](values)[..., :3]).max() < 1 / 255
