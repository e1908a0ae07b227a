"""Fine-tuning from pretrained weights: every source through one path, new heads, frozen layers, per-group LRs,
the weights' own input, and what a run records about where it started."""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from test_train import final_state, history, make_folder, tiny
from vggnet import build
from vggnet.cli import main
from vggnet.configs import TrainConfig
from vggnet.data import EvalTransform
from vggnet.train import (
    FrozenBatchNorm2d,
    PlateauSchedule,
    build_model,
    copy_pretrained,
    freeze,
    load_checkpoint,
    open_pretrained,
    param_groups,
    parse_freeze,
    start_config,
    to_network_input,
    train,
)
from vggnet.train.finetune import rgb255_mean
from vggnet.train.schedule import set_lr
from vggnet.weights import Preprocessing, load_weights, read_meta, save_weights
from weights_files import keras_layers, to_timm, write_caffemodel, write_keras_h5

W = 1 / 16


def three_classes(root, per_class: int = 4, size: int = 36) -> str:
    """ROOT/{train,val}/{blue,green,red}: colour classes with noise."""
    rng = np.random.default_rng(1)
    for split, n in (("train", per_class), ("val", 2)):
        for c, name in enumerate(("blue", "green", "red")):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
                a[..., 2 - c] += 150
                Image.fromarray(a).save(root / split / name / f"{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return make_folder(tmp_path_factory.mktemp("data"))


def source_file(tmp_path, kind: str, model) -> str:
    """`model` written the way `kind` publishes weights."""
    if kind == "vggnet":
        save_weights(model, tmp_path / "w.safetensors", class_names=[f"c{i}" for i in range(model.cfg.num_classes)])
        return str(tmp_path / "w.safetensors")
    if kind == "torchvision":
        torch.save(model.state_dict(), tmp_path / "w.pth")
        return str(tmp_path / "w.pth")
    if kind == "timm":
        torch.save(to_timm(model), tmp_path / "w.pth")
        return str(tmp_path / "w.pth")
    if kind.startswith("keras"):
        write_keras_h5(tmp_path / "w.h5", keras_layers(model, top=kind == "keras"), "keras1")
        return str(tmp_path / "w.h5")
    write_caffemodel(tmp_path / "w.caffemodel", model, "v1")
    return str(tmp_path / "w.caffemodel")


# -- every source through the same path ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vggnet", "torchvision", "timm", "keras", "keras_notop", "caffe"])
def test_every_source_seeds_a_three_class_net(tmp_path, kind):
    source = build("D", width=W, num_classes=1000, input_size=64).eval()  # an ImageNet-shaped classifier
    path = source_file(tmp_path, kind, source)
    start = open_pretrained(path)
    cfg = start_config(TrainConfig(crop=64), start)  # --arch left out: the weights' own configuration
    assert (cfg.arch, cfg.width) == ("D", W)
    model = build_model(cfg, 3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    copied = copy_pretrained(model, start.model, path, ["a", "b", "c"], start.meta.class_names)
    own, theirs = model.state_dict(), source.state_dict()
    top = kind != "keras_notop"
    expected = [k for k in own if k.startswith("features.") or (top and k.startswith(("classifier.0", "classifier.3")))]
    assert copied == expected
    for key in own:
        if key in copied:
            assert torch.equal(own[key], theirs[key]), key
        else:
            assert torch.equal(own[key], fresh[key]), key  # left as initialised: the new head
    assert own["classifier.6.weight"].shape == (3, 256)
    caffe_like = kind in ("keras", "keras_notop", "caffe")
    assert start.meta.preprocessing == (Preprocessing.caffe() if caffe_like else Preprocessing())


def test_gap_head_replaces_the_whole_fc_stack(tmp_path):
    source = build("D_bn", width=W, num_classes=1000, input_size=64)
    path = source_file(tmp_path, "torchvision", source)
    start = open_pretrained(path)
    cfg = start_config(TrainConfig(crop=32, head="gap"), start)  # no FC6: any crop will do
    model = build_model(cfg, 3)
    copied = copy_pretrained(model, start.model, path)
    assert model.cfg.batch_norm and model.cfg.head == "gap"
    assert copied == [k for k in model.state_dict() if k.startswith("features.")]


def test_same_classes_keep_fc8_other_names_do_not(tmp_path):
    source = build("A", width=W, num_classes=3, input_size=32)
    path = source_file(tmp_path, "vggnet", source)  # classes c0, c1, c2
    start = open_pretrained(path)
    model = build_model(start_config(TrainConfig(crop=32), start), 3)
    assert "classifier.6.weight" in copy_pretrained(model, start.model, path, ["c0", "c1", "c2"], ["c0", "c1", "c2"])
    assert "classifier.6.weight" not in copy_pretrained(model, start.model, path, ["x", "y", "z"], ["c0", "c1", "c2"])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"arch": "E"}, r"copies net A into a deeper net or a net of the same configuration; got D -> E"),
        ({"width": 0.5}, "--width 0.5 differs from the weights' width 0.0625"),
        ({"crop": 96}, r"FC6 of these weights reads a 2x2 grid .* train with --crop 64, or .* --head gap"),
    ],
)
def test_weights_that_cannot_seed_the_run_are_refused(tmp_path, changes, message):
    start = open_pretrained(source_file(tmp_path, "torchvision", build("D", width=W, input_size=64)))
    with pytest.raises(ValueError, match=message):
        start_config(TrainConfig(**{"crop": 64, **changes}), start)


# -- freezing --------------------------------------------------------------------------------------------------


def test_freeze_specs_by_paper_names():
    model = build("D_bn", width=W, num_classes=3)
    assert parse_freeze(model, "none") == []
    assert parse_freeze(model, "conv1_1-conv2_2,fc7") == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "fc7"]
    assert len(parse_freeze(model, "features")) == 13 and parse_freeze(model, "classifier") == ["fc6", "fc7", "fc8"]
    assert parse_freeze(model, "conv5_3-fc7") == ["conv5_3", "fc6", "fc7"]
    for spec, message in [
        (
            "conv6_1",
            r"no layer 'conv6_1' in this VGG; accepted: none, features, classifier, a layer \(conv1_1 ... fc8\)",
        ),
        ("conv2_1-conv1_1", "runs backwards"),
        ("features,classifier", "leaves nothing to train; leave at least the last layer \\(fc8\\) out"),
        ("relu1_1", "no layer 'relu1_1'"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_freeze(model, spec)


def test_frozen_batchnorm_stays_in_eval_mode_and_gets_no_gradient():
    model = build("A_bn", width=W, num_classes=3, input_size=32)
    assert freeze(model, "conv1_1-conv2_1") == ["conv1_1", "conv2_1"]
    model.train()
    bn1, bn3 = model.features[1], model.features[9]  # bn1_1 (frozen), bn3_1 (not)
    assert isinstance(bn1, FrozenBatchNorm2d) and not bn1.training and bn3.training
    before = bn1.running_mean.clone()
    model(torch.rand(4, 3, 32, 32)).sum().backward()
    assert torch.equal(bn1.running_mean, before) and bn1.weight.grad is None and model.features[0].weight.grad is None
    assert model.features[8].weight.grad is not None  # conv3_1 learns
    assert set(model.state_dict()) == set(build("A_bn", width=W, num_classes=3, input_size=32).state_dict())


def test_parameter_groups_scale_with_the_schedule():
    model = build("A", width=W, num_classes=3, input_size=32)
    freeze(model, "conv1_1")
    new = ["classifier.6.weight", "classifier.6.bias"]
    groups = param_groups(model, new, backbone_scale=0.1)
    assert [g["name"] for g in groups] == ["new", "pretrained"] and len(groups[0]["params"]) == 2
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    optimizer = SimpleNamespace(param_groups=groups)  # all set_lr reads
    schedule = PlateauSchedule(0.01, patience=0)
    set_lr(optimizer, schedule.lr)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.001])
    schedule.step(1.0), schedule.step(2.0)  # a plateau: LR / 10, for both groups
    set_lr(optimizer, schedule.lr)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.001, 0.0001])


# -- the weights' own input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pre", [Preprocessing.torchvision(), Preprocessing.caffe()], ids=["torchvision", "caffe"])
def test_training_input_is_the_weights_preprocessing(pre):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    ours = to_network_input(EvalTransform(40, 32, rgb255_mean(pre)), pre)(image)
    crop = torch.from_numpy(np.asarray(image.crop((8, 4, 40, 36)), dtype=np.float32)).permute(2, 0, 1)
    torch.testing.assert_close(ours, pre(crop[None] / 255.0)[0], atol=1e-4, rtol=1e-5)
    paper = Preprocessing("RGB", 255.0, (120.0, 110.0, 100.0), (1.0, 1.0, 1.0))
    transform = EvalTransform(40, 32, rgb255_mean(paper))
    assert to_network_input(transform, paper) is transform and rgb255_mean(paper) == [120.0, 110.0, 100.0]


# -- whole runs -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_frozen_layers_are_bit_identical_after_training_and_the_run_records_its_start(folder, tmp_path):
    source = build("A_bn", width=W, num_classes=1000, input_size=32)
    for m in source.modules():  # BN statistics that training in train mode would move
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
    path = source_file(tmp_path, "torchvision", source)
    cfg = tiny(folder, tmp_path / "run", init_from=path, freeze="features", epochs=2, backbone_lr_scale=0.1)
    run = train(cfg)
    state, theirs = final_state(run), source.state_dict()
    best = load_weights(run / "model.safetensors")[0].state_dict()
    for key, value in theirs.items():
        if key.startswith("features."):
            assert torch.equal(best[key], value), key  # weights, BN affine and running statistics
            assert key not in state or "num_batches" in key  # the checkpoint leaves them to the --init-from file
    assert not torch.equal(state["classifier.0.weight"], theirs["classifier.0.weight"])  # FC6 learned
    assert state["classifier.6.weight"].shape == (2, 256)
    meta = read_meta(run / "model.safetensors")
    assert meta.preprocessing == Preprocessing.torchvision() and meta.class_names == ["blue", "red"]
    origin = meta.extra["init_from"]
    assert origin["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert origin["source"] == "torchvision" and origin["new_layers"] == ["fc8"] and origin["num_classes"] == 1000
    init = json.loads((run / "init.json").read_text())
    assert init["new"] == ["classifier.6.weight", "classifier.6.bias"] and init["preprocessing"]["std"] == list(
        Preprocessing.torchvision().std
    )
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert [g["lr_scale"] for g in ckpt["optimizer"]["param_groups"]] == [1.0, 0.1]
    resumed = train(TrainConfig(**{**json.loads((run / "config.json").read_text()), "resume": str(run), "epochs": 3}))
    after = load_weights(run / "model.safetensors")[0].state_dict()
    assert resumed == run and torch.equal(after["features.1.running_var"], theirs["features.1.running_var"])


@pytest.mark.slow
def test_a_frozen_runs_checkpoint_holds_only_what_trains_and_resumes_exactly_from_the_init_file(folder, tmp_path):
    source = build("A_bn", width=W, num_classes=1000, input_size=32)
    path = Path(source_file(tmp_path, "torchvision", source))
    cfg = tiny(folder, tmp_path / "whole", init_from=str(path), freeze="features", epochs=3)
    whole = train(cfg)
    half = train(dataclasses.replace(cfg, out=str(tmp_path / "half"), epochs=2))
    ckpt = load_checkpoint(half / "last.pt")
    features = {k for k in source.state_dict() if k.startswith("features.") and "num_batches" not in k}
    assert set(ckpt["omitted"]) == features and set(ckpt["model"]) == set(source.state_dict()) - features
    again = dict(json.loads((half / "config.json").read_text()), resume=str(half), epochs=3)
    assert train(TrainConfig(**again)) == half
    a, b = final_state(whole), final_state(half)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the interrupted run ends identical
    x, y = (load_weights(run / "model.safetensors")[0].state_dict() for run in (whole, half))
    assert all(torch.equal(x[k], y[k]) for k in x)
    data = path.read_bytes()
    path.write_bytes(data[:-4] + bytes(4))  # another file under the recorded name
    with pytest.raises(
        ValueError, match=r"half: its checkpoint leaves the frozen layers to --init-from .* which changed"
    ):
        train(TrainConfig(**{**again, "epochs": 4}))
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"half: its checkpoint leaves the frozen layers .* which is missing"):
        train(TrainConfig(**{**again, "epochs": 4}))
    assert [h["epoch"] for h in history(half)] == [1, 2, 3]  # nothing written by the refused resumes


def test_cli_fine_tunes_a_1000_class_torchvision_file_into_three_classes(tmp_path, capsys):
    data = three_classes(tmp_path / "photos")
    torch.save(build("D", width=W, num_classes=1000, input_size=32).state_dict(), tmp_path / "vgg16.pth")
    common = ["--width", "0.0625", "--crop", "32", "--scale", "36", "--batch", "4", "--epochs", "1", "--workers", "0"]
    common += ["--quiet", "--threads", "1", "--dropout", "0"]
    args = ["train", data, "--init-from", str(tmp_path / "vgg16.pth"), "--out", str(tmp_path / "run"), *common]
    assert main([*args, "--freeze", "conv1_1-fc7", "--lr", "0.05"]) == 0
    meta = read_meta(tmp_path / "run" / "model.safetensors")
    assert (meta.model.arch, meta.model.num_classes, meta.class_names) == ("D", 3, ["blue", "green", "red"])
    assert "new layers: fc8" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "photos" / "val")  # photos/train alone: validated on the training photos, said once
    args = ["train", data, "--init-from", str(tmp_path / "vgg16.pth"), "--out", str(tmp_path / "run2"), *common]
    assert main(args) == 0
    assert f"{data} has no val/ split: validating on the training images" in capsys.readouterr().err


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("conv9", [], r"match no Table 1 configuration"),
        ("ok", ["--freeze", "features,fc6-fc8"], "leaves nothing to train"),
        ("ok", ["--freeze", "conv9_9"], "no layer 'conv9_9' in this VGG; accepted: none, features"),
        ("one-image", [], "class folder holds 1 image; training needs at least 2 images per class"),
    ],
    ids=["unmatched-weights", "nothing-to-train", "unknown-layer", "one-image-class"],
)
def test_bad_fine_tuning_input_fails_in_one_line_writing_nothing(tmp_path, capsys, setup, args, message):
    data = three_classes(tmp_path / "photos")
    state = build("A", width=W, num_classes=5, input_size=32).state_dict()
    if setup == "conv9":  # nine 3x3 convs: no column of Table 1
        state["features.30.weight"], state["features.30.bias"] = torch.zeros(32, 32, 3, 3), torch.zeros(32)
    torch.save(state, tmp_path / "w.pth")
    if setup == "one-image":
        for extra in list((tmp_path / "photos" / "train" / "red").iterdir())[1:]:
            extra.unlink()
    out = tmp_path / "run"
    argv = ["train", data, "--init-from", str(tmp_path / "w.pth"), "--out", str(out), "--crop", "32", "--scale", "36"]
    assert main([*argv, "--batch", "4", "--quiet", "--workers", "0", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vggnet train: error:") and message in err, err
    assert not out.exists()
