import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vggnet.evaluate as ev
from vggnet import build, data, metrics
from vggnet.cli import main
from vggnet.configs import EvalConfig
from vggnet.weights import Preprocessing, save_weights

PRE = Preprocessing.torchvision()
DIGITS = [str(d) for d in range(10)]


def tiny(head: str = "fc", classes: int = 10, input_size: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    return build("A", width=1 / 16, num_classes=classes, input_size=input_size, head=head).eval()


def image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def reference(model, x: torch.Tensor) -> torch.Tensor:
    """Softmax of the model's plain forward on a uint8 batch."""
    with torch.no_grad():
        return model(PRE(x.float() / 255)).softmax(1)


@pytest.fixture
def weights(tmp_path):
    """Two 10-class digits networks trained at jittered S in [32, 64]; a run folder holds the first."""
    paths = []
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        save_weights(tiny(seed=seed), run / "model.safetensors", class_names=DIGITS, extra={"scale": [32, 64]})
        paths.append(run)
    return paths


# -- the ladder ----------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["fc", "conv", "gap"])
def test_dense_at_input_size_equals_plain_forward(head):
    model = tiny(head, classes=7, input_size=224)
    x = image(224, 224)
    torch.testing.assert_close(ev.dense(model, [x], PRE), reference(model, x[None]), rtol=1e-5, atol=1e-6)


def test_dense_averages_the_score_map_of_the_whole_image():
    model = tiny("fc")
    x = image(64, 96)  # score map 2x3 for a 32 input
    with torch.no_grad():
        scores = model.score_map(PRE(x[None].float() / 255))
        conv = model.to_head("conv").eval()(PRE(x[None].float() / 255))
    assert scores.shape == (1, 10, 2, 3)
    expected = scores.mean(dim=(2, 3)).softmax(1)
    torch.testing.assert_close(ev.dense(model, [x], PRE), expected)
    torch.testing.assert_close(ev.dense(model, [x], PRE), conv.softmax(1))


@pytest.mark.parametrize("head", ["fc", "gap"])
def test_the_evaluation_form_gives_the_same_posteriors(head):
    model = tiny(head)
    ready = ev.for_evaluation(model)
    assert ready.cfg.head == ("conv" if head == "fc" else "gap") and not ready.training
    images = [image(40, 52), image(64, 64, 1)]
    for run in (ev.center, ev.dense):
        torch.testing.assert_close(run(ready, images, PRE), run(model, images, PRE), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["center", "dense", "multicrop"])
def test_flip_averages_image_and_mirror_symmetrically(method):
    model = tiny()
    run = {"center": ev.center, "dense": ev.dense, "multicrop": ev.multicrop}[method]
    x = image(40, 52)
    flipped = run(model, [x], PRE, flip=True)
    torch.testing.assert_close(run(model, [x.flip(-1)], PRE, flip=True), flipped)
    half = (run(model, [x], PRE) + run(model, [x.flip(-1)], PRE)) / 2
    torch.testing.assert_close(flipped, half)
    assert not torch.allclose(run(model, [x], PRE), flipped)


def test_grid_positions_are_exact():
    pos = ev.grid_positions(256, 341, 224, 5)
    assert len(pos) == 25
    assert sorted({t for t, _ in pos}) == [0, 8, 16, 24, 32]
    assert sorted({left for _, left in pos}) == [0, 29, 59, 88, 117]
    assert [pos[0], pos[4], pos[20], pos[24]] == [(0, 0), (0, 117), (32, 0), (32, 117)]  # corners
    assert pos[12] == (16, 59) == ev.grid_positions(256, 341, 224, 1)[0]  # grid centre = centre crop
    with pytest.raises(ValueError, match="image 200x300 is smaller than the 224x224 crop"):
        ev.grid_positions(200, 300, 224)


def test_multicrop_averages_the_grid_crops_in_batches():
    model = tiny()
    images = [image(40, 52, 0), image(45, 38, 1)]
    got = ev.multicrop(model, images, PRE, batch_size=7)  # 50 crops in 8 forwards, split across images
    for i, x in enumerate(images):
        crops = torch.stack([x[:, t : t + 32, lft : lft + 32] for t, lft in ev.grid_positions(*x.shape[1:], 32)])
        torch.testing.assert_close(got[i], reference(model, crops).mean(0))
    center = ev.center(model, images, PRE)
    torch.testing.assert_close(center[1], reference(model, images[1][None, :, 6:38, 3:35])[0])


def test_dense_batches_images_of_equal_size():
    model = tiny()
    images = [image(40, 52, i) for i in range(3)] + [image(52, 40, i) for i in range(2)]
    sizes = []
    hook = model.features.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    together = ev.dense(model, images, PRE, batch_size=64)
    hook.remove()
    assert sorted(sizes) == [2, 3]  # one forward per image size
    alone = torch.cat([ev.dense(model, [x], PRE) for x in images])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


# -- scales -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "train, spec, expected",
    [
        ((256, 256), "paper", [256]),
        ((256, 256), "single", [256]),
        ((256, 256), "multi", [224, 256, 288]),
        ((256, 512), "paper", [256, 384, 512]),
        ((256, 512), "single", [384]),
        ((256, 512), "multi", [256, 384, 512]),
        ((256, 256), "384, 256", [384, 256]),
        ((224, 224), "multi", [224, 256]),  # S-32 raised to the input size, duplicate dropped
    ],
)
def test_paper_scales(train, spec, expected):
    assert ev.resolve_scales(spec, train, 224) == expected


def test_scale_errors_and_training_scale_fallback():
    with pytest.raises(
        ValueError, match="w.safetensors: test scale Q=200 is smaller than the network's input size 224"
    ):
        ev.resolve_scales("256,200", (256, 256), 224, "w.safetensors")
    with pytest.raises(ValueError, match="scales 'big': expected paper, single, multi or integers"):
        ev.resolve_scales("big", (256, 256), 224)
    from vggnet.configs import ModelConfig
    from vggnet.weights import WeightsMeta

    assert ev.train_scale(WeightsMeta(ModelConfig())) == (256, 256)  # torchvision's resize 256 for 224
    assert ev.train_scale(WeightsMeta(ModelConfig(), extra={"scale": [256, 512]})) == (256, 512)


def test_multi_scale_posteriors_are_the_mean_over_scales(weights):
    def run(scales: str) -> ev.Result:
        return ev.evaluate([weights[0]], "digits", EvalConfig(limit=12, flip=False, scales=scales), progress=False)

    multi, singles = run("32,48,64"), [run(q) for q in ("32", "48", "64")]
    torch.testing.assert_close(multi.probs, torch.stack([r.probs for r in singles]).mean(0))
    assert multi.scales == [[32, 48, 64]] and multi.images == 12


# -- ensembles ----------------------------------------------------------------------------------


def test_ensembles_average_posteriors(weights):
    cfg = EvalConfig(limit=10, scales="single")
    one, other = (ev.evaluate([w], "digits", cfg, progress=False) for w in weights)
    pair = ev.evaluate(weights, "digits", cfg, progress=False)
    twice = ev.evaluate([weights[0], weights[0]], "digits", cfg, progress=False)
    torch.testing.assert_close(pair.probs, (one.probs + other.probs) / 2)
    torch.testing.assert_close(twice.probs, one.probs)
    nets = ev.load_networks(ev.read_networks([weights[0]], "single"))
    imgs = {48: [image(48, 60)]}
    torch.testing.assert_close(ev.ensemble_posteriors(nets, imgs, cfg), ev.network_posteriors(nets[0], imgs, cfg))


# -- metrics ------------------------------------------------------------------------------------


def test_topk_error_confusion_and_per_class_accuracy_on_a_constructed_case():
    probs = torch.tensor(
        [
            [0.70, 0.10, 0.10, 0.05, 0.03, 0.02],  # true 0: rank 1
            [0.50, 0.20, 0.10, 0.10, 0.06, 0.04],  # true 1: rank 2
            [0.02, 0.50, 0.20, 0.10, 0.10, 0.08],  # true 0: rank 6, a top-5 miss
            [0.05, 0.10, 0.12, 0.08, 0.20, 0.45],  # true 3: rank 5
        ]
    )
    labels = torch.tensor([0, 1, 0, 3])
    assert metrics.topk_error(probs, labels, 1) == pytest.approx(75.0)
    assert metrics.topk_error(probs, labels, 2) == pytest.approx(50.0)
    assert metrics.topk_error(probs, labels, 5) == pytest.approx(25.0)
    assert metrics.topk_error(probs, labels, 4) == pytest.approx(50.0)
    assert metrics.topk_error(probs[:, :3], torch.tensor([0, 1, 0, 2]), 5) == 0.0  # k capped at 3 classes
    conf = metrics.confusion_matrix(probs, labels)
    assert conf.sum() == 4 and conf[0, 0] == conf[1, 0] == conf[0, 1] == conf[3, 5] == 1
    assert metrics.per_class_accuracy(conf) == [50.0, 0.0, None, 0.0, None, None]


# -- the digits report, files and the CLI -------------------------------------------------------


def test_scale_report_puts_single_and_multi_scale_side_by_side(weights):
    results, table = ev.scale_report([weights[0]], "digits", EvalConfig(limit=20), progress=False)
    single, multi = results
    assert single.scales == [[48]] and multi.scales == [[32, 48, 64]] and single.method == multi.method == "dense"
    direct = ev.evaluate([weights[0]], "digits", EvalConfig(limit=20, scales="32,48,64"), progress=False)
    assert multi.top1_error == direct.top1_error and multi.top5_error == direct.top5_error
    rows = table.splitlines()[2:]
    assert len(rows) == 2
    assert rows[0].startswith("| A (width 1/16) | [32, 64] | 48 | dense, flip | 20 |")
    assert rows[1].startswith("| A (width 1/16) | [32, 64] | 32,48,64 | dense, flip | 20 |")
    assert rows[1].endswith(f"| {multi.top1_error:.1f} | {multi.top5_error:.1f} |")


def test_results_table_has_a_top5_column_only_where_5_is_below_the_class_count(weights):
    ten = ev.evaluate([weights[0]], "digits", EvalConfig(limit=10, method="center"), progress=False)
    three = dataclasses.replace(ten, class_names=["a", "b", "c"])
    assert ev.results_table([ten]).splitlines()[0].endswith("| top-1 err (%) | top-5 err (%) |")
    assert ev.results_table([three]).splitlines()[0].endswith("| images | top-1 err (%) |")
    both = ev.results_table([ten, three]).splitlines()
    assert both[2].endswith(f"| {ten.top1_error:.1f} | {ten.top5_error:.1f} |")
    assert both[3].endswith(f"| {ten.top1_error:.1f} | - |")


def test_write_report_files(weights, tmp_path):
    result = ev.evaluate([weights[0]], "digits", EvalConfig(limit=10, method="center"), progress=False)
    written = ev.save_result(result, tmp_path / "out")
    assert [p.name for p in written] == [
        "center_q32-48-64_flip.json",
        "center_q32-48-64_flip.md",
        "center_q32-48-64_flip_confusion.png",
    ]
    data = json.loads(written[0].read_text())
    assert data["images"] == 10 and data["top1_error"] == result.top1_error and len(data["confusion"]) == 10
    assert sum(map(sum, data["confusion"])) == 10 and data["train_scales"] == [[32, 64]]
    assert "| 0 |" in written[1].read_text()
    assert Image.open(written[2]).format == "PNG"


def test_cli_evaluate_writes_into_the_run(weights, capsys):
    assert main(["evaluate", str(weights[0]), "--limit", "8", "--method", "multicrop", "--grid", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "multi-crop 2x2 (8/scale), flip | 8 |" in out and "top-1 error" in out
    assert (weights[0] / "eval" / "multicrop_q32-48-64_flip.json").is_file()


# -- bad input ----------------------------------------------------------------------------------


def make_folder(root, classes: int = 3, per_class: int = 2) -> None:
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(image(36, 44, 10 * c + i).permute(1, 2, 0).numpy()).save(root / f"c{c}" / f"{i}.png")


def test_unreadable_images_are_skipped_and_counted(tmp_path, capsys):
    make_folder(tmp_path / "data")
    bad = tmp_path / "data" / "c1" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    w = tmp_path / "w.safetensors"
    save_weights(tiny(classes=3), w, extra={"scale": [32, 32]})
    result = ev.evaluate([w], str(tmp_path / "data"), EvalConfig(batch_size=4), progress=False)
    assert result.skipped == [str(bad)] and result.images == 6
    assert sum(map(sum, result.confusion)) == 6
    lines = [line for line in capsys.readouterr().err.splitlines() if "broken.jpg" in line]
    assert len(lines) == 1 and lines[0].startswith(f"skipping unreadable image {bad}: ")
    assert main(["evaluate", str(w), "--data", str(tmp_path / "data"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "1 unreadable images skipped" in err
    # 3 classes: every label is among the top 5, so no top-5 column or figure is printed
    assert (
        "top-5" not in out
        and "| top-1 err (%) |\n" in out
        and f"top-1 error {result.top1_error:.2f}% on 6 images" in out
    )


def test_class_count_mismatch_fails_before_loading(tmp_path, monkeypatch):
    w = tmp_path / "w.safetensors"
    save_weights(tiny(classes=5), w)
    monkeypatch.setattr(ev.networks, "load_weights", lambda *a, **k: pytest.fail("tensors loaded before the check"))
    with pytest.raises(ValueError, match=r"w.safetensors: weights have 5 classes but data 'digits' \(val\) has 10"):
        ev.evaluate([w], "digits", EvalConfig())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scales", "24"], "test scale Q=24 is smaller than the network's input size 32"),
        (["--method", "tencrop"], "unknown method 'tencrop'; accepted: center, dense, multicrop, dense+multicrop"),
        (["--grid", "0"], "grid and batch_size must be at least 1"),
    ],
)
def test_cli_bad_options_exit_2_with_one_line(weights, capsys, args, message):
    assert main(["evaluate", str(weights[0]), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vggnet evaluate: error:") and message in err


def test_missing_weights_in_run_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "run folder without model.safetensors" in capsys.readouterr().err


# -- predict ------------------------------------------------------------------------------------


def test_imagenet_class_names_ship_with_the_package():
    names = ev.imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"


def test_predict_top5_with_imagenet_names_and_heatmap(tmp_path, capsys):
    model = tiny(classes=1000)
    w = tmp_path / "w.safetensors"
    save_weights(model, w, extra={"scale": [48, 48]})
    img = tmp_path / "cat.png"
    Image.fromarray(image(60, 75).permute(1, 2, 0).numpy()).save(img)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"junk")
    preds, skipped = ev.predict([img, bad], [w], EvalConfig(flip=False), heatmap=tmp_path / "heat.png")
    assert skipped == [str(bad)] and len(preds) == 1
    assert capsys.readouterr().err.startswith(f"skipping unreadable image {bad}: ")
    x = data.to_uint8_tensor(data.rescale(Image.open(img).convert("RGB"), 48))
    expected = ev.dense(model, [x], PRE)[0]
    values, indices = expected.topk(5)
    names = ev.imagenet_classes()
    assert [label for label, _ in preds[0].top] == [names[i] for i in indices]
    assert [p for _, p in preds[0].top] == pytest.approx(values.tolist(), rel=1e-5)
    assert preds[0].heatmap == str(tmp_path / "heat_cat.png")
    assert preds[0].protocol == "dense, Q=48"
    assert Image.open(preds[0].heatmap).size == (75, 60 + 18)  # an 18-pixel legend strip below the photo
    assert main(["predict", str(img), "--weights", str(w), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{img}  (dense, Q=48, flip)" and len(lines) == 4 and lines[1].startswith("  1. ")
    assert main(["predict", str(img), "--weights", str(w), "--method", "center", "--scales", "40,48"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{img}  (32x32 centre crop, Q=40,48, flip)"


def test_predict_and_evaluate_skip_a_sliver_whose_rescale_is_a_bomb(tmp_path, capsys):
    make_folder(tmp_path / "data")
    sliver = tmp_path / "data" / "c0" / "sliver.png"
    Image.new("RGB", (200000, 1), (10, 200, 30)).save(sliver)  # 200 k pixels; at Q=32: 6.4 M x 32
    w = tmp_path / "w.safetensors"
    save_weights(tiny(classes=3), w, extra={"scale": [32, 32]})
    preds, skipped = ev.predict([sliver, tmp_path / "data" / "c0" / "0.png"], [w], EvalConfig(flip=False))
    assert skipped == [str(sliver)] and len(preds) == 1
    assert capsys.readouterr().err.startswith(
        f"skipping unusable image {sliver}: 200000x1 pixels rescaled to a shorter side of 32 would be 6400000x32"
    )
    result = ev.evaluate([w], str(tmp_path / "data"), EvalConfig(batch_size=4), progress=False)
    assert result.skipped == [str(sliver)] and result.images == 6


def test_cli_predict_shows_progress_with_a_time_estimate_unless_quiet(tmp_path, capsys):
    w = tmp_path / "w.safetensors"
    save_weights(tiny(classes=3), w, extra={"scale": [32, 32]})
    images = []
    for i in range(3):
        images.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image(40, 36, i).permute(1, 2, 0).numpy()).save(images[-1])
    assert main(["predict", *images, "--weights", str(w), "--top", "1"]) == 0
    err = capsys.readouterr().err
    assert "predict: 100%" in err and "3/3 [" in err and "img/s]" in err  # tqdm: elapsed<remaining, rate
    assert main(["predict", *images, "--weights", str(w), "--top", "1", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_heatmap_overlay_puts_the_hot_cell_where_it_belongs():
    img = Image.new("RGB", (128, 64), (128, 128, 128))
    heat = torch.tensor([[0.0, 0.0, 0.0, 1.0]])  # (1, 4): the right-most window of a 32-px net at Q=64
    out = np.asarray(ev.heatmap_overlay(img, heat, 64, window=32), dtype=np.int32)
    red_minus_blue = out[..., 0] - out[..., 2]
    assert red_minus_blue[:, 112:].mean() > 50 and red_minus_blue[:, :64].mean() < -50


def test_a_dataset_object_evaluates_like_its_spec(weights):
    from vggnet.data import open_dataset

    cfg = EvalConfig(limit=12, flip=False, scales="32,48")
    by_spec = ev.evaluate([weights[0]], "digits", cfg, progress=False)
    # evaluate opens the digits at the largest training scale (64): the same images as an object
    by_object = ev.evaluate([weights[0]], open_dataset("digits", "val", 64), cfg, progress=False)
    assert torch.equal(by_object.probs, by_spec.probs) and by_object.images == 12
