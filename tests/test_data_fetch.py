"""Datasets by name: an Imagenette-like archive made here, served on 127.0.0.1, checked, unpacked once; hostile
archives refused member by member; the experiments take `--data NAME`."""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from helpers import experiment_module
from vggnet import build
from vggnet.cli import main
from vggnet.data import extract_tar, open_dataset
from vggnet.data import fetch as fetch_module
from vggnet.weights import save_weights
from weights_files import W

CLASSES = ("n01440764", "n02102040")


def photo_bytes(seed: int) -> bytes:
    pixels = (np.random.default_rng(seed).random((40, 48, 3)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def nette_archive() -> bytes:
    """An Imagenette-shaped archive: tinynette/{train,val}/<wnid>/*.JPEG, 4 + 2 photos per class."""
    members = []
    for split, n in (("train", 4), ("val", 2)):
        for c, wnid in enumerate(CLASSES):
            members += [file_member(f"tinynette/{split}/{wnid}/{i}.JPEG", photo_bytes(100 * c + 10 * n + i)) for i in range(n)]  # fmt: skip
    return tar_bytes(members)


@pytest.fixture
def tinynette(isolated_cache, file_server, tmp_path, monkeypatch):
    """A catalogue with one dataset, `tinynette`, served with its md5, size and first-MiB md5 (fastai's checks)."""
    data = nette_archive()
    url = file_server.add("data/tinynette.tgz", data)
    hashes = {"md5": hashlib.md5(data).hexdigest(), "size_bytes": len(data), "md5_first_mib": hashlib.md5(data[: 1 << 20]).hexdigest()}  # fmt: skip
    record = {"name": "tinynette", "aliases": ["nette"], "publisher": "test", "file": "tinynette.tgz", "urls": [url], "hash": hashes, "folder": "tinynette"}  # fmt: skip
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"weights": [], "datasets": [record]}))
    monkeypatch.setenv("VGGNET_CATALOGUE", str(path))
    return file_server


def test_a_dataset_name_is_fetched_checked_and_unpacked_once(tinynette, isolated_cache, capsys):
    train = open_dataset("tinynette", "train")
    val = open_dataset("nette", "val")
    assert (len(train), len(val), train.classes) == (8, 4, list(CLASSES))
    home = isolated_cache / "datasets"
    assert sorted(p.name for p in home.iterdir()) == [".locks", "downloads", "tinynette"]
    assert list((home / "downloads").iterdir()) == []  # the archive goes once unpacked
    assert tinynette.gets("data/tinynette.tgz") == [None]
    assert main(["stats", "tinynette", "--quiet", "--workers", "0"]) == 0
    assert "8 images" in capsys.readouterr().out


def test_evaluate_takes_a_dataset_name(tinynette, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    save_weights(build("A", width=W, num_classes=2, input_size=32).eval(), weights, class_names=list(CLASSES))
    assert main(["evaluate", str(weights), "--data", "tinynette", "--method", "center", "--scales", "32", "--quiet", "--workers", "0"]) == 0  # fmt: skip
    assert "on 4 images" in capsys.readouterr().out


@pytest.mark.slow
def test_train_takes_a_dataset_name(tinynette, tmp_path, capsys):
    args = ["train", "tinynette", "--arch", "A", "--width", "0.0625", "--crop", "32", "--scale", "37", "--epochs", "1",
            "--batch", "4", "--workers", "0", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "best epoch 1: validation top-1 error " in out
    assert "top-5" not in out + err  # 2 classes: both are always among the top 5


def test_a_damaged_archive_is_refused_and_nothing_is_kept(isolated_cache, file_server, tmp_path, monkeypatch):
    data = nette_archive()
    file_server.add("tinynette.tgz", data[:-100] + bytes(100))
    record = {"name": "tinynette", "file": "tinynette.tgz", "urls": [file_server.url("tinynette.tgz")],
              "hash": {"md5": hashlib.md5(data).hexdigest()}, "folder": "tinynette"}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps({"datasets": [record]}))
    monkeypatch.setenv("VGGNET_CATALOGUE", str(tmp_path / "c.json"))
    with pytest.raises(ValueError, match="refused, nothing kept: the download is not the published file: expected md5"):
        open_dataset("tinynette")
    home = isolated_cache / "datasets"
    assert [p.name for p in home.iterdir() if p.name != ".locks"] == ["downloads"]
    assert list((home / "downloads").iterdir()) == []


def test_an_unknown_dataset_name_gives_the_closest_names(isolated_cache):
    with pytest.raises(FileNotFoundError) as caught:
        open_dataset("imagenete")
    message = str(caught.value)
    assert message.startswith(
        "imagenete: no such dataset folder (or use the built-in 'digits', or a name to download: "
    )
    assert "imagenette-160" in message and "imagenette-320" in message and "cifar" not in message


def special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


HOSTILE = {
    "parent folder": (
        [file_member("tinynette/../../evil.txt", b"x")],
        "'tinynette/../../evil.txt' points outside the folder",
    ),  # fmt: skip
    "absolute path": ([file_member("/tmp/evil.txt", b"x")], "'/tmp/evil.txt' points outside the folder"),
    "symbolic link": ([special("tinynette/passwd", tarfile.SYMTYPE, "/etc/passwd")], "'tinynette/passwd' is a link"),
    "hard link": ([special("tinynette/passwd", tarfile.LNKTYPE, "/etc/passwd")], "'tinynette/passwd' is a link"),
    "device": ([special("tinynette/dev", tarfile.CHRTYPE)], "'tinynette/dev' is a device or special file"),
    "fifo": ([special("tinynette/fifo", tarfile.FIFOTYPE)], "'tinynette/fifo' is a device or special file"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_archive_is_refused_in_one_line_and_writes_nothing_outside(tmp_path, case):
    members, message = HOSTILE[case]
    archive = tmp_path / "a.tgz"
    archive.write_bytes(tar_bytes([file_member("tinynette/ok.txt", b"fine"), *members]))
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(ValueError) as caught:
        extract_tar(archive, dest, progress=False)
    assert str(caught.value) == f"{archive}: member {message}; refused"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.tgz", "deep", "dest", "ok.txt", "tinynette"]


def test_member_count_and_declared_size_are_bounded(tmp_path, monkeypatch):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(tar_bytes([file_member(f"d/{i}.txt", b"12345") for i in range(5)]))
    monkeypatch.setattr(fetch_module, "MAX_MEMBERS", 4)
    with pytest.raises(ValueError, match=r"more than 4 members; refused \(MAX_MEMBERS\)"):
        extract_tar(archive, tmp_path / "out1", progress=False)
    monkeypatch.setattr(fetch_module, "MAX_MEMBERS", 100)
    monkeypatch.setattr(fetch_module, "MAX_EXTRACTED_BYTES", 12)
    with pytest.raises(ValueError, match="members declare more than 0 GiB; refused"):
        extract_tar(archive, tmp_path / "out2", progress=False)
    assert sorted(p.name for p in (tmp_path / "out2" / "d").iterdir()) == ["0.txt", "1.txt"]  # stopped before the third
    monkeypatch.setattr(fetch_module, "MAX_EXTRACTED_BYTES", 25)
    assert extract_tar(archive, tmp_path / "out3", progress=False) == 5


@pytest.mark.parametrize("experiment", ["imagenette", "claims", "transfer"])
def test_the_experiments_take_a_dataset_name(experiment, isolated_cache, tmp_path, monkeypatch, capsys):
    run = experiment_module(experiment, "run")
    monkeypatch.setenv("VGGNET_OFFLINE", "1")  # the name is looked up and fetched: offline, it stops in one line
    args = ["--data", "imagenette-160", "--root", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert run.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("run.py: error: cannot get imagenette-160: offline") and "imagenette2-160.tgz" in err
