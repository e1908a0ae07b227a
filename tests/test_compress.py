"""Smaller weights: truncated SVD of FC6/FC7, int8 storage, files that load back, and one-line refusals."""

import pytest
import torch

from vggnet import build
from vggnet import compress as compress_module
from vggnet import low_rank as low_rank_module
from vggnet.cli import main
from vggnet.compress import choose_ranks, compress, factorise, parse_size, singular_values
from vggnet.evaluate import for_evaluation
from vggnet.low_rank import gram, low_rank, rank_for_energy
from vggnet.optimize import fold_batchnorm
from vggnet.weights import LowRankLinear, load_weights, save_weights, stored_bytes
from vggnet.weights.compression import dequantize_state, quantize_state

W = 1 / 16
X = torch.rand(2, 3, 64, 64)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build("A_bn", width=W, num_classes=5, input_size=64).eval()  # FC6 (256, 128), FC7 (256, 256)


def test_rank_for_energy_counts_squared_singular_values():
    s = torch.tensor([3.0, 2.0, 1.0])  # squares 9, 4, 1 of 14
    assert [rank_for_energy(s, e) for e in (0.5, 9 / 14, 0.7, 13 / 14, 0.99, 1.0)] == [1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="a fraction in"):
        rank_for_energy(s, 0.0)


def test_truncated_svd_is_the_best_rank_r_approximation(model):
    small = factorise(model, {"fc6": 10, "fc7": 20})
    fc6, w = small.classifier[0], model.classifier[0].weight.detach().double()
    assert isinstance(fc6, LowRankLinear) and fc6.rank == 10 and small.classifier[3].rank == 20
    approx = (fc6[1].weight.double() @ fc6[0].weight.double()).detach()
    s = torch.linalg.svdvals(w)
    # Eckart-Young: the Frobenius error of the best rank-10 approximation is the discarded singular values' norm
    torch.testing.assert_close(torch.linalg.matrix_norm(w - approx) ** 2, (s[10:] ** 2).sum(), rtol=1e-4, atol=1e-6)
    full = factorise(model, {"fc6": 128, "fc7": 256})  # every singular value kept: the same network
    with torch.no_grad():
        torch.testing.assert_close(full(X), model(X), rtol=1e-4, atol=1e-5)


def test_compressed_file_loads_back_and_evaluates(model, tmp_path):
    save_weights(model, tmp_path / "w.safetensors", class_names=list("abcde"))
    report = compress(tmp_path / "w.safetensors", tmp_path / "small.safetensors", energy=0.8)
    loaded, meta = load_weights(tmp_path / "small.safetensors")
    ranks = {n: loaded.classifier[i].rank for n, i in (("fc6", 0), ("fc7", 3))}
    values = singular_values(model)
    assert report.ranks == ranks == {n: rank_for_energy(s, 0.8) for n, s in values.items()}
    assert all(0.8 <= report.energy[n] < 0.8 + (values[n][ranks[n] - 1] ** 2 / (values[n] ** 2).sum()) for n in ranks)
    saved = (128 * 256 - ranks["fc6"] * (128 + 256)) + (256 * 256 - ranks["fc7"] * 512)
    assert report.params_after == report.params_before - saved == sum(p.numel() for p in loaded.parameters())
    assert meta.class_names == list("abcde") and meta.extra["compression"]["low_rank"] == ranks
    expected = factorise(model, ranks)
    with torch.no_grad():
        assert torch.equal(loaded(X), expected(X))
        dense = for_evaluation(loaded).score_map(X).mean(dim=(2, 3))  # section 3.2's net keeps the factors
        torch.testing.assert_close(dense, expected(X), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fold_batchnorm(loaded)(X), expected(X), rtol=1e-4, atol=1e-5)


def test_int8_storage_quarters_the_weights_within_half_a_step(model, tmp_path):
    state = model.state_dict()
    q = quantize_state(state)
    assert q["features.0.weight"].dtype == torch.int8 and q["features.0.weight.int8_scale"].shape == (4,)
    back = dequantize_state(q)
    assert set(back) == set(state)
    for key, value in state.items():
        if value.is_floating_point() and value.dim() >= 2:
            step = value.abs().reshape(len(value), -1).amax(1) / 127
            err = (back[key] - value).abs().reshape(len(value), -1).amax(1)
            assert (err <= step / 2 + 1e-7).all(), key
        else:
            assert torch.equal(back[key], value), key
    save_weights(model, tmp_path / "w.safetensors")
    report = compress(tmp_path / "w.safetensors", tmp_path / "q.safetensors", int8=True)
    assert report.ranks == {} and report.params_after == report.params_before
    assert stored_bytes(state, int8=True) < stored_bytes(state) / 3.5
    loaded, _ = load_weights(tmp_path / "q.safetensors")
    assert torch.equal(loaded.state_dict()["features.0.weight"], back["features.0.weight"])


def test_target_size_gives_the_largest_rank_that_fits(model, tmp_path):
    save_weights(model, tmp_path / "w.safetensors")
    full = stored_bytes(model.state_dict())
    target = full // 2
    ranks = choose_ranks(model, target_bytes=target)
    r = ranks["fc6"]
    assert ranks == {"fc6": r, "fc7": r}
    assert stored_bytes(factorise(model, ranks).state_dict()) <= target
    assert stored_bytes(factorise(model, {"fc6": r + 1, "fc7": r + 1}).state_dict()) > target
    with pytest.raises(ValueError, match="is below the smallest this VGG can be"):
        choose_ranks(model, target_bytes=1000)
    assert parse_size("100MB") == 100_000_000 and parse_size("1.5 GiB") == 3 * 2**29 and parse_size("500k") == 500_000


def test_cli_compress_and_its_refusals(model, tmp_path, capsys):
    save_weights(model, tmp_path / "w.safetensors")
    save_weights(build("A", width=W, num_classes=5, head="gap"), tmp_path / "gap.safetensors")
    w, out = str(tmp_path / "w.safetensors"), str(tmp_path / "out.safetensors")
    assert main(["compress", w, out, "--rank", "16", "--int8"]) == 0
    text, err = capsys.readouterr()
    assert "fc6 rank 16" in text and "fc7 rank 16" in text and "int8 weights" in text and "parameters " in text
    lines = err.splitlines()  # progress: one line per step, each with its seconds
    assert len(lines) == 4 and all(line.endswith(" s") for line in lines), err
    assert lines[0].startswith(f"read {w} (") and lines[3].startswith(f"wrote {out} (")
    assert lines[1].startswith("fc6 256x128: rank 16 (") and lines[2].startswith("fc7 256x256: rank 16 (")
    assert main(["compress", w, str(tmp_path / "quiet.safetensors"), "--rank", "16", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    for args, message in [
        ([w, str(tmp_path / "x.safetensors")], "nothing to do: give --rank, --energy or --target-size"),
        ([w, str(tmp_path / "x.safetensors"), "--rank", "0"], "--rank 0: must be at least 1"),
        ([w, str(tmp_path / "x.safetensors"), "--rank", "4", "--layers", "fc8"], "fc8 cannot be factorised"),
        ([str(tmp_path / "gap.safetensors"), str(tmp_path / "x.safetensors"), "--rank", "4"], "the gap head has no"),
        ([out, str(tmp_path / "x.safetensors"), "--rank", "4"], "already factorised"),
        ([w, str(tmp_path / "x.safetensors"), "--target-size", "big"], "expected a size such as 100MB"),
    ]:
        assert main(["compress", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
        assert not (tmp_path / "x.safetensors").exists()
    assert main(["compress", w, str(tmp_path / "big.safetensors"), "--rank", "200"]) == 0  # above break-even
    assert "fc7 kept whole: rank 200 is not below its break-even rank 128" in capsys.readouterr().err


def constructed(out: int, inp: int, s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U diag(s) V^T (float32) with random orthonormal U (out, p), V (inp, p): a matrix whose spectrum is `s`."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(out, len(s), generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(inp, len(s), generator=g, dtype=torch.float64)).Q
    return ((u * s) @ v.T).float()


@pytest.fixture(params=["exact", "iterated"])
def path(request, monkeypatch):
    """Both ways to the eigenvectors: the whole decomposition, and iterating (forced on small matrices)."""
    if request.param == "iterated":
        monkeypatch.setattr(low_rank_module, "EXACT_SIDE", 16)
    return request.param


@pytest.mark.parametrize("shape", [(200, 600), (600, 200), (300, 300)])
def test_low_rank_is_within_1_percent_of_the_exact_truncated_svd(shape, path):
    s = 0.97 ** torch.arange(200, dtype=torch.float64)  # decaying: the 30th value holds 6% of the tail after it
    w = constructed(*shape, s)
    r = 30
    exact = float((s[r:] ** 2).sum().sqrt())  # Eckart-Young: the best rank-r error is the tail's norm
    assert float((s[r - 1 :] ** 2).sum().sqrt()) > 1.02 * exact  # so a rank off by one fails the bound below
    factors = low_rank(w, rank=r)
    assert factors.rank == r and factors.first.shape == (r, shape[1]) and factors.second.shape == (shape[0], r)
    err = float(torch.linalg.matrix_norm(w.double() - factors.second.double() @ factors.first.double()))
    assert exact * (1 - 1e-4) <= err <= 1.01 * exact
    total = float((s**2).sum())
    assert factors.energy == pytest.approx(1 - err**2 / total, abs=1e-5)


@pytest.mark.parametrize("bound", [1.01, 0.999])
def test_low_rank_on_a_flat_random_spectrum(monkeypatch, bound):
    """Random weights converge slowest; FC6's aspect ratio (4096 x 25088). A sixteenth and a quarter of the rank
    kept: subspace iteration; four fifths: the filter for the dropped directions, or with a bound no factors can
    meet, the whole decomposition."""
    monkeypatch.setattr(low_rank_module, "EXACT_SIDE", 16)
    monkeypatch.setattr(low_rank_module, "ERROR_BOUND", bound)
    filtered, dropped_directions = [], low_rank_module.dropped_directions
    monkeypatch.setattr(
        low_rank_module, "dropped_directions", lambda *a: filtered.append(dropped_directions(*a)) or filtered[-1]
    )
    w = torch.randn(256, 1568, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(w.double())
    for r in (16, 64, 205):
        factors = low_rank(w, rank=r)
        stored = dequantize_state(quantize_state({"first": factors.first, "second": factors.second}))  # --int8
        for first, second in ((factors.first, factors.second), (stored["first"], stored["second"])):
            err = float(torch.linalg.matrix_norm(w.double() - second.double() @ first.double()))
            assert err <= 1.01 * float((s[r:] ** 2).sum().sqrt()), r
    assert len(filtered) == 1 and (filtered[0] is not None) == (bound > 1)


def test_a_layer_kept_whole_gets_no_factors(model, tmp_path, monkeypatch):
    """--energy settles each rank from the exact spectrum first; a rank at break-even or above makes no factors."""
    made, factors = [], compress_module.factors
    monkeypatch.setattr(compress_module, "factors", lambda w, cut, **k: made.append(cut.rank) or factors(w, cut, **k))
    save_weights(model, tmp_path / "w.safetensors")
    values = singular_values(model)
    limits = {"fc6": 128 * 256 // (128 + 256), "fc7": 256 * 256 // (256 + 256)}
    for energy in (0.6, 0.97):
        made.clear()
        report = compress(tmp_path / "w.safetensors", tmp_path / f"{energy}.safetensors", energy=energy)
        expected = {n: rank_for_energy(s, energy) for n, s in values.items()}
        whole = [n for n in expected if expected[n] >= limits[n]]
        assert report.kept_whole == whole and report.ranks == {n: r for n, r in expected.items() if n not in whole}
        assert made == list(report.ranks.values())
    assert whole  # 0.97 keeps at least one layer whole, 0.6 none (the asserts above saw both)


def test_energy_rank_is_the_exact_rank_of_the_known_spectrum(path):
    s = 1 / torch.arange(1, 301, dtype=torch.float64)  # s_i = 1/i
    w = constructed(300, 900, s, seed=2)
    kept = torch.cumsum(s**2, 0) / (s**2).sum()
    for r in (
        3,
        20,
        90,
        250,
    ):  # an energy halfway between what r - 1 and r values keep: r is the smallest that reaches it
        energy = float(kept[r - 2] + kept[r - 1]) / 2
        factors = low_rank(w, energy=energy)
        assert factors.rank == r == rank_for_energy(s, energy), (r, factors.rank)
        assert energy <= factors.energy <= float(kept[r - 1]) + 1e-5


@pytest.mark.parametrize("shape", [(40, 90), (90, 40), (64, 64)])
def test_gram_is_the_smaller_sides_product_in_blocks(shape, monkeypatch):
    monkeypatch.setattr(low_rank_module, "GRAM_BLOCK", 7)  # blocks that do not divide the sides
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    g = gram(w)
    expected = w.double() @ w.double().T if shape[0] <= shape[1] else w.double().T @ w.double()
    assert g.dtype == torch.float64 and g.shape == (min(shape), min(shape))
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(g, g.T)


def test_low_rank_refusals():
    w = torch.randn(20, 30)
    with pytest.raises(ValueError, match="--rank 21: must be between 1 and 20 for a 20x30 layer"):
        low_rank(w, rank=21)
    with pytest.raises(ValueError, match="give exactly one of rank and energy"):
        low_rank(w)
    with pytest.raises(ValueError, match="--energy 1.5: a fraction in"):
        low_rank(w, energy=1.5)
