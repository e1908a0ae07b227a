"""Frozen means free: the prefix fixed by --freeze runs as inference, its outputs cached; the batch fits a small folder."""

import json
import os

import pytest
import torch

from test_train import final_state, history, make_folder, tiny
from vggnet import build
from vggnet.cli import main
from vggnet.data import EvalTransform, Transformed, open_dataset
from vggnet.frozen import Prefix, Rest, Split, cached_outputs, output_shape, prefix_length, prefix_state, stages
from vggnet.train import freeze, parse_freeze, train
from vggnet.weights import save_weights

W = 1 / 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return make_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """A 1000-class A_bn of width 1/16 with BN statistics away from 0/1, so folding them matters."""
    model = build("A_bn", width=W, num_classes=1000, input_size=32)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "w.safetensors"
    save_weights(model, path, class_names=[f"c{i}" for i in range(1000)])
    return str(path)


@pytest.mark.parametrize(
    "arch, head, spec, last",
    [
        ("A", "fc", "conv1_1-fc7", "relu7"),  # drop7 trains with FC8
        ("A", "fc", "conv1_1-fc6", "relu6"),
        ("A", "fc", "features", "flatten"),
        ("A", "fc", "conv1_1-conv2_1", "pool2"),
        ("A_bn", "fc", "conv1_1-conv3_1", "relu3_1"),
        ("A", "conv", "conv1_1-fc7", "relu7"),
        ("A", "gap", "features", "flatten"),
        ("A", "fc", "fc6,fc7", None),  # nothing fixed from the input: no prefix
        ("A", "fc", "conv2_1-fc7", None),
    ],
)
def test_the_prefix_ends_before_the_first_trained_layer(arch, head, spec, last):
    with torch.device("meta"):
        model = build(arch, width=W, head=head, input_size=32)
    n = prefix_length(model, parse_freeze(model, spec))
    assert (stages(model)[n - 1][0] if n else None) == last


@pytest.mark.parametrize("spec", ["conv1_1-fc7", "conv1_1-conv3_1", "features"])
def test_fast_prefix_then_rest_gives_the_models_logits(spec):
    model = build("A_bn", width=W, num_classes=5, input_size=32)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
    n = prefix_length(model, freeze(model, spec))
    model.eval()
    x = torch.randn(3, 3, 40, 36)
    split = Split(Prefix(model, n), Rest(model, n)).train()  # the prefix stays in eval mode whatever it is told
    assert not split.prefix.training and split.rest.training
    split.eval()  # (the rest's Dropout off, to compare)
    with torch.no_grad():
        want = model(x)
    got = split(x)
    # fp32 Winograd (the fast path) is within about 1e-5 of the direct convs, relative to the outputs' scale
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())
    assert not torch.is_inference(got)  # trained layers can save it for their backward pass


def test_center_crops_train_the_same_head_with_the_cache_without_it_and_without_the_prefix(
    folder, weights, tmp_path, monkeypatch, capsys
):
    common = dict(init_from=weights, freeze="conv1_1-fc7", augment="center", epochs=2, dropout=0.5, quiet=False)
    cached = train(tiny(folder, tmp_path / "cached", **common))
    err = capsys.readouterr().err
    assert "frozen conv1_1-fc7: outputs of the fixed crops, train 16 images wrote" in err
    assert f"writing the resume checkpoint {cached / 'last.pt'} (" in err  # seconds of writing for VGG16: said first
    assert f"writing the best epoch's weights {cached / 'model.safetensors'} (" in err
    again = train(tiny(folder, tmp_path / "again", **common))
    assert "train 16 images read" in capsys.readouterr().err
    uncached = train(tiny(folder, tmp_path / "uncached", frozen_cache=False, **common))
    monkeypatch.setattr("vggnet.train.state.prefix_length", lambda model, frozen: 0)  # the whole model each step
    plain = train(tiny(folder, tmp_path / "plain", **{**common, "dropout": 0.0}))
    monkeypatch.undo()
    no_dropout = train(tiny(folder, tmp_path / "no_dropout", **{**common, "dropout": 0.0}))
    a, b, c = final_state(cached), final_state(again), final_state(uncached)
    for key in a:
        assert torch.equal(a[key], b[key]), key  # read back: the very values computed
        torch.testing.assert_close(a[key], c[key], rtol=0, atol=1e-6)
    # the frozen prefix on the fast path vs the model's own layers in train mode: fp32 Winograd rounding only
    d, e = final_state(plain), final_state(no_dropout)
    for key in d:
        torch.testing.assert_close(d[key], e[key], rtol=0, atol=1e-4)
    assert not torch.equal(d["classifier.6.weight"], a["classifier.6.weight"])  # dropout on FC7 did act
    assert [h["steps"] for h in history(cached)] == [4, 8]


def test_cached_outputs_equal_the_recomputed_ones_and_a_changed_file_is_seen(tmp_path, weights):
    from vggnet.train import open_pretrained, start_config
    from vggnet.train.initialize import build_model, copy_pretrained

    data = make_folder(tmp_path / "data")
    start = open_pretrained(weights)
    model = build_model(start_config(tiny(data, tmp_path / "r"), start), 2)
    copy_pretrained(model, start.model, weights, ["blue", "red"], start.meta.class_names)
    n = prefix_length(model, freeze(model, "conv1_1-fc7"))
    base = open_dataset(data, "train")
    items = Transformed(base, EvalTransform(32, 32, [120.0, 60.0, 120.0]))
    settings = {"scale": 32}
    args = dict(state=prefix_state(model, n), shape=output_shape(model, n, 32))
    first, what = cached_outputs(Prefix(model, n), items, base, settings, **args)
    assert what.startswith("wrote ")
    second, what = cached_outputs(Prefix(model, n), items, base, settings, **args)
    assert what.startswith("read ") and torch.equal(first.values, second.values)
    with torch.no_grad():  # the model's own modules, no fast path: equal within fp32 Winograd's rounding
        x = torch.stack([items[i][0] for i in range(len(items))])
        want = torch.nn.Sequential(*[m for _, m in stages(model.eval())[:n]])(x)
    torch.testing.assert_close(first.values, want, rtol=0, atol=1e-5 * want.abs().max().item())
    assert first.values.shape == (16, 256) and first.readable.all() and first.labels.tolist() == [0] * 8 + [1] * 8
    touched = base.samples[3][0]
    os.utime(touched, ns=(1, 1))  # a file changed since: its outputs are computed again
    _, what = cached_outputs(Prefix(model, n), items, base, settings, **args)
    assert what.startswith("wrote ")
    _, what = cached_outputs(Prefix(model, n), items, base, {"scale": 36}, **args)
    assert what.startswith("wrote ")  # other preprocessing settings: another key


def test_a_folder_smaller_than_the_batch_trains_with_a_smaller_one_and_says_so(folder, tmp_path, capsys):
    run = train(tiny(folder, tmp_path / "run", batch=256, epochs=1, scale=[32]))
    err = capsys.readouterr().err
    assert (
        f"{folder}: 16 training images are fewer than --batch 256: training with --batch 4 (4 steps per epoch); "
        "pass --batch N to choose" in err
    )
    assert json.loads((run / "config.json").read_text())["batch"] == 4 and history(run)[0]["steps"] == 4


def test_a_too_small_folder_fails_before_the_weights_load(folder, tmp_path, capsys):
    missing = tmp_path / "absent.safetensors"  # never opened: the batch check comes first
    args = ["train", folder, "--init-from", str(missing), "--batch", "64", "--accum", "32", "--crop", "32"]
    assert main([*args, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"vggnet train: error: {folder}: 16 training images are fewer than one step of --batch 64; "
        "add images or pass a smaller --batch"
    )
