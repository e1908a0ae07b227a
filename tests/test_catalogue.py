"""The real catalogue, parsed, never fetched: every entry complete, hashes well formed, and names, URLs, hashes,
sizes, preprocessing and accuracy equal to the peers' own sources (torchvision and timm as installed; Keras,
the Caffe release and fastai from tests/data/peer_sources.json, or Keras's installed sources where present)."""

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import torchvision.datasets as tvd
import torchvision.models.vgg as tvvgg

from vggnet import VGG, ModelConfig, count_parameters
from vggnet.catalogue import HASH_DIGITS, entries, lookup
from vggnet.weights.format import NoClassifier
from vggnet.weights.listing import MARKERS, catalogue_markdown

ROOT = Path(__file__).resolve().parents[1]
PEERS = json.loads((ROOT / "tests" / "data" / "peer_sources.json").read_text())
FACTS = ("urls", "hash", "size_mib", "params", "preprocessing", "accuracy")
FIELDS = {"name", "aliases", "publisher", "file", "urls", "hash", "size_mib", "arch", "batch_norm", "include_top",
          "num_classes", "params", "preprocessing", "top1", "top5", "notes", "facts_from"}  # fmt: skip
WEIGHTS = {e.name: e for e in entries("weights")}
BY = {
    p: [e for e in WEIGHTS.values() if e.publisher == p] for p in ("torchvision", "timm", "keras", "Oxford VGG (Caffe)")
}


@pytest.fixture(autouse=True)
def shipped_catalogue(monkeypatch):
    monkeypatch.delenv("VGGNET_CATALOGUE", raising=False)


def record(name: str) -> dict:
    """The entry as written in catalogue.json."""
    raw = json.loads((ROOT / "src" / "vggnet" / "catalogue.json").read_text())
    return next(r for r in raw["weights"] + raw["datasets"] if r["name"] == name)


def test_the_catalogue_holds_every_release_the_issue_names():
    assert len(BY["torchvision"]) == 9 and "vgg16_features" in WEIGHTS  # eight and the SSD features
    assert sorted(e.name for e in BY["keras"]) == [
        "vgg16_keras",
        "vgg16_keras_notop",
        "vgg19_keras",
        "vgg19_keras_notop",
    ]
    assert sorted(e.name for e in BY["Oxford VGG (Caffe)"]) == ["vgg16_caffe", "vgg19_caffe"]
    assert len(BY["timm"]) == 8
    assert sum(len(v) for v in BY.values()) == len(WEIGHTS) == 23
    assert [e.name for e in entries("datasets")] == ["imagenette-160", "imagenette-320", "cifar10", "cifar100"]
    assert (
        lookup("imagenette", "datasets").name == "imagenette-320"
        and lookup("VGG_ILSVRC_16_layers").name == "vgg16_caffe"
    )


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_every_weights_entry_is_complete_and_says_where_each_fact_came_from(name):
    r = record(name)
    assert set(r) == FIELDS
    assert set(r["facts_from"]) == set(FACTS) and all(
        isinstance(v, str) and len(v) > 20 for v in r["facts_from"].values()
    )
    assert set(r["preprocessing"]) == {"color", "scale", "mean", "std", "resize", "crop"}
    assert r["preprocessing"]["crop"] == 224 and len(r["preprocessing"]["mean"]) == len(r["preprocessing"]["std"]) == 3
    assert r["arch"] in ("A", "B", "D", "E") and r["num_classes"] == 1000
    assert (r["top1"] is None) == (r["top5"] is None) and (r["top1"] is None or 60 < r["top1"] < r["top5"] < 100)
    assert r["urls"][0].rsplit("/", 1)[-1] in (r["file"], "model.safetensors")


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_the_parameter_count_is_the_networks(name):
    f = WEIGHTS[name].facts
    with torch.device("meta"):
        model = VGG(ModelConfig(arch=f["arch"], batch_norm=f["batch_norm"]))
        if not f["include_top"]:
            model.classifier = NoClassifier()
    assert count_parameters(model) == f["params"]


def test_hashes_have_the_length_their_kind_has_and_only_unpublished_ones_are_missing():
    for e in list(WEIGHTS.values()) + entries("datasets"):
        for kind, value in e.hash.items():
            if kind != "size_bytes":
                low, high = HASH_DIGITS[kind]
                assert re.fullmatch(f"[0-9a-f]{{{low},{high}}}", value), (e.name, kind)
    assert all(len(e.hash["sha256_prefix"]) == 8 and set(e.hash) == {"sha256_prefix"} for e in BY["torchvision"])
    assert all(set(e.hash) == {"md5"} for e in BY["keras"])
    unhashed = sorted(e.name for e in WEIGHTS.values() if not e.hash)
    assert unhashed == sorted(e.name for e in BY["timm"] + BY["Oxford VGG (Caffe)"])
    assert all("none published" in e.facts["facts_from"]["hash"] for e in WEIGHTS.values() if not e.hash)


def test_names_and_aliases_are_unique():
    for kind in ("weights", "datasets"):
        names = [n.lower() for e in entries(kind) for n in (e.name, *e.aliases)]
        assert len(names) == len(set(names))
    files = [e.file for e in entries("weights")]
    assert len(files) == len(set(files))  # each entry downloads to its own file


def test_torchvision_entries_equal_torchvisions_own_weights():
    enums = {"vgg16_features": tvvgg.VGG16_Weights.IMAGENET1K_FEATURES}
    for e in BY["torchvision"]:
        w = enums.get(e.name) or getattr(tvvgg, f"{e.name.upper()}_Weights").IMAGENET1K_V1
        f, t = e.facts, w.transforms()
        assert e.urls == (w.url,) and e.file == w.url.rsplit("/", 1)[1]
        assert e.hash["sha256_prefix"] == re.search(r"-([0-9a-f]{8,})\.pth$", w.url).group(1)
        assert f["size_mib"] == w.meta["_file_size"]
        assert f["params"] == (w.meta["num_params"] if f["include_top"] else 14_714_688)
        pre = f["preprocessing"]
        assert (pre["mean"], pre["std"], [pre["resize"]], [pre["crop"]]) == (t.mean, t.std, t.resize_size, t.crop_size)
        metrics = w.meta["_metrics"]["ImageNet-1K"]
        if f["include_top"]:
            assert (f["top1"], f["top5"]) == (metrics["acc@1"], metrics["acc@5"])
        else:  # torchvision gives nan: not a classifier
            assert f["top1"] is None and metrics["acc@1"] != metrics["acc@1"]


def test_torchvision_aliases_are_its_enum_names():
    for e in BY["torchvision"]:
        enum_name, member = e.aliases[0].split(".")
        assert getattr(getattr(tvvgg, enum_name), member).url == e.urls[0]


def test_timm_entries_equal_timms_own_registry():
    timm = pytest.importorskip(
        "timm", reason="timm is not installed (pip install 'vggnet[test]'); it is compared when it is"
    )
    from timm.models import get_pretrained_cfg

    assert sorted(timm.list_pretrained("vgg*")) == sorted(e.name for e in BY["timm"])
    for e in BY["timm"]:
        cfg = get_pretrained_cfg(e.name)
        assert e.urls == (f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors",)
        pre = e.facts["preprocessing"]
        assert (tuple(pre["mean"]), tuple(pre["std"])) == (tuple(cfg.mean), tuple(cfg.std))
        assert pre["crop"] == cfg.input_size[-1] and pre["resize"] == round(cfg.input_size[-1] / cfg.crop_pct)
        base = e.name.split(".")[0]
        assert e.facts["params"] == WEIGHTS[base].facts["params"]  # torchvision's weights, as "tv" says


def keras_facts() -> dict:
    """Keras's VGG weight URLs and file hashes: from its installed sources where it is installed (read, not
    imported), else the recorded copy, which then is what the catalogue is held to."""
    spec = importlib.util.find_spec("keras")
    if spec is None or not spec.submodule_search_locations:
        return PEERS["keras"]
    facts = {}
    for base in ("vgg16", "vgg19"):
        path = Path(next(iter(spec.submodule_search_locations))) / "src" / "applications" / f"{base}.py"
        tree = ast.parse(path.read_text())
        found = {"file_hash": {}}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("WEIGHTS_PATH")
            ):
                found[node.targets[0].id] = ast.literal_eval(node.value)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get_file":
                hashes = [k.value.value for k in node.keywords if k.arg == "file_hash"]
                found["file_hash"][ast.literal_eval(node.args[0])] = hashes[0]
        facts[base] = found
    return facts


def test_keras_entries_equal_keras_sources():
    facts = keras_facts()
    for e in BY["keras"]:
        base, top = e.name.split("_")[0], e.facts["include_top"]
        assert e.urls == (facts[base]["WEIGHTS_PATH" if top else "WEIGHTS_PATH_NO_TOP"],)
        assert e.hash == {"md5": facts[base]["file_hash"][e.file]}
        assert (
            e.facts["preprocessing"]["color"] == "BGR"
            and e.facts["preprocessing"]["mean"] == PEERS["caffe"]["mean_bgr"]
        )


def test_the_recorded_keras_copy_matches_an_installed_keras():
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed; the recorded copy (tests/data/peer_sources.json) gives its facts")
    assert keras_facts() == {k: v for k, v in PEERS["keras"].items() if k != "provenance"}


def test_caffe_entries_equal_the_releases_pages():
    for e in BY["Oxford VGG (Caffe)"]:
        assert e.urls == (PEERS["caffe"][e.aliases[0]],) and e.file == f"{e.aliases[0]}.caffemodel"
        assert e.facts["preprocessing"] == {"color": "BGR", "scale": 255.0, "mean": PEERS["caffe"]["mean_bgr"],
                                            "std": [1.0, 1.0, 1.0], "resize": None, "crop": 224}  # fmt: skip
        assert (e.facts["top1"], e.facts["top5"]) == (100 - 24.8, 100 - 7.5)  # the paper's Table 4, D and E alike


def test_dataset_entries_equal_torchvisions_and_fastais_checksums():
    archives = tvd.Imagenette._ARCHIVES
    for size in ("160", "320"):
        e = lookup(f"imagenette-{size}", "datasets")
        url, md5 = archives[f"{size}px"]
        assert e.urls == (url,) and e.hash["md5"] == md5 and e.facts["folder"] == f"imagenette2-{size}"
        assert [e.hash["size_bytes"], e.hash["md5_first_mib"]] == PEERS["fastai"][url]
    for name, cls in (("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)):
        e = lookup(name, "datasets")
        assert (e.urls, e.hash, e.file, e.facts["folder"]) == (
            (cls.url,),
            {"md5": cls.tgz_md5},
            cls.filename,
            cls.base_folder,
        )


def test_the_docs_table_is_generated_from_the_catalogue():
    text = (ROOT / "docs" / "weights.md").read_text()
    assert f"{MARKERS[0]}\n{catalogue_markdown()}\n{MARKERS[1]}" in text, (
        "run `vggnet weights list --markdown` and paste it"
    )


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"file": "../x.pth"}, "'file' must be a plain file name"),
        ({"urls": ["ftp://host/x.pth"]}, "is not an http, https or file URL"),
        ({"urls": []}, "'urls' must be a non-empty list"),
        ({"hash": {"md5": "abc"}}, "md5 must be 32-32 lower-case hex digits"),
        ({"hash": {"sha256_prefix": "397923AF"}}, "sha256_prefix must be 8-63 lower-case hex digits"),
        ({"hash": {"crc32": "0" * 8}}, "unknown hash kind 'crc32'"),
        ({"hash": {"size_bytes": -1}}, "size_bytes must be a positive integer"),
    ],
)
def test_a_malformed_catalogue_is_refused_naming_the_entry(tmp_path, monkeypatch, bad, message):
    good = {"name": "x", "file": "x.pth", "urls": ["https://example.org/x.pth"], "hash": {}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"weights": [{**good, **bad}]}))
    monkeypatch.setenv("VGGNET_CATALOGUE", str(path))
    with pytest.raises(ValueError, match=re.escape(f"{path}: weights entry 'x': ") + ".*" + re.escape(message)):
        entries("weights")
