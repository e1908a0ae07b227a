"""The linear probe: features of a frozen net at a named layer, a logistic regression, errors like `evaluate`'s."""

import json
import shutil

import numpy as np
import pytest
import torch

from test_finetune import three_classes
from vggnet import build
from vggnet.cli import main
from vggnet.data import open_dataset
from vggnet.features import features_at
from vggnet.probe import linear_probe, probe_features
from vggnet.weights import Preprocessing, save_weights

W = 1 / 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    data = three_classes(root / "photos", per_class=6)
    model = build("B", width=W, num_classes=10, input_size=32).eval()
    save_weights(model, root / "w.safetensors", preprocessing=Preprocessing.torchvision())
    return data, str(root / "w.safetensors"), model


def test_pooled_conv_features_are_the_taps_channel_means(setup):
    data, _, model = setup
    feats, labels, skipped = probe_features(
        model, Preprocessing.torchvision(), open_dataset(data, "val"), "conv5_2", 36
    )
    assert feats.shape == (6, 32) and labels.tolist() == [0, 0, 1, 1, 2, 2] and skipped == []
    image, _ = open_dataset(data, "val")[3]  # 36x36: rescaled to 36, centre crop 32 at (2, 2)
    x = torch.from_numpy(np.asarray(image.crop((2, 2, 34, 34)), dtype=np.float32)).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        tap = features_at(model, x, ["conv5_2"], preprocessing=Preprocessing.torchvision())["conv5_2"]
    np.testing.assert_allclose(feats[3], tap.mean(dim=(2, 3))[0].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer, dim", [("fc7", 256), ("relu5_2", 32)])
def test_probe_separates_colour_classes_and_reports_like_evaluate(setup, layer, dim):
    data, weights, _ = setup
    r = linear_probe(weights, data, layer, scale=36, progress=False)
    assert (r.layer, r.dim, r.train_images, r.images, r.class_names) == (layer, dim, 18, 6, ["blue", "green", "red"])
    assert r.top1_error == 0.0 and r.top5_error == 0.0 and r.per_class_accuracy == [100.0, 100.0, 100.0]
    assert np.asarray(r.confusion).trace() == 6 and r.scores.shape == (6, 3)
    torch.testing.assert_close(r.scores.sum(1), torch.ones(6))


def test_cli_probe_writes_its_report_and_refuses_bad_input(setup, tmp_path, capsys):
    data, weights, _ = setup
    assert (
        main(["probe", data, "--weights", weights, "--layer", "fc6", "--scale", "36", "--out", str(tmp_path / "o")])
        == 0
    )
    out = capsys.readouterr().out
    assert "| B (width 1/16) | fc6 | 256 |" in out and out.count("top-1 error 0.00% on 6 images") == 1
    assert "top-5" not in out  # 3 classes: every label is among the top 5
    saved = json.loads((tmp_path / "o" / "probe_fc6.json").read_text())
    assert saved["per_class_accuracy"] == [100.0, 100.0, 100.0] and (tmp_path / "o" / "probe_fc6.md").is_file()
    one = tmp_path / "one"
    three_classes(one, per_class=2)
    (one / "train" / "green" / "1.png").unlink()
    no_val = tmp_path / "no_val"
    three_classes(no_val, per_class=2)
    shutil.rmtree(no_val / "val")
    for args, message in [
        ([str(no_val)], f"{no_val}: no val/ folder beside train/; a probe is tested on photos it was not fitted on"),
        ([data, "--layer", "fc9"], "--layer 'fc9' is no layer of these weights"),
        ([data, "--layer", "fc9"], "accepted: conv1_1, relu1_1, conv1_2"),
        ([str(one)], f"{one / 'train' / 'green'}: class folder holds 1 image; training needs at least 2 images"),
    ]:
        assert main(["probe", *args, "--weights", weights, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("vggnet probe: error:") and message in err, err
        assert not (tmp_path / "bad").exists()


def test_fast_features_match_and_a_second_probe_reads_them_back(setup, monkeypatch):
    data, weights, model = setup
    val = open_dataset(data, "val")
    pre = Preprocessing.torchvision()
    plain, labels, _ = probe_features(model, pre, val, "fc7", 36, cache=False)
    fast, fast_labels, _ = probe_features(model, pre, val, "fc7", 36, fast=True, cache=False)
    # the fast path (Winograd convs, compiled FC kernels) is within about 1e-5 of the plain path, relative to the scale
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-5 * np.abs(plain).max())
    assert fast_labels.tolist() == labels.tolist()
    import vggnet.frozen

    computed = []
    compute = vggnet.frozen.compute_outputs
    monkeypatch.setattr(vggnet.frozen, "compute_outputs", lambda *a, **k: computed.append(1) or compute(*a, **k))
    first, _, _ = probe_features(model, pre, val, "relu5_2", 36, fast=True)
    second, _, _ = probe_features(model, pre, val, "relu5_2", 36, fast=True)
    assert np.array_equal(first, second) and computed == [1]  # the second read back: the network ran once
    again, _, _ = probe_features(model, pre, val, "relu5_2", 36, cache=False)
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-5 * np.abs(again).max())


def test_cli_probe_runs_on_the_auto_device_and_fast():
    from vggnet.cli import build_parser

    args = build_parser().parse_args(["probe", "photos", "--weights", "w.safetensors", "--fast"])
    assert (args.device, args.fast, args.cache, args.out) == ("auto", True, True, None)
