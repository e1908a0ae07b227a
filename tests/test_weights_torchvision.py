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


class ShellPayload:
    """Unpickling this object runs a shell command through os.system (a module torch's loader blocks by name)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload,called", [(Payload, "io.open"), (ShellPayload, "posix.system")])
def test_pickled_payload_is_refused_as_code_and_never_runs(tmp_path, capsys, payload, called):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3), "extra": payload(str(marker))}, path)
    with pytest.raises(
        ValueError, match=rf"evil.pth: refused: its pickle would run code when loaded \(it calls {called}\)"
    ):
        read_torch_state(path)
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "would run code" in err and "nothing was executed" in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    # The payload is live: an unsafe load does run it (which is what weights_only=True prevents).
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "message,name",
    [
        ("Weights only load failed. ...\n\nTrying to load unsupported GLOBAL posix.system whose module posix is blocked.", "posix.system"),
        ("\tWeightsUnpickler error: Unsupported global: GLOBAL __main__.F was not an allowed global by default.", "__main__.F"),
        ("UNSUPPORTED GLOBAL: builtins.eval", "builtins.eval"),
    ],
)  # fmt: skip
def test_torch_refusals_of_a_global_are_recognised_in_each_wording(message, name):
    from vggnet.weights.torchvision import REFUSED_GLOBAL

    assert REFUSED_GLOBAL.search(message).group(1) == name
    assert REFUSED_GLOBAL.search("Weights only load failed ... Unsupported operand 255") is None  # damaged, not code


@pytest.mark.slow
def test_a_zip_bombed_checkpoint_is_refused_before_it_inflates(tmp_path, monkeypatch):
    from helpers import one_line_refusal, run_capped
    from hostile_files import zip_bomb_pth

    path = zip_bomb_pth(tmp_path / "bomb.pth", 1536 << 20)  # 1.5 MB on disk, 1.5 GiB inflated
    out = tmp_path / "out.safetensors"
    status, _, err, peak = run_capped(["convert", str(path), str(out)])
    one_line_refusal(status, err, "convert", "bomb.pth: its zip records declare 1.5 GiB", "VGGNET_MAX_WEIGHTS_BYTES")
    assert not out.exists()
    assert 0 < peak < 1536 << 20  # the interpreter and torch, not the record: inflating it takes more than this

    from vggnet.train import load_checkpoint

    # Resume checkpoints have their own, larger budget; lowered here so the bomb can stay small.
    monkeypatch.setenv("VGGNET_MAX_CHECKPOINT_BYTES", str(32 << 20))
    with pytest.raises(ValueError, match=r"last.pt: its zip records declare 64.0 MiB.*VGGNET_MAX_CHECKPOINT_BYTES"):
        load_checkpoint(zip_bomb_pth(tmp_path / "last.pt", 64 << 20), verify=False)
