"""The resolver: catalogue names and URLs fetched from a real HTTP server on 127.0.0.1 (through a catalogue
override), peers' caches, conversion once, offline use, bad input, concurrency, run folders everywhere."""

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vggnet import build
from vggnet.cli import main
from vggnet.weights import IntegrityError, Preprocessing, load_weights, read_meta, resolve_weights, save_weights
from weights_files import W, keras_layers, logits, to_timm, write_keras_h5

PRE = {"color": "RGB", "scale": 1.0, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A torchvision-layout file of net A at width 1/16 (5 classes): (model, bytes, sha256)."""
    model = build("A", width=W, num_classes=5).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.pth"
    torch.save(model.state_dict(), path)
    data = path.read_bytes()
    return model, data, hashlib.sha256(data).hexdigest()


def catalogue(tmp_path, monkeypatch, *records) -> None:
    """Use a catalogue holding `records` (each a weights entry) instead of the shipped one."""
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"weights": list(records), "datasets": []}))
    monkeypatch.setenv("VGGNET_CATALOGUE", str(path))


def entry(name: str, url: str, file: str, hashes: dict, **facts) -> dict:
    return {"name": name, "publisher": "torchvision", "file": file, "urls": [url], "hash": hashes, "arch": "A",
            "batch_norm": False, "include_top": True, "preprocessing": PRE, **facts}  # fmt: skip


def cache_files(cache: Path) -> list[str]:
    """Files in the weights cache, lock files aside."""
    root = cache / "weights"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts)


def test_a_name_is_fetched_checked_converted_once_then_loaded_from_the_cache(isolated_cache, file_server, tiny, tmp_path, monkeypatch, capsys):  # fmt: skip
    model, data, sha = tiny
    url = file_server.add("models/tiny-abc.pth", data)
    catalogue(tmp_path, monkeypatch, entry("tiny", url, "tiny-abc.pth", {"sha256_prefix": sha[:8]}))
    loaded, meta = load_weights("tiny", progress=False)
    assert torch.equal(logits(loaded), logits(model))
    assert meta.preprocessing.mean == tuple(PRE["mean"]) and meta.source == "torchvision"
    assert meta.extra["catalogue"] == "tiny" and meta.extra["url"] == url and meta.extra["file_sha256"] == sha
    assert cache_files(isolated_cache) == ["tiny.safetensors"]  # the release's file is gone once converted
    assert read_meta(isolated_cache / "weights" / "tiny.safetensors").tensors_sha256  # content hashes recorded
    assert load_weights("TINY", progress=False)[1].extra["file_sha256"] == sha  # names are case-insensitive
    assert file_server.gets("models/tiny-abc.pth") == [None]  # once
    assert main(["weights", "list"]) == 0
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.startswith("tiny ")] == ["yes"]
    assert main(["weights", "fetch", "tiny"]) == 0  # already there: its path, no request
    assert capsys.readouterr().out == f"tiny: {isolated_cache / 'weights' / 'tiny.safetensors'}\n"
    assert file_server.gets("models/tiny-abc.pth") == [None]


def test_a_peers_cached_file_is_used_with_no_request_when_its_hash_matches(isolated_cache, file_server, tiny, tmp_path, monkeypatch):  # fmt: skip
    model, data, sha = tiny
    url = file_server.add("tiny-abc.pth", data)
    catalogue(tmp_path, monkeypatch, entry("tiny", url, "tiny-abc.pth", {"sha256": sha}))
    peer = tmp_path / "torch" / "hub" / "checkpoints" / "tiny-abc.pth"  # where torch.hub / torchvision keep it
    peer.parent.mkdir(parents=True)
    peer.write_bytes(data)
    assert torch.equal(logits(load_weights("tiny", progress=False)[0]), logits(model))
    assert file_server.requests == [] and peer.read_bytes() == data  # a peer's file is read, never moved


def test_a_peers_file_with_another_hash_is_ignored(isolated_cache, file_server, tiny, tmp_path, monkeypatch):
    _, data, sha = tiny
    url = file_server.add("tiny-abc.pth", data)
    catalogue(tmp_path, monkeypatch, entry("tiny", url, "tiny-abc.pth", {"sha256": sha}))
    peer = tmp_path / "torch" / "hub" / "checkpoints" / "tiny-abc.pth"
    peer.parent.mkdir(parents=True)
    peer.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    resolve_weights("tiny", progress=False)
    assert file_server.gets("tiny-abc.pth") == [None]


def test_a_keras_models_folder_file_is_checked_by_md5_and_notop_keeps_no_classifier(isolated_cache, file_server, tmp_path, monkeypatch):  # fmt: skip
    model = build("D", width=W, num_classes=5).eval()
    path = tmp_path / "keras" / "models" / "vgg16_notop.h5"
    path.parent.mkdir(parents=True)
    write_keras_h5(path, keras_layers(model, top=False), "keras1")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    rec = entry(
        "knotop", file_server.url("vgg16_notop.h5"), "vgg16_notop.h5", {"md5": md5}, arch="D", include_top=False
    )
    catalogue(tmp_path, monkeypatch, {**rec, "publisher": "keras"})
    loaded, meta = load_weights("knotop", progress=False)
    assert file_server.requests == [] and not meta.include_top
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(loaded.features(x), model.features(x), atol=1e-5)


def test_a_hugging_face_cache_file_is_checked_against_its_blob_name(isolated_cache, file_server, tmp_path, monkeypatch):
    model = build("A", width=W, num_classes=5).eval()
    blob = tmp_path / "blob.safetensors"
    save_file(to_timm(model), blob)
    data = blob.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    repo = tmp_path / "hf" / "hub" / "models--timm--tiny.tv_in1k"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(data)
    (repo / "snapshots" / "abc123" / "model.safetensors").symlink_to(f"../../blobs/{sha}")
    # no published hash (as timm's); the mirror keeps any download on this machine
    monkeypatch.setenv("VGGNET_MIRROR", file_server.url("mirror"))
    url = "https://huggingface.co/timm/tiny.tv_in1k/resolve/main/model.safetensors"
    catalogue(
        tmp_path, monkeypatch, {**entry("tiny.tv_in1k", url, "tiny.tv_in1k.safetensors", {}), "publisher": "timm"}
    )
    loaded, meta = load_weights("tiny.tv_in1k", progress=False)
    assert file_server.requests == [] and meta.source == "timm" and loaded.cfg.head == "conv"
    assert torch.allclose(logits(loaded.to_head("fc")), logits(model), atol=1e-5)
    (isolated_cache / "weights" / "tiny.tv_in1k.safetensors").unlink()
    (repo / "blobs" / sha).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # a damaged blob no longer matches its name
    file_server.add("mirror/tiny.tv_in1k.safetensors", data, headers={"X-Linked-Etag": f'"{sha}"'})
    load_weights("tiny.tv_in1k", progress=False)
    assert file_server.gets("mirror/tiny.tv_in1k.safetensors") == [None]


def test_a_features_only_entry_drops_the_classifier_and_a_wrong_configuration_is_refused(isolated_cache, file_server, tiny, tmp_path, monkeypatch):  # fmt: skip
    model, data, sha = tiny
    url = file_server.add("tiny.pth", data)
    catalogue(
        tmp_path, monkeypatch,
        entry("feat", url, "tiny.pth", {"sha256": sha}, include_top=False),
        entry("wrong", url, "tiny.pth", {"sha256": sha}, arch="D"),
    )  # fmt: skip
    loaded, meta = load_weights("feat", progress=False)
    assert not meta.include_top and not any(k.startswith("classifier") for k in loaded.state_dict())
    with pytest.raises(ValueError) as caught:
        resolve_weights("wrong", progress=False)
    assert str(caught.value) == f"wrong: {isolated_cache / 'weights' / 'downloads' / 'tiny.pth'}: holds configuration A, but the catalogue's wrong is D; nothing kept"  # fmt: skip
    assert cache_files(isolated_cache) == ["feat.safetensors"]


def test_offline_a_name_says_where_to_put_the_file_and_then_uses_it(isolated_cache, file_server, tiny, tmp_path, monkeypatch, capsys):  # fmt: skip
    model, data, sha = tiny
    url = file_server.add("tiny-abc.pth", data)
    catalogue(tmp_path, monkeypatch, entry("tiny", url, "tiny-abc.pth", {"sha256_prefix": sha[:8]}))
    monkeypatch.setenv("VGGNET_OFFLINE", "1")
    where = isolated_cache / "weights" / "downloads" / "tiny-abc.pth"
    assert main(["convert", "tiny", str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err == f"vggnet convert: error: cannot get tiny: offline (VGGNET_OFFLINE or HF_HUB_OFFLINE) and not cached; put the file from {url} (sha256 {sha[:8]}...) at {where}\n"  # fmt: skip
    where.write_bytes(data)  # an air-gapped site copies the file there
    assert main(["convert", "tiny", str(tmp_path / "out.safetensors")]) == 0
    assert file_server.requests == []
    assert torch.equal(logits(load_weights(tmp_path / "out.safetensors")[0]), logits(model))


def test_a_url_is_fetched_with_its_sha256_and_cached_converted(isolated_cache, file_server, tiny, tmp_path):
    model, data, sha = tiny
    url = file_server.add("dir/tiny%20v1.pth", data)
    loaded, meta = load_weights(f"{url}#sha256={sha[:12]}", progress=False)
    assert torch.equal(logits(loaded), logits(model)) and meta.extra["url"] == url
    again = resolve_weights(url, sha256=sha[:12], progress=False)  # the same URL and hash: the cached conversion
    assert again.parent == isolated_cache / "weights" / "urls" and file_server.gets("dir/tiny%20v1.pth") == [None]
    assert main(["convert", url, str(tmp_path / "c.safetensors"), "--sha256", sha]) == 0  # a full sha256 too


@pytest.mark.parametrize("given", ["hash", "no hash"])
def test_a_url_serving_html_is_refused_in_one_line_and_nothing_is_cached(isolated_cache, file_server, tiny, tmp_path, capsys, given):  # fmt: skip
    page = b"<!DOCTYPE html>\n<html><body>Please sign in</body></html>\n"
    url = file_server.add("vgg16.pth", page, content_type="text/html")
    args = ["--sha256", tiny[2][:16]] if given == "hash" else []
    assert main(["features", str(tmp_path / "x.png"), "--weights", url, "--layers", "relu1_1", "--out", str(tmp_path / "f.npz"), *args]) == 2  # fmt: skip
    err = capsys.readouterr().err.split("\r")[-1]  # after the (erased) progress bar: one line
    assert err.count("\n") == 1
    if given == "hash":
        assert f"{url}: refused, nothing kept: the download is not the published file: expected sha256 {tiny[2][:16]}" in err  # fmt: skip
    else:
        assert err == f"vggnet features: error: {url}: the server sent a web page (HTML), not weights; nothing kept\n"
    assert cache_files(isolated_cache) == [] and not (tmp_path / "f.npz").exists()


def test_an_unknown_name_gives_the_closest_names_and_exit_2(capsys, isolated_cache, tmp_path):
    assert main(["predict", str(tmp_path / "cat.jpg"), "--weights", "vgg61"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vggnet predict: error: vgg61: no such weights file, run folder or catalogue name; closest catalogue names: ")  # fmt: skip
    assert "vgg16" in err and err.count("\n") == 1
    with pytest.raises(FileNotFoundError, match="^nowhere/vgg16.pth: no such file$"):  # a path stays a path
        resolve_weights("nowhere/vgg16.pth")
    with pytest.raises(ValueError, match="--sha256 is for files and URLs"):
        resolve_weights("vgg16", sha256="397923af")


def test_a_local_files_sha256_is_checked(tmp_path, tiny, capsys):
    path = tmp_path / "tiny.pth"
    path.write_bytes(tiny[1])
    assert resolve_weights(path, sha256=tiny[2][:8]) == path
    with pytest.raises(IntegrityError, match="the sha256 of the file differs"):
        load_weights(f"{path}#sha256={'0' * 8}")
    with pytest.raises(SystemExit) as caught:  # a usage error: argparse's exit 2
        main(["evaluate", str(path), str(path), "--sha256", tiny[2][:8]])
    assert caught.value.code == 2 and "--sha256 names one file's hash" in capsys.readouterr().err


def test_two_concurrent_fetches_of_one_name_end_with_one_good_file(isolated_cache, file_server, tiny, tmp_path, monkeypatch):  # fmt: skip
    model, data, sha = tiny
    url = file_server.add("tiny-abc.pth", data, delay=0.02)  # about 0.6 s per download: the two overlap
    catalogue(tmp_path, monkeypatch, entry("tiny", url, "tiny-abc.pth", {"sha256": sha}))
    paths, errors = [], []

    def fetch_it():
        try:
            paths.append(resolve_weights("tiny", progress=False))
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=fetch_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(paths) == 2 and paths[0] == paths[1]
    assert file_server.gets("tiny-abc.pth") == [None] and cache_files(isolated_cache) == ["tiny.safetensors"]
    assert torch.equal(logits(load_weights(paths[0])[0]), logits(model))


@pytest.mark.slow
def test_two_processes_fetching_one_name_end_with_one_good_file(isolated_cache, file_server, tiny, tmp_path, monkeypatch):  # fmt: skip
    _, data, sha = tiny
    url = file_server.add("tiny-abc.pth", data, delay=0.05)
    catalogue(tmp_path, monkeypatch, entry("tiny", url, "tiny-abc.pth", {"sha256": sha}))
    code = "import sys; from vggnet.weights import resolve_weights; print(resolve_weights('tiny', progress=False))"
    env = {**__import__("os").environ, "PYTHONPATH": str(SRC)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs[0] == outs[1] == str(isolated_cache / "weights" / "tiny.safetensors")  # fmt: skip
    assert file_server.gets("tiny-abc.pth") == [None] and cache_files(isolated_cache) == ["tiny.safetensors"]
    assert read_meta(outs[0]).extra["file_sha256"] == sha


@pytest.mark.slow
def test_run_folders_are_accepted_by_every_command_that_takes_weights(tmp_path, capsys):
    run = tmp_path / "run"
    model = build("A", width=W, num_classes=5).eval()
    save_weights(model, run / "model.safetensors")
    photo = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "out"
    commands = [
        ["convert", str(run), str(out / "c.safetensors")],
        [
            "features",
            str(photo),
            "--weights",
            str(run),
            "--layers",
            "relu1_1",
            "--size",
            "32",
            "--out",
            str(out / "f.npz"),
            "--quiet",
        ],  # fmt: skip
        ["compress", str(run), str(out / "small.safetensors"), "--rank", "4"],
        ["view", str(photo), "--weights", str(run), "--out", str(out / "v.html")],
        ["export", str(run), str(out / "m.onnx")],  # checked against PyTorch too
        ["export", str(run), str(out / "p.onnx"), "--with-preprocessing", "--no-verify"],
        ["predict", str(photo), "--weights", str(run), "--method", "center", "--quiet"],
    ]  # evaluate: tests/test_evaluate.py; probe and train --init-from: the test below
    for args in commands:
        assert main(args) == 0, (args, capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == ["c.safetensors", "f.npz", "m.onnx", "p.onnx", "small.safetensors", "v.html"]  # fmt: skip
    assert torch.equal(logits(load_weights(out / "c.safetensors")[0]), logits(model))


@pytest.mark.slow
def test_probe_and_fine_tuning_take_a_run_folder(tmp_path, capsys):
    from test_finetune import three_classes

    data = three_classes(tmp_path / "photos")
    run = tmp_path / "run"
    model = build("A", width=W, num_classes=5, input_size=32).eval()
    save_weights(model, run / "model.safetensors", preprocessing=Preprocessing.torchvision())
    assert main(["probe", data, "--weights", str(run), "--layer", "fc7", "--scale", "36", "--quiet"]) == 0
    assert "on 6 images" in capsys.readouterr().out
    common = ["--crop", "32", "--scale", "36", "--batch", "4", "--epochs", "1", "--workers", "0", "--quiet"]
    assert main(["train", data, "--init-from", str(run), "--out", str(tmp_path / "tuned"), *common]) == 0
    meta = read_meta(tmp_path / "tuned" / "model.safetensors")
    assert meta.model.num_classes == 3 and meta.extra["init_from"]["new_layers"] == ["fc8"]
