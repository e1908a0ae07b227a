"""`vggnet predict` on hostile images (issue 33): slivers whose rescale is a huge input, photos too large for a
float heat map, and several images sharing a name; each refused in one line or drawn in bounded memory."""

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import one_line_refusal, run_capped
from hostile_files import thin_png
from vggnet import build
from vggnet.cli import main
from vggnet.colormap import jet
from vggnet.configs import EvalConfig
from vggnet.evaluate import evaluate, predict
from vggnet.evaluate.predict import HEAT_PIXELS, heatmap_paths, overlay
from vggnet.weights import save_weights

W = 1 / 16


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    save_weights(build("A", width=W, num_classes=3, input_size=32).eval(), root / "w.safetensors", extra={"scale": 40})
    return root / "w.safetensors"


@pytest.mark.slow
def test_a_thin_image_is_refused_before_its_activations_are_allocated(tmp_path):
    # A full-width conv stack (a gap head keeps the file small): 64 channels at the input's size.
    torch.manual_seed(0)
    weights = tmp_path / "a.safetensors"
    save_weights(build("A", num_classes=2, head="gap").eval(), weights, extra={"scale": 256})
    sliver = thin_png(tmp_path / "sliver.png", 100)  # 100x1: at Q=256 a 25600x256 input
    assert sliver.stat().st_size < 100
    heat = tmp_path / "heat.png"
    status, out, err, peak = run_capped(["predict", str(sliver), "--weights", str(weights), "--heatmap", str(heat)])
    assert status == 2 and out == "" and not heat.exists()
    lines = err.strip().splitlines()
    assert lines == [
        f"skipping unusable image {sliver}: rescaled to Q=256 (25600x256), its activations in VGG A need 6.2 GiB, "
        "over the limit of 2.0 GiB on the activations of one image (set VGGNET_MAX_ACTIVATION_BYTES to a larger "
        "byte count to allow it)"
    ]  # 64 channels x 25600 x 256 x 4 bytes out of conv1_1 and out of its ReLU, for the image and its mirror
    assert 0 < peak < 1536 << 20  # the interpreter, torch and a 37 MB net: the forward pass alone would take 6 GB


def test_a_thin_image_is_skipped_among_others_and_the_budget_can_be_raised(narrow, tmp_path, capsys, monkeypatch):
    sliver, photo = thin_png(tmp_path / "sliver.png", 300), thin_png(tmp_path / "photo.png", 48, 40)
    monkeypatch.setenv("VGGNET_MAX_ACTIVATION_BYTES", str(8 << 20))  # a narrow net's budget, scaled down
    preds, skipped = predict([sliver, photo], [narrow], EvalConfig(flip=False))
    assert skipped == [str(sliver)] and [p.path for p in preds] == [str(photo)]
    assert "rescaled to Q=40 (12000x40), its activations in VGG A (width 1/16) need 14.6 MiB" in capsys.readouterr().err
    for c, name in enumerate(("sliver.png", "photo.png", "photo.png")):
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        (tmp_path / "data" / f"c{c}" / name).write_bytes((tmp_path / name).read_bytes())
    result = evaluate([narrow], str(tmp_path / "data"), EvalConfig(method="dense", flip=False), progress=False)
    assert result.skipped == [str(tmp_path / "data" / "c0" / "sliver.png")] and result.images == 2
    result = evaluate([narrow], str(tmp_path / "data"), EvalConfig(method="center"), progress=False)
    assert result.skipped == [] and result.images == 3  # centre crops: the input size, whatever the image
    monkeypatch.setenv("VGGNET_MAX_ACTIVATION_BYTES", str(64 << 20))
    preds, skipped = predict([sliver], [narrow], EvalConfig(flip=False))
    assert skipped == [] and len(preds) == 1


@pytest.mark.slow
def test_a_large_photo_gets_its_gradcam_map_in_bounded_memory(narrow, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (4000, 3000), (40, 120, 200)).save(big)  # 12 M pixels: float64 maps would take 1.4 GB
    heat = tmp_path / "why.png"
    args = ["predict", str(big), "--weights", str(narrow), "--cam", "gradcam", "--heatmap", str(heat)]
    status, out, err, peak = run_capped(args)
    assert status == 0 and f"heat map: {heat}" in out, err
    assert Image.open(heat).size == (4000, 3000 + 240)  # the photo, and below it a legend strip of 6% of 4000
    assert 0 < peak < 1280 << 20  # the interpreter and torch, the photo and its map in 8 bits: about 0.9 GB


def test_overlay_at_a_bounded_size_matches_the_full_size_colouring():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    heat = torch.rand(7, 9)
    m = torch.nn.functional.interpolate(heat[None, None], size=(300, 400), mode="bilinear", align_corners=False)[0, 0]
    full = 0.5 * np.asarray(image, dtype=np.float64) + 0.5 * 255 * jet(m.numpy())  # the map at the photo's size
    drawn = np.asarray(overlay(image, heat), dtype=np.float64)
    assert drawn.shape == (300, 400, 3) and np.abs(drawn - full).max() <= 1.0
    # Past HEAT_PIXELS the colours come from a smaller map, resized: the same picture up to interpolation.
    side = int(HEAT_PIXELS**0.5) * 2
    smooth = torch.linspace(0, 1, 8)[None].repeat(8, 1)
    big = Image.new("RGB", (side, side // 4), (128, 128, 128))
    drawn = np.asarray(overlay(big, smooth, alpha=1.0))
    m = torch.nn.functional.interpolate(smooth[None, None], size=(1, side), mode="bilinear", align_corners=False)
    expected = 255 * jet(m[0, 0, 0].numpy())  # (side, 3): the colour along the top row
    assert np.abs(drawn[0].astype(np.float64) - expected).mean() < 2.0


def test_heat_maps_of_images_sharing_a_name_go_to_distinct_files(narrow, tmp_path, capsys):
    for folder in ("c1", "c2"):
        thin_png((tmp_path / folder).mkdir() or tmp_path / folder / "x.png", 48, 40)
    images = [str(tmp_path / "c1" / "x.png"), str(tmp_path / "c2" / "x.png")]
    assert main(["predict", *images, "--weights", str(narrow), "--heatmap", str(tmp_path / "hm" / "h.png")]) == 0
    out = capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "hm").iterdir())
    assert written == ["h_x_1.png", "h_x_2.png"]
    assert out.count("heat map: ") == 2 and all(f"heat map: {tmp_path / 'hm' / n}" in out for n in written)
    assert heatmap_paths("h.png", ["a/x.jpg", "b/y.jpg"]) == [type(tmp_path)("h_x.png"), type(tmp_path)("h_y.png")]


@pytest.mark.parametrize(
    "images, template, message",
    [
        (["x.png", "x.jpg", "x_2.png"], "h.png", "the heat maps of {x.jpg} and {x_2.png} would both be {h_x_2.png}"),
        (["x.png"], "x.png", "the heat map of {x.png} would overwrite the image {x.png}"),
    ],
)
def test_a_heat_map_that_would_overwrite_a_file_of_the_run_is_refused(
    narrow, tmp_path, capsys, images, template, message
):
    paths = [thin_png(tmp_path / name, 48, 40) for name in images]
    before = {p: p.read_bytes() for p in paths}
    status = main(["predict", *map(str, paths), "--weights", str(narrow), "--heatmap", str(tmp_path / template)])
    expected = message.replace("{", f"{tmp_path}/").replace("}", "")
    one_line_refusal(status, capsys.readouterr().err, "predict", f"--heatmap {tmp_path / template}: {expected}")
    assert sorted(tmp_path.iterdir()) == sorted(paths) and all(p.read_bytes() == b for p, b in before.items())
