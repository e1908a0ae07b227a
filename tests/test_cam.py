"""Grad-CAM and CAM: maps are non-negative and image-sized, land on the evidence, and bad layers are refused."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vggnet import build
from vggnet.cam import class_activation_map, conv_layers, gradcam, overlay
from vggnet.cli import main
from vggnet.weights import Preprocessing, save_weights

W = 1 / 16
SIDE, PATCH = 32, 8
# Class 0: a red square somewhere on grey noise; class 1: a green one; class 2: none. With only two classes a net
# can learn one colour as "not the other", and Grad-CAM, which keeps positive evidence only, has nothing to show.
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1]])
GREY = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def squares(n: int, seed: int, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(0-1 RGB images, labels, top-left corner of each square)."""
    g = torch.Generator().manual_seed(seed)
    x = (0.4 + 0.2 * torch.rand(n, 1, SIDE, SIDE, generator=g)).repeat(1, 3, 1, 1)
    y = torch.randint(0, classes, (n,), generator=g)
    corner = torch.randint(0, SIDE - PATCH + 1, (n, 2), generator=g)
    for i, (r, c) in enumerate(corner.tolist()):
        if y[i] < len(COLOURS):
            x[i, :, r : r + PATCH, c : c + PATCH] = COLOURS[y[i]][:, None, None]
    return x, y, corner


def trained(head: str) -> torch.nn.Module:
    """A narrow VGG A taught in 40 Adam steps which coloured square (if any) an image holds."""
    torch.manual_seed(0)
    model = build("A_bn", width=W, num_classes=3, head=head, input_size=SIDE, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(40):
        x, y, _ = squares(32, step)
        loss = F.cross_entropy(model(GREY(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def gap_net():
    return trained("gap")


def peak_on_square(maps: torch.Tensor, corner: torch.Tensor) -> list[bool]:
    hits = []
    for m, (r, c) in zip(maps, corner.tolist(), strict=True):
        top_r, top_c = divmod(int(m.argmax()), SIDE)
        hits.append(r <= top_r < r + PATCH and c <= top_c < c + PATCH)
    return hits


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["conv2_1", "conv3_2"])
def test_gradcam_peaks_on_the_square_that_decides_the_class(gap_net, layer):
    x, y, corner = squares(16, seed=1000, classes=2)
    assert (gap_net(GREY(x)).argmax(1) == y).all()
    maps = gradcam(gap_net, x, layer, preprocessing=GREY)
    assert maps.shape == (16, SIDE, SIDE) and maps.min() >= 0
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(16))
    assert all(peak_on_square(maps, corner))


def test_cam_is_the_gap_heads_class_score_map_shifted_and_scaled():
    model = build("B_bn", width=W, num_classes=5, head="gap").eval()
    x = torch.rand(2, 3, 96, 128)
    maps = class_activation_map(model, x, target=[2, 4], upsample=False)
    with torch.no_grad():
        scores = model.score_map(x)[[0, 1], [2, 4]]  # (2, 3, 4): the fc layer at every cell of pool5
    expected = scores - scores.amin(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(maps, expected / expected.amax(dim=(1, 2), keepdim=True))
    full = class_activation_map(model, x)
    assert full.shape == (2, 96, 128) and full.min() >= 0 and torch.allclose(full.amax(dim=(1, 2)), torch.ones(2))


def test_gradcam_is_the_gradient_weighted_sum_of_the_rectified_conv_output():
    model = build("D_bn", width=W, num_classes=4).eval()
    model.requires_grad_(False)  # frozen weights: the map needs no parameter gradient
    x = torch.rand(2, 3, 64, 64)
    maps = gradcam(model, x, "conv4_1", target=[1, 3], upsample=False)
    index = model.feature_names.index("relu4_1")
    a = model.features[: index + 1](x.clone()).detach().requires_grad_(True)  # (2, 32, 8, 8)
    logits = model.forward_head(model.features[index + 1 :](a.clone()))
    (grad,) = torch.autograd.grad(logits[0, 1] + logits[1, 3], a)
    expected = (grad.mean(dim=(2, 3), keepdim=True) * a).sum(1).clamp(min=0)
    top = expected.amax(dim=(1, 2), keepdim=True)
    assert (top > 0).any()  # at least one map with positive evidence (an all-negative one is all zero)
    expected = torch.where(top > 0, expected / top.clamp(min=1e-12), torch.zeros_like(expected))
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert maps.shape == (2, 8, 8) and conv_layers(model)[-1] == "conv5_3"


def test_layers_that_are_not_convs_are_refused():
    model = build("D", width=W, num_classes=4).eval()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"'relu5_3' is not a conv layer of this VGG; accepted: conv1_1, conv1_2"):
        gradcam(model, x, "relu5_3")
    with pytest.raises(ValueError, match=r"'conv6_1' is no layer of this VGG; accepted: conv1_1"):
        gradcam(model, x, "conv6_1")
    with pytest.raises(ValueError, match="CAM needs the gap head; this VGG has the fc head"):
        class_activation_map(model, x)
    with pytest.raises(ValueError, match=r"target must be a class index in \[0, 4\)"):
        gradcam(model, x, target=4)


def test_overlay_keeps_the_image_size():
    image = Image.new("RGB", (50, 40), (128, 128, 128))
    drawn = overlay(image, torch.rand(10, 12))
    assert drawn.size == (50, 40) and drawn.mode == "RGB"


@pytest.mark.slow
def test_cli_predict_draws_gradcam_and_refuses_a_non_conv_layer(tmp_path, capsys, gap_net):
    save_weights(gap_net, tmp_path / "w.safetensors", preprocessing=GREY, class_names=["red", "green", "none"])
    x, _, _ = squares(1, seed=5, classes=1)
    Image.fromarray((x[0].permute(1, 2, 0) * 255).byte().numpy()).save(tmp_path / "red.png")
    args = ["predict", str(tmp_path / "red.png"), "--weights", str(tmp_path / "w.safetensors"), "--scales", "32"]
    assert main([*args, "--cam", "gradcam", "--layer", "conv3_1", "--heatmap", str(tmp_path / "why.png")]) == 0
    out = capsys.readouterr().out
    assert "red" in out.splitlines()[1] and "heat map:" in out
    assert Image.open(tmp_path / "why.png").size == (SIDE, SIDE)
    for extra, message in [
        (
            ["--cam", "gradcam", "--layer", "fc"],
            "Grad-CAM layer 'fc' is not a conv layer of this VGG; accepted: conv1_1",
        ),
        (["--cam", "gradcam"], "--cam gradcam draws a heat map; give --heatmap PATH"),
    ]:
        heat = [] if extra == ["--cam", "gradcam"] else ["--heatmap", str(tmp_path / "no.png")]
        assert main([*args, *extra, *heat]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
        assert not (tmp_path / "no.png").exists()


def test_predict_gradcam_with_fast_evaluation_uses_a_plain_copy(tmp_path):
    from vggnet.configs import EvalConfig
    from vggnet.evaluate import predict

    save_weights(build("B_bn", width=W, num_classes=3, input_size=32).eval(), tmp_path / "w.safetensors")
    Image.new("RGB", (48, 40), (90, 120, 30)).save(tmp_path / "x.png")
    (pred,), _ = predict(
        [tmp_path / "x.png"], [tmp_path / "w.safetensors"], EvalConfig(fast=True, scales="40"),
        heatmap=tmp_path / "why.png", cam="gradcam", layer="conv4_2",
    )  # fmt: skip
    assert pred.heatmap == str(tmp_path / "why.png") and Image.open(pred.heatmap).size == (48, 40)
