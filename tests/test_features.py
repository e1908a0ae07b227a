import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vggnet import build
from vggnet.cli import main
from vggnet.features import PerceptualLoss, block_outputs, features_at, gram, layer_names
from vggnet.weights import Preprocessing, save_weights

W = 1 / 16


# Output shapes at 224x224, full width, for the layers perceptual losses use (channels, side).
SHAPES = {
    "D": {"relu1_2": (64, 224), "relu2_2": (128, 112), "relu3_3": (256, 56), "relu4_3": (512, 28), "conv5_3": (512, 14), "pool5": (512, 7)},
    "E": {"relu1_2": (64, 224), "relu2_2": (128, 112), "relu3_4": (256, 56), "relu4_4": (512, 28), "conv5_4": (512, 14), "pool5": (512, 7)},
}  # fmt: skip


@pytest.mark.parametrize("config", ["D", "E", "D_bn", "E_bn"])
def test_layer_shapes_full_size(config):
    with torch.device("meta"):  # shapes only: the full-size network without allocating it
        model = build(config)
        out = features_at(model, torch.empty(1, 3, 224, 224), list(SHAPES[config[0]]) + ["fc6", "fc8"])
    for name, (c, side) in SHAPES[config[0]].items():
        assert tuple(out[name].shape) == (1, c, side, side), name
    assert tuple(out["fc6"].shape) == (1, 4096) and tuple(out["fc8"].shape) == (1, 1000)


def test_names_for_every_variant():
    assert block_outputs(build("D", width=W)) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    assert block_outputs(build("A", width=W)) == ["relu1_1", "relu2_1", "relu3_2", "relu4_2", "relu5_2"]
    names = layer_names(build("A-LRN_bn", width=W))
    assert names[:5] == ["conv1_1", "bn1_1", "relu1_1", "norm1", "pool1"] and names[-2:] == ["drop7", "fc8"]
    assert layer_names(build("C", width=W, head="gap"))[-1] == "fc"
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['relu3_3'\] for VGG B; available: conv1_1, relu1_1"):
        features_at(build("B", width=W), torch.rand(1, 3, 32, 32), ["relu1_2", "relu3_3"])


def test_taps_equal_the_network_sliced_and_conv_taps_are_pre_relu():
    model = build("D_bn", width=W).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = features_at(model, x, ["conv1_1", "bn1_1", "relu1_1", "relu2_2", "fc7"])
        conv = model.features[0]
        assert torch.equal(out["conv1_1"], F.conv2d(x, conv.weight, conv.bias, padding=1))
        assert (out["bn1_1"] < 0).any()  # the in-place ReLU after it did not overwrite the tap
        assert torch.equal(out["relu1_1"], out["bn1_1"].clamp(min=0))
        assert torch.equal(out["relu2_2"], model.features[:13](x))
        pooled = torch.flatten(model.avgpool(model.features(x)), 1)
        assert torch.equal(out["fc7"], model.classifier[:4](pooled))
        assert list(out) == ["conv1_1", "bn1_1", "relu1_1", "relu2_2", "fc7"]


def test_only_as_deep_as_needed():
    model = build("E", width=W).eval()
    ran: list[int] = []
    for i, m in enumerate(model.features):
        m.register_forward_hook(lambda *_, i=i: ran.append(i))
    model.classifier.register_forward_hook(lambda *_: ran.append(-1))
    features_at(model, torch.rand(1, 3, 32, 32), ["relu1_2", "conv1_1"])
    assert ran == [0, 1, 2, 3]  # conv1_1 relu1_1 conv1_2 relu1_2, nothing after


def test_preprocessing_is_applied_when_given():
    model = build("A", width=W).eval()
    x = torch.rand(1, 3, 32, 32)
    pre = Preprocessing.caffe()
    with torch.no_grad():
        a = features_at(model, x, ["pool1"], preprocessing=pre)["pool1"]
        b = features_at(model, pre(x), ["pool1"])["pool1"]
        assert torch.equal(a, b)


def test_perceptual_loss_terms(tmp_path):
    model = build("D", width=W).eval()
    path = tmp_path / "caffe_style.safetensors"
    save_weights(model, path, preprocessing=Preprocessing.caffe())
    loss = PerceptualLoss(
        path, content_layers=["relu2_2"], style_layers={"relu1_2": 2.0, "relu3_3": 0.5}, style_weight=10.0
    )
    assert loss.preprocessing == Preprocessing.caffe()  # the weights' own, recorded at import
    assert len(loss.features) == 16  # conv1_1 ... relu3_3: nothing deeper is kept
    x, content, style = torch.rand(3, 2, 3, 48, 48).unbind(0)
    terms = loss.terms(x, content=content, style=style)
    # The same figures by hand, from the network applied to caffe-preprocessed (BGR, 0-255) inputs.
    with torch.no_grad():
        f = {k: features_at(model, v, ["relu1_2", "relu2_2", "relu3_3"], Preprocessing.caffe()) for k, v in
             {"x": x, "c": content, "s": style}.items()}  # fmt: skip
    expected_content = F.mse_loss(f["x"]["relu2_2"], f["c"]["relu2_2"])
    expected_style = 10 * sum(
        w * F.mse_loss(gram(f["x"][k]), gram(f["s"][k])) for k, w in (("relu1_2", 2.0), ("relu3_3", 0.5))
    )
    torch.testing.assert_close(terms["content"], expected_content)
    torch.testing.assert_close(terms["style"], expected_style)
    assert loss(content, content=content, style=content).item() == 0.0


def test_perceptual_loss_is_frozen_and_gives_input_gradients():
    model = build("A_bn", width=W)
    loss = PerceptualLoss(model, content_layers=["relu2_1"], style_layers=["relu1_1"]).train()
    assert not loss.features.training and not any(p.requires_grad for p in loss.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the caller's model is left as it was
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss.set_targets(content=torch.rand(1, 3, 32, 32), style=torch.rand(1, 3, 32, 32))
    loss(x).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no style target"):
        PerceptualLoss(model, content_layers=["relu1_1"], style_layers=["relu1_1"])(x, content=x)


def test_gram_matrix():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)  # C=2, H=1, W=2
    assert torch.equal(gram(f), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)


def test_cli_features_writes_npz_and_skips_unreadable(tmp_path, capsys):
    model = build("D", width=W).eval()
    weights = tmp_path / "w.safetensors"
    save_weights(model, weights)
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(80, 60), (50, 70)]):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "f.npz"
    code = main(["features", str(paths[0]), str(tmp_path / "broken.jpg"), str(paths[1]), "--weights", str(weights),
                 "--layers", "relu1_2,relu4_3", "--out", str(out), "--size", "32", "--quiet"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "2 image(s)" in captured.out and "skipped 1 unreadable" in captured.out
    assert captured.err.startswith(f"skipping unreadable image {tmp_path / 'broken.jpg'}: ")  # one line, no warning
    assert captured.err.count("\n") == 1
    data = np.load(out)
    assert data["relu1_2"].shape == (2, 4, 32, 32) and data["relu4_3"].shape == (2, 32, 4, 4)
    assert [p.rsplit("/", 1)[-1] for p in data["paths"]] == ["im0.png", "im1.png"]
    assert main(["features", str(paths[0]), "--weights", str(weights), "--layers", "relu9_9", "--out", str(out)]) == 2
    assert "unknown layer(s) ['relu9_9']" in capsys.readouterr().err


# `vggnet features` in a child whose .npz writer dies after writing part of the file, by SIGKILL or SIGTERM.
DYING_WRITE = """
import os, signal, sys
import numpy as np
def dying(f, *args, **kwargs):
    f.write(b"half an npz" * 1000)
    f.flush()
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
np.savez = dying
from vggnet.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_killed_features_write_leaves_no_temporary_file_behind(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    weights = tmp_path / "w.safetensors"
    save_weights(build("A", width=W, num_classes=3, input_size=32), weights)
    Image.new("RGB", (40, 40), (10, 90, 200)).save(tmp_path / "x.png")
    out = tmp_path / "f.npz"
    args = ["features", str(tmp_path / "x.png"), "--weights", str(weights), "--layers", "relu1_1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}

    def hidden() -> list[str]:
        return sorted(p.name for p in tmp_path.glob(".f.npz.*"))

    terminated = subprocess.run([sys.executable, "-c", DYING_WRITE, "SIGTERM", *args], env=env, capture_output=True)
    assert terminated.returncode == 128 + signal.SIGTERM and not out.exists()
    assert hidden() == []  # the terminated write removed its own temporary file
    killed = subprocess.run([sys.executable, "-c", DYING_WRITE, "SIGKILL", *args], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL and not out.exists()
    left = hidden()
    assert len(left) == 1 and left[0].endswith(".tmp")  # nothing can clean up after a SIGKILL at once
    assert main(args) == 0 and out.exists()
    assert hidden() == []  # the next write to f.npz removed the dead writer's file
    assert np.load(out)["relu1_1"].shape == (1, 4, 224, 224)


def test_images_kept_at_their_size_are_refused_past_the_activation_budget(tmp_path, capsys, monkeypatch):
    from helpers import one_line_refusal

    weights = tmp_path / "w.safetensors"
    save_weights(build("A", width=W, num_classes=3, input_size=32), weights)
    Image.new("RGB", (1000, 600), (10, 90, 200)).save(tmp_path / "big.png")
    out = tmp_path / "f.npz"
    args = ["features", str(tmp_path / "big.png"), "--weights", str(weights), "--layers", "relu1_1", "--out", str(out)]
    monkeypatch.setenv("VGGNET_MAX_ACTIVATION_BYTES", str(16 << 20))  # a narrow net's budget, scaled down
    status = main([*args, "--size", "0"])
    expected = f"{tmp_path / 'big.png'}: 1 image(s) of 1000x600 in a batch (resize them with --size): their activations need 18.3 MiB"
    one_line_refusal(status, capsys.readouterr().err, "features", expected, "VGGNET_MAX_ACTIVATION_BYTES")
    assert not out.exists()
    assert main(args) == 0 and np.load(out)["relu1_1"].shape == (1, 4, 224, 224)  # resized, as by default
