"""`vggnet predict --cam`: Grad-CAM at a conv layer and the gap head's CAM drawn over the photo; bad layers refused."""

import pytest
import torch
from PIL import Image

from vggnet import build
from vggnet.cli import main
from vggnet.configs import EvalConfig
from vggnet.evaluate import predict
from vggnet.evaluate.predict import LEGEND_SIDE, overlay, with_legend
from vggnet.weights import save_weights

W = 1 / 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam")
    torch.manual_seed(0)
    save_weights(build("B_bn", width=W, num_classes=3, input_size=32).eval(), root / "fc.safetensors")
    save_weights(build("A", width=W, num_classes=3, input_size=32, head="gap").eval(), root / "gap.safetensors")
    Image.effect_noise((48, 40), 60).convert("RGB").save(root / "photo.png")
    return root


@pytest.mark.parametrize(
    "weights, cam", [("fc", ["--cam", "gradcam", "--layer", "conv4_2"]), ("gap", ["--cam", "cam"])]
)
def test_cli_draws_the_map_over_the_photo_at_its_size(files, tmp_path, capsys, weights, cam):
    args = ["predict", str(files / "photo.png"), "--weights", str(files / f"{weights}.safetensors"), "--scales", "40"]
    assert main([*args, *cam, "--heatmap", str(tmp_path / "why.png")]) == 0
    assert f"heat map: {tmp_path / 'why.png'}" in capsys.readouterr().out
    drawn = Image.open(tmp_path / "why.png")
    assert drawn.size == (48, 40 + 18)  # the photo's size, and an 18-pixel legend strip below it
    how = "Grad-CAM at conv4_2, Q=40" if weights == "fc" else "CAM, Q=40"
    assert drawn.text["map"] == how and drawn.text["colour scale"] == "jet: blue 0 to red most"


def test_fast_evaluation_draws_gradcam_from_a_plain_copy(files, tmp_path):
    (pred,), _ = predict(
        [files / "photo.png"], [files / "fc.safetensors"], EvalConfig(fast=True, scales="40"),
        heatmap=tmp_path / "why.png", cam="gradcam",
    )  # fmt: skip
    assert Image.open(pred.heatmap).size == (48, 40 + 18)


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--cam", "gradcam", "--layer", "relu3_1"],
            "Grad-CAM layer 'relu3_1' is not a conv layer of this VGG; accepted: conv1_1, conv1_2",
        ),
        (["--cam", "gradcam", "--layer", "fc6"], "Grad-CAM layer 'fc6' is not a conv layer"),
        (["--cam", "gradcam", "--layer", "conv9_9"], "Grad-CAM layer 'conv9_9' is no layer of this VGG; accepted:"),
        (["--cam", "cam"], "--cam cam needs a gap-head network"),
        (["--layer", "conv1_1"], "--layer chooses Grad-CAM's conv layer; use it with --cam gradcam"),
    ],
)
def test_bad_cam_requests_fail_in_one_line_writing_nothing(files, tmp_path, capsys, extra, message):
    args = ["predict", str(files / "photo.png"), "--weights", str(files / "fc.safetensors"), "--scales", "40"]
    assert main([*args, *extra, "--heatmap", str(tmp_path / "why.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "why.png").exists()
    assert main([*args, "--cam", "gradcam"]) == 2
    assert "--cam gradcam draws a heat map; give --heatmap PATH" in capsys.readouterr().err


def test_overlay_keeps_the_image_size_and_colours_the_hot_spot_red():
    image = Image.new("RGB", (50, 40), (128, 128, 128))
    heat = torch.zeros(10, 12)
    heat[0, 0] = 1.0
    drawn = overlay(image, heat, alpha=1.0)
    assert drawn.size == (50, 40) and drawn.getpixel((0, 0))[0] > 100 and drawn.getpixel((49, 39))[2] > 100


def test_the_legend_names_the_class_and_shows_the_colour_scale_below_the_photo():
    photo = Image.new("RGB", (400, 300), (128, 128, 128))
    drawn = with_legend(photo, "tabby: Grad-CAM at conv5_3, Q=256", "0", "most")
    strip = round(LEGEND_SIDE * 400)  # 24 px
    assert drawn.size == (400, 300 + strip) and drawn.crop((0, 0, 400, 300)).tobytes() == photo.tobytes()
    pad = strip // 10
    bar = [drawn.getpixel((x, 300 + pad + 1)) for x in range(400 - pad - (400 // 3 - 2 * pad), 400 - pad)]
    assert bar[0] == (0, 0, 128) and bar[-1] == (128, 0, 0)  # jet: dark blue (low) to dark red (high)
    title = drawn.crop((0, 300, 200, 300 + strip))
    other = with_legend(photo, "tiger: Grad-CAM at conv5_3, Q=256", "0", "most").crop((0, 300, 200, 300 + strip))
    assert title.getcolors(4096) != [(200 * strip, (255, 255, 255))]  # text is drawn
    assert title.tobytes() != other.tobytes()  # and it is the class's name
