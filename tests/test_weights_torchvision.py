"""torchvision state dicts: torchvision's own VGG saved and read back, checkpoint wrappers, pickles refused."""

import pytest
import torch
import torchvision.models.vgg as tvvgg
from torch import nn

from helpers import randomize_bn
from vggnet import VGG, build, count_parameters
from vggnet.cli import main
from vggnet.weights import (
    Preprocessing,
    convert,
    detect_source,
    infer_config,
    load_weights,
    read_torch_state,
)
from weights_files import TV_NAMES, W, logits


def torchvision_model(letter: str, bn: bool, classes: int = 5) -> nn.Module:
    """torchvision's own VGG class and make_layers, with every width divided by 16."""
    cfg = [v if v == "M" else int(v * W) for v in tvvgg.cfgs[letter]]
    features = tvvgg.make_layers(cfg, batch_norm=bn)
    with torch.device("meta"):  # skip allocating the full-size classifier, replaced just below
        model = tvvgg.VGG(features, num_classes=classes, init_weights=False)
    c, h = int(512 * W), int(4096 * W)
    model.classifier = nn.Sequential(
        nn.Linear(c * 49, h), nn.ReLU(True), nn.Dropout(), nn.Linear(h, h), nn.ReLU(True), nn.Dropout(), nn.Linear(h, classes)
    )  # fmt: skip
    return randomize_bn(model)


@pytest.mark.parametrize("name", [n + bn for n in TV_NAMES for bn in ("", "_bn")])
def test_torchvision_pth_converts_to_identical_outputs(tmp_path, name):
    letter, bn = TV_NAMES[name.removesuffix("_bn")], name.endswith("_bn")
    tv = torchvision_model(letter, bn)
    state = tv.state_dict()
    if bn:  # torchvision's published _bn files predate the num_batches_tracked buffer
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / f"{name}.pth")
    assert detect_source(tmp_path / f"{name}.pth") == "torchvision"
    meta = convert(tmp_path / f"{name}.pth", tmp_path / "out.safetensors")
    model, loaded = load_weights(tmp_path / "out.safetensors")
    assert (model.cfg.arch, model.cfg.batch_norm, model.cfg.num_classes, model.cfg.width) == (letter, bn, 5, W)
    assert loaded.source == "torchvision" and loaded.preprocessing == Preprocessing.torchvision()
    assert meta.params == sum(p.numel() for p in tv.parameters())
    assert torch.equal(logits(model), logits(tv))


def test_full_size_torchvision_vgg11_bn_configuration_is_read_from_its_shapes():
    # infer_config reads shapes only, so torchvision's full-size state dict can stay on the meta device.
    with torch.device("meta"):
        state = tvvgg.vgg11_bn(weights=None).state_dict()
        cfg, include_top = infer_config(state, "vgg11_bn")
        assert count_parameters(VGG(cfg)) == 132_868_840  # 132,863,336 (Table 2, A) + 2 x 2,752 BN parameters
    assert (cfg.arch, cfg.batch_norm, cfg.width, cfg.num_classes, cfg.head, include_top) == (
        "A",
        True,
        1.0,
        1000,
        "fc",
        True,
    )


def test_checkpoint_wrappers_and_prefixes_are_undone(tmp_path):
    model = build("A", width=W, num_classes=3)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    loaded, _ = load_weights(tmp_path / "ckpt.pt")
    assert torch.equal(logits(loaded), logits(model))


class Payload:
    """Unpickling this object calls open(marker, "w"): it creates a file, as any code could."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_payload_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3), "extra": Payload(str(marker))}, path)
    with pytest.raises(ValueError, match=r"evil.pth: refused: the checkpoint contains pickled non-tensor objects"):
        read_torch_state(path)
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refused" in err and "nothing was executed" in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    # The payload is live: an unsafe load does run it (which is what weights_only=True prevents).
    torch.load(path, weights_only=False)
    assert marker.exists()
