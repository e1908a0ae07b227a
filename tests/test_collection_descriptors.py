"""The retrieval descriptors against direct numpy references on small maps, and PCA whitening."""

import math

import numpy as np
import pytest
import torch

from vggnet.collection.descriptors import (
    fit_whitening,
    gap,
    gem,
    l2n,
    mac,
    pool,
    rmac,
    rmac_regions,
)

TOL = 1e-5


@pytest.fixture
def maps() -> np.ndarray:
    """(N, C, H, W) non-negative maps, as after a ReLU, with some exact zeros."""
    rng = np.random.default_rng(0)
    return np.maximum(rng.normal(size=(3, 5, 4, 6)), 0).astype(np.float32)


def np_l2n(v: np.ndarray) -> np.ndarray:
    return v / max(np.sqrt((v.astype(np.float64) ** 2).sum()), 1e-6)


def test_gap_mac_gem_equal_per_channel_loops(maps):
    n, c, h, w = maps.shape
    for p in (1.0, 3.0, 7.5):
        got = gem(torch.from_numpy(maps), p).numpy()
        for i in range(n):
            for j in range(c):
                vals = [max(float(maps[i, j, y, x]), 1e-6) for y in range(h) for x in range(w)]
                assert got[i, j] == pytest.approx((sum(v**p for v in vals) / len(vals)) ** (1 / p), abs=TOL)
    ref_gap = np.array([[maps[i, j].sum() / (h * w) for j in range(c)] for i in range(n)])
    ref_mac = np.array([[maps[i, j].max() for j in range(c)] for i in range(n)])
    np.testing.assert_allclose(gap(torch.from_numpy(maps)).numpy(), ref_gap, atol=TOL)
    np.testing.assert_allclose(mac(torch.from_numpy(maps)).numpy(), ref_mac, atol=TOL)
    # GeM spans the two: a large p approaches MAC, from below, within a factor (H W)^(-1/p)
    g64 = gem(torch.from_numpy(maps), 64.0).numpy()
    assert (g64 <= ref_mac + TOL).all() and (g64 >= ref_mac * (h * w) ** (-1 / 64) - TOL).all()


def test_rmac_regions_of_a_4x6_map_follow_tolias_et_al():
    regions = rmac_regions(4, 6)
    # l = 1: squares of side min(4, 6) = 4; two along the longer side (overlap 50%, the closest to 40%)
    assert regions[:2] == [(0, 0, 4), (0, 2, 4)]
    # l = 2: side floor(2 * 4 / 3) = 2, 2 x 3 of them; l = 3: side 2, 3 x 4 of them
    assert regions[2:8] == [(t, left, 2) for t in (0, 2) for left in (0, 2, 4)]
    assert regions[8:] == [(t, left, 2) for t in (0, 1, 2) for left in (0, 1, 2, 4)]
    assert rmac_regions(5, 5) == [(0, 0, 5)] + [(t, left, 3) for t in (0, 2) for left in (0, 2)] + [
        (t, left, 2) for t in (0, 1, 3) for left in (0, 1, 3)
    ]


def np_regions(h: int, w: int, levels: int = 3) -> list[tuple[int, int, int]]:
    """The paper's regions written out independently: side 2 min / (l + 1), ~40% overlap on the longer side."""
    short, long_ = min(h, w), max(h, w)
    best, extra = None, 0
    if long_ > short:
        for m in range(2, 8):
            overlap = (short - (long_ - short) / (m - 1)) / short
            if best is None or abs(overlap - 0.4) < best:
                best, extra = abs(overlap - 0.4), m - 1
    out = []
    for level in range(1, levels + 1):
        side = max(1, int(2 * short / (level + 1)))
        nh, nw = level + (extra if h > w else 0), level + (extra if w > h else 0)
        ys = [0] if nh == 1 else [int(i * (h - side) / (nh - 1)) for i in range(nh)]
        xs = [0] if nw == 1 else [int(i * (w - side) / (nw - 1)) for i in range(nw)]
        out += [(y, x, side) for y in ys for x in xs]
    return out


@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (5, 5), (3, 9), (7, 11), (1, 1)])
def test_rmac_equals_the_sum_of_normalised_region_maxima(shape):
    rng = np.random.default_rng(sum(shape))
    f = np.maximum(rng.normal(size=(2, 6, *shape)), 0).astype(np.float32)
    assert rmac_regions(*shape) == np_regions(*shape)
    ref = np.zeros((2, 6))
    for i in range(2):
        for y, x, s in np_regions(*shape):
            ref[i] += np_l2n(f[i, :, y : y + s, x : x + s].max(axis=(1, 2)))
    np.testing.assert_allclose(rmac(torch.from_numpy(f)).numpy(), ref, atol=TOL)


def test_pool_reads_fc7_vectors_and_refuses_a_vector_for_a_conv_descriptor(maps):
    v = torch.arange(12.0).view(2, 6)
    assert torch.equal(pool(v, "fc7"), v)
    np.testing.assert_allclose(pool(torch.from_numpy(maps), "fc7").numpy(), maps.mean(axis=(2, 3)), atol=TOL)
    with pytest.raises(ValueError, match="pools a conv layer's"):
        pool(v, "mac")


def test_l2n_gives_unit_rows_and_keeps_a_zero_row_zero():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2n(x).numpy(), [[0.6, 0.8], [0.0, 0.0]], atol=TOL)


def test_whitening_decorrelates_the_fitting_set_and_matches_its_pca():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 3.0  # correlated, off-centre
    w = fit_whitening(x)
    y = (x - x.mean(axis=0)) @ w.projection.T
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(6), atol=1e-6)
    values = np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1]
    np.testing.assert_allclose(w.eigenvalues, values, rtol=1e-9)
    out = w.apply(x[:4])
    assert out.dtype == np.float32 and out.shape == (4, 6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=TOL)
    assert fit_whitening(x, dim=2).projection.shape == (2, 6)


def test_whitening_drops_directions_fewer_photos_cannot_estimate():
    x = np.random.default_rng(2).normal(size=(4, 10))  # 4 photos span 3 directions about their mean
    assert fit_whitening(x).dim == 3
    with pytest.raises(ValueError, match="at least 2 descriptors"):
        fit_whitening(x[:1])
    with pytest.raises(ValueError, match="whitening dimension 11"):
        fit_whitening(x, dim=11)
    assert math.isfinite(float(fit_whitening(x).apply(x).sum()))
