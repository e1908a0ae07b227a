"""ImageNet's wnids in index order, and 1000-class weights tested on folders named by wnid."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vggnet import build
from vggnet.cli import main
from vggnet.configs import EvalConfig
from vggnet.evaluate import evaluate, predict
from vggnet.imagenet import imagenet_classes, imagenet_wnids, wnid_indices
from vggnet.weights import save_weights

# The photos beside the checkout or beside a folder holding it (worktrees).
IMAGENETTE = next(
    (
        str(p / "shared/data/imagenette")
        for p in Path(__file__).resolve().parents
        if (p / "shared/data/imagenette").is_dir()
    ),
    "/work/shared/data/imagenette",
)
# Imagenette's ten classes and their ILSVRC-2012 indices.
IMAGENETTE_INDICES = {
    "n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
    "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888257": 701,
}  # fmt: skip


def test_the_wnids_are_the_ilsvrc_index_order():
    wnids, names = imagenet_wnids(), imagenet_classes()
    assert len(wnids) == len(set(wnids)) == len(names) == 1000
    assert wnids == sorted(wnids) and wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    assert {w: wnids.index(w) for w in IMAGENETTE_INDICES} == IMAGENETTE_INDICES
    for index, wnid, name in [
        (1, "n01443537", "goldfish"), (207, "n02099601", "golden retriever"), (281, "n02123045", "tabby"),
        (409, "n02708093", "analog clock"), (817, "n04285008", "sports car"), (954, "n07753592", "banana"),
        (963, "n07873807", "pizza"), (999, "n15075141", "toilet tissue"),
    ]:  # fmt: skip
        assert (wnids[index], names[index]) == (wnid, name)
    assert wnid_indices(["n03888257", "n01440764"]) == [701, 0] and wnid_indices(["n01440764", "tench"]) is None


@pytest.mark.skipif(not os.path.isdir(IMAGENETTE), reason="no Imagenette photos at /work/shared/data/imagenette")
def test_imagenette_folders_map_to_their_imagenet_indices():
    folders = sorted(os.listdir(os.path.join(IMAGENETTE, "val")))
    assert wnid_indices(folders) == [IMAGENETTE_INDICES[f] for f in folders]


@pytest.fixture(scope="module")
def tench_net(tmp_path_factory):
    """A 1000-class net that always ranks tench first and parachute second, and an ILSVRC-style folder."""
    root = tmp_path_factory.mktemp("ilsvrc")
    model = build("A", width=1 / 16, num_classes=1000, input_size=32)
    with torch.no_grad():
        model.classifier[6].weight.zero_()
        model.classifier[6].bias.zero_()
        model.classifier[6].bias[[0, 701]] = torch.tensor([10.0, 5.0])
    save_weights(model, root / "w.safetensors")  # no class names, like imported torchvision weights
    rng = np.random.default_rng(0)
    for wnid, n in (("n01440764", 3), ("n03888257", 2)):
        (root / "val" / wnid).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(root / "val" / wnid / f"{i}.png")
    return root


def test_1000_class_weights_on_wnid_folders_are_scored_by_wnid(tench_net):
    r = evaluate(
        [tench_net / "w.safetensors"], str(tench_net), EvalConfig(method="center", scales="36"), progress=False
    )
    assert r.images == 5 and r.top1_error == pytest.approx(40.0) and r.top5_error == 0.0
    assert r.class_names == ["n01440764 tench", "n03888257 parachute"] and r.per_class_accuracy == [100.0, 0.0]
    assert r.confusion == [[3, 0], [2, 0]] and r.probs.shape == (5, 1000) and r.labels.tolist() == [0] * 3 + [701] * 2


def test_predict_names_the_folders_class_and_its_rank(tench_net, capsys):
    image = tench_net / "val" / "n03888257" / "0.png"
    (pred,), _ = predict([image], [tench_net / "w.safetensors"], EvalConfig(scales="36"), top=2)
    assert [label for label, _ in pred.top] == ["tench", "parachute"]
    assert (pred.folder_class, pred.folder_rank) == ("n03888257 parachute", 2)
    assert main(["predict", str(image), "--weights", str(tench_net / "w.safetensors"), "--scales", "36"]) == 0
    assert "  folder: n03888257 parachute, rank 2" in capsys.readouterr().out


def test_unknown_folders_keep_a_one_line_error(tench_net, tmp_path, capsys):
    weights = str(tench_net / "w.safetensors")
    for name, message in [
        ("n99999999", "class folder 'n99999999' is no ImageNet-1k WordNet id"),
        ("tench", "weights have 1000 classes but data"),
    ]:
        folder = tmp_path / name / "val" / name
        folder.mkdir(parents=True)
        Image.new("RGB", (36, 36)).save(folder / "0.png")
        assert main(["evaluate", weights, "--data", str(tmp_path / name), "--scales", "36", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
