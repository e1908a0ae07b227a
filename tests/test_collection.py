"""A photo collection end to end: embed into shards (resume, parts, merge), index, search, duplicates, bad input."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import one_line_refusal
from vggnet import build
from vggnet.cli import main
from vggnet.collection import (
    EmbedConfig,
    build_index,
    describer,
    duplicate_groups,
    embed,
    find_duplicates,
    list_photos,
    load_photo,
    merge,
    open_collection,
    open_searcher,
    search_photo,
)
from vggnet.collection import search as search_module
from vggnet.collection.photos import part_from_environment, shards_of_part
from vggnet.features import features_at
from vggnet.weights import Preprocessing, save_weights

SIZE = 48  # photos rescaled to 48 px: relu5_2 maps of 3x3 in net A


def _photo(path: Path, seed: int, size: tuple[int, int] = (80, 60)) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)  # smooth blocks: survive a resize and JPEG
    Image.fromarray(base).resize(size, Image.BILINEAR).save(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """11 photos in nested folders (JPEG and PNG, landscape and portrait) and one unreadable file."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(11):
        sub = root / ("a" if i < 5 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        _photo(sub / f"p{i:02d}.{'png' if i % 3 == 0 else 'jpg'}", i, (80, 60) if i % 2 else (50, 70))
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "notes.txt").write_text("not a photo")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "a.safetensors"
    save_weights(build("A", width=1 / 16, num_classes=4).eval(), path, preprocessing=Preprocessing.torchvision())
    return path


@pytest.fixture(scope="module")
def gap_weights(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("w") / "gap.safetensors"
    save_weights(build("A", width=1 / 16, num_classes=4, head="gap").eval(), path, preprocessing=Preprocessing())
    return path


def cfg(**kw) -> EmbedConfig:
    return EmbedConfig(**{"size": SIZE, "shard_size": 4, "batch": 3, "workers": 0, "device": "cpu", **kw})


@pytest.fixture(scope="module")
def emb(photos, weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emb") / "emb"
    embed(photos, weights, out, cfg(descriptor="gem"), progress=False)
    return out


def test_photos_are_listed_recursively_sorted_and_a_list_gives_the_same(photos, tmp_path):
    found = list_photos(photos)
    assert found.paths == sorted(found.paths) and len(found.paths) == 12  # 11 photos + broken.jpg, not notes.txt
    assert found.paths[0] == "a/broken.jpg" and "b/c/p10.jpg" in found.paths
    listing = tmp_path / "list.txt"
    listing.write_text("# my photos\n" + "\n".join(str(photos / p) for p in reversed(found.paths)) + "\n\n")
    assert [str(list_photos(listing).full(p)) for p in list_photos(listing).paths] == [
        str(photos / p) for p in found.paths
    ]


def test_shards_hold_every_photo_once_with_the_unreadable_one_named(emb, photos, capsys):
    c = open_collection(emb)
    assert c.manifest["shards"] == 3 and c.manifest["photos"] == 12  # shards of 4, 4, 4
    assert c.unreadable == ["a/broken.jpg"] and len(c.paths) == 11
    x = c.descriptors()
    assert x.shape == (11, c.manifest["dim"]) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    lines = (emb / "shard-00000.csv").read_text().splitlines()
    assert lines[:3] == ["path,shard,row", "a/broken.jpg,0,", "a/p00.png,0,0"]


def test_descriptors_equal_the_network_run_directly_on_each_photo(emb, photos, weights):
    """The stored GeM of each photo = GeM (p = 3) of relu5_2 computed here, photo by photo (batches of 1)."""
    from vggnet.weights import load_weights

    model, meta = load_weights(weights)
    c = open_collection(emb)
    x = c.descriptors()
    for row, path in enumerate(c.paths):
        img = load_photo(photos / path, SIZE)[None].float() / 255
        with torch.no_grad():
            f = features_at(model, img, ["relu5_2"], preprocessing=meta.preprocessing)["relu5_2"].double()
        ref = f.clamp_min(1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)[0].numpy()
        np.testing.assert_allclose(x[row], ref / np.linalg.norm(ref), atol=1e-5)


def test_multi_scale_is_the_average_of_the_normalised_scales(weights, photos):
    net = describer(weights, cfg(descriptor="mac", scales=(1.0, 0.5)))
    one = describer(weights, cfg(descriptor="mac", scales=(1.0,)))
    half = describer(weights, cfg(descriptor="mac", scales=(1.0,), size=SIZE // 2))
    x = torch.stack([load_photo(photos / "a/p01.jpg", SIZE), load_photo(photos / "b/c/p07.jpg", SIZE)])
    small = torch.nn.functional.interpolate(x.float(), size=(SIZE // 2, SIZE // 2), mode="bilinear", antialias=True)
    # `half` reads uint8; the describer resizes floats: compare on the same float input
    d_half = half.model, half.preprocessing
    with torch.no_grad():
        f = features_at(d_half[0], small / 255.0, ["relu5_2"], preprocessing=d_half[1])["relu5_2"]
    mean = one(x) + torch.nn.functional.normalize(f.amax(dim=(2, 3)), dim=1)
    np.testing.assert_allclose(net(x).numpy(), torch.nn.functional.normalize(mean / 2, dim=1).numpy(), atol=1e-5)


@pytest.mark.parametrize("descriptor", ["gem", "rmac", "fc7"])
def test_fast_path_gives_the_plain_descriptors(photos, descriptor, monkeypatch, tmp_path):
    """--fast's Winograd layers, up to the tap (the PyTorch form, which takes layers from 128 channels at 1/4
    width; the compiled kernels' own tests cover those)."""
    from vggnet.cpu.winograd import WinogradConv2d

    monkeypatch.setenv("VGGNET_NATIVE", "0")
    weights = tmp_path / "quarter.safetensors"
    save_weights(build("A", width=1 / 4, num_classes=4).eval(), weights, preprocessing=Preprocessing.torchvision())
    x = torch.stack([load_photo(photos / p, SIZE) for p in ("a/p01.jpg", "a/p03.png", "b/c/p08.jpg")])
    plain = describer(weights, cfg(descriptor=descriptor))(x)
    net = describer(weights, cfg(descriptor=descriptor, fast=True))
    assert sum(isinstance(m, WinogradConv2d) for m in net.model.features) >= 2
    fast = net(x)
    np.testing.assert_allclose(fast.numpy(), plain.numpy(), atol=1e-5)


def test_batch_size_and_loader_processes_do_not_change_the_descriptors(emb, photos, weights, tmp_path):
    out = tmp_path / "emb"
    embed(photos, weights, out, cfg(descriptor="gem", batch=7, workers=2), progress=False)
    np.testing.assert_allclose(open_collection(out).descriptors(), open_collection(emb).descriptors(), atol=1e-5)


def test_rerun_skips_finished_shards_and_redoes_the_one_a_kill_interrupted(photos, weights, tmp_path, monkeypatch):
    out = tmp_path / "emb"
    calls = {"n": 0}
    real = describer(weights, cfg()).__class__.__call__

    def dies_on_third_batch(self, x):
        calls["n"] += 1
        if calls["n"] == 4:  # the zero batch that sizes the descriptor, then photos 0-2, 3-5 (shard 0 done), 6-8
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr("vggnet.collection.extract.Describer.__call__", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        embed(photos, weights, out, cfg(), progress=False)
    assert (out / "shard-00000.csv").exists() and not (out / "shard-00001.csv").exists()
    assert not list(out.glob(".*.tmp"))
    first = (out / "shard-00000.npy").stat().st_mtime_ns
    monkeypatch.setattr("vggnet.collection.extract.Describer.__call__", real)
    r = embed(photos, weights, out, cfg(), progress=False)
    assert (r.done_before, r.written, r.complete) == (1, 2, True)
    assert (out / "shard-00000.npy").stat().st_mtime_ns == first
    again = embed(photos, weights, out, cfg(), progress=False)
    assert (again.done_before, again.written, again.embedded) == (3, 0, 0)


DIES_WRITING_SHARD_1 = """
import os, signal, sys
import vggnet.collection.store as store
real, calls = store._save_npy, []
def dying(tmp, array):
    calls.append(1)
    if len(calls) == 2:  # shard 1's descriptors: half a file in the temporary name, then SIGKILL
        open(tmp, "wb").write(b"\\x93NUMPY half")
        os.kill(os.getpid(), signal.SIGKILL)
    real(tmp, array)
store._save_npy = dying
from vggnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_while_writing_a_shard_loses_only_that_shard(photos, weights, emb, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "emb"
    argv = [
        "embed",
        str(photos),
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--size",
        str(SIZE),
        "--shard-size",
        "4",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", DIES_WRITING_SHARD_1, *argv, "--workers", "0", "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "shard-00000.csv").exists() and not (out / "shard-00001.npy").exists()
    assert len(list(out.glob(".shard-00001.npy.*.tmp"))) == 1  # the dead writer's half file, under a temporary name
    with pytest.raises(ValueError, match=r"2 of 3 shards missing \(1, 2\)"):
        open_collection(out)
    r = embed(photos, weights, out, cfg(descriptor="gem"), progress=False)
    assert (r.done_before, r.written) == (1, 2) and not list(out.glob(".*.tmp"))
    np.testing.assert_allclose(open_collection(out).descriptors(), open_collection(emb).descriptors(), atol=1e-5)


def test_parts_split_evenly_and_merge_into_the_whole(photos, weights, emb, tmp_path, capsys):
    assert [shards_of_part(7, (i, 3)) for i in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    a, b = tmp_path / "a", tmp_path / "b"
    ra = embed(photos, weights, a, cfg(descriptor="gem", shard="0/2"), progress=False)
    assert (ra.written, ra.complete) == (2, False)  # shards 0 and 2 of 3
    with pytest.raises(ValueError, match=r"1 of 3 shards missing \(1\)"):
        open_collection(a)
    with pytest.raises(ValueError, match=r"1 of 3 shards are in no part \(1\)"):
        merge(tmp_path / "m0", [a])
    embed(photos, weights, b, cfg(descriptor="gem", shard="1/2"), progress=False)
    merged = merge(tmp_path / "m", [a, b])
    np.testing.assert_allclose(merged.descriptors(), open_collection(emb).descriptors(), atol=1e-5)
    assert merged.paths == open_collection(emb).paths
    shutil.copy(a / "shard-00000.npy", b / "shard-00000.npy")
    shutil.copy(a / "shard-00000.csv", b / "shard-00000.csv")
    capsys.readouterr()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m2")]) == 2
    one_line_refusal(2, capsys.readouterr().err, "merge", "shard 0 is in both", "overlap")
    assert not (tmp_path / "m2" / "collection.json").exists()


def test_torchrun_and_slurm_arrays_name_the_part(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(var, raising=False)
    assert part_from_environment() == (0, 1)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
    assert part_from_environment() == (2, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert part_from_environment() == (1, 8)


def test_search_finds_the_photo_itself_first_with_faiss_and_with_numpy(emb, photos, monkeypatch):
    build_index(emb)
    _, found = search_photo(emb, photos / "b/c/p07.jpg", k=3, device="cpu")
    assert found[0].path == "b/c/p07.jpg" and found[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert [n.rank for n in found] == [1, 2, 3] and found[0].distance == pytest.approx(0.0, abs=3e-3)
    assert json.loads((emb / "index.json").read_text())["kind"] == "faiss-flat-ip"
    monkeypatch.setattr(search_module, "optional", lambda *a: None)
    info = build_index(emb)
    assert info.kind == "numpy-exact" and not (emb / "index.faiss").exists()
    _, exact = search_photo(emb, photos / "b/c/p07.jpg", k=3, device="cpu")
    assert [n.path for n in exact] == [n.path for n in found]
    np.testing.assert_allclose([n.similarity for n in exact], [n.similarity for n in found], atol=1e-5)
    monkeypatch.undo()
    assert build_index(emb, exact_limit=5).kind == "faiss-hnsw"  # 11 photos: HNSW above 5
    _, hnsw = search_photo(emb, photos / "b/c/p07.jpg", k=3, device="cpu")
    assert [n.path for n in hnsw] == [n.path for n in found]
    build_index(emb)


def test_whitening_is_stored_beside_the_shards_and_applied_to_queries(emb, photos, tmp_path, weights):
    info = build_index(emb, whiten=True)
    assert info.whitened and (emb / "whitening.npz").exists() and info.dim == 10  # 11 photos: 10 directions
    s = open_searcher(emb)
    x = s.collection.descriptors()
    sims, rows = s.search(s.prepare(x[3:4]), 1)
    assert rows[0, 0] == 3 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    other = tmp_path / "other"
    embed(photos, weights, other, cfg(descriptor="gem", shard_size=5), progress=False)
    assert build_index(emb, whiten_from=other).whitened
    wrong = tmp_path / "wrong"
    embed(photos, weights, wrong, cfg(descriptor="mac"), progress=False)
    with pytest.raises(ValueError, match="made with another descriptor"):
        build_index(emb, whiten_from=wrong)
    build_index(emb)
    assert not (emb / "whitening.npz").exists()


def test_duplicate_groups_are_the_connected_pairs_above_the_threshold():
    x = np.array([[1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [0, 0, 1], [0, 0.1, 0.995], [0.7, 0.7, 0.1]], np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert duplicate_groups(x, 0.98, block=2) == [[0, 1], [3, 4]]
    assert duplicate_groups(x, 0.5) == [[0, 1, 2, 5], [3, 4]]
    assert duplicate_groups(x, 1.0) == []


def test_planted_copies_are_found_as_duplicates(photos, weights, tmp_path):
    folder = tmp_path / "dups"
    shutil.copytree(photos, folder)
    with Image.open(folder / "a/p01.jpg") as im:
        im.resize((160, 120)).save(folder / "a/p01_big.jpg", quality=70)
    out = tmp_path / "emb"
    embed(folder, weights, out, cfg(descriptor="mac"), progress=False)
    groups = find_duplicates(out, 0.995)
    assert ["a/p01.jpg", "a/p01_big.jpg"] in groups


# -- the command line and bad input ------------------------------------------------------------------------


def test_cli_embed_index_search_and_html(photos, weights, tmp_path, capsys):
    out = tmp_path / "emb"
    argv = ["embed", str(photos), "--weights", str(weights), "--out", str(out), "--size", str(SIZE), "--quiet"]
    assert main([*argv, "--descriptor", "rmac", "--shard-size", "5", "--workers", "0"]) == 0
    cap = capsys.readouterr()
    assert "3 shard(s) written" in cap.out and "11 photos described" in cap.out
    assert "skipping unreadable image" in cap.err and "broken.jpg" in cap.err
    assert main(["index", str(out)]) == 0
    assert capsys.readouterr().out.split()[1:5] == ["faiss-flat-ip", "index", "of", "11"]
    html = tmp_path / "hits.html"
    assert main(["search", str(out), str(photos / "a/p01.jpg"), "-k", "4", "--html", str(html), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["1", "cos", "1.0000", "distance", "0.0000", "a/p01.jpg"] and len(lines) == 5
    page = html.read_text()
    assert page.count("data:image/jpeg;base64,") == 5 and 'src="http' not in page


@pytest.fixture
def bad(tmp_path, photos, weights, gap_weights, emb):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    other = tmp_path / "mac"
    embed(photos, weights, other, cfg(descriptor="mac"), progress=False)
    build_index(other)
    stale = tmp_path / "stale"
    shutil.copytree(emb, stale)
    for f in ("index.json", "index.faiss"):
        shutil.copy(other / f, stale / f)
    gapped = tmp_path / "gapped"
    shutil.copytree(emb, gapped)
    (gapped / "shard-00001.csv").unlink()
    return {"tmp": tmp_path, "photos": photos, "w": weights, "gap": gap_weights, "stale": stale, "gapped": gapped}


EMBED = ["--weights", "{w}", "--out", "{tmp}/out", "--size", str(SIZE), "--workers", "0", "--quiet"]
BAD = {
    "empty folder": (["embed", "{tmp}/empty", *EMBED], "embed", ["empty", "empty"]),
    "no images": (["embed", "{tmp}/texts", *EMBED], "embed", ["texts", "no images among its 1 file"]),
    "no such folder": (["embed", "{tmp}/nowhere", *EMBED], "embed", ["nowhere", "no such folder"]),
    "no fc7 in a gap head": (
        ["embed", "{photos}", *EMBED, "--weights", "{gap}", "--descriptor", "fc7"],
        "embed",
        ["no layer fc7 (gap head)"],
    ),
    "a size over the activation budget": (
        ["embed", "{photos}", *EMBED, "--size", "20000"],
        "embed",
        ["--size", "over the limit"],
    ),
    "a layer that is none": (["embed", "{photos}", *EMBED, "--layer", "relu9_9"], "embed", ["no layer relu9_9"]),
    "a shard missing": (["index", "{gapped}"], "index", ["1 of 3 shards missing (1)"]),
    "query not an image": (["search", "{stale}", "{photos}/notes.txt"], "search", ["built from other descriptors"]),
    "stale index": (["search", "{stale}", "{photos}/a/p01.jpg"], "search", ["built from other descriptors (mac"]),
    "query unreadable": (["search", "{gapped}/../mac", "{photos}/a/broken.jpg"], "search", ["not a readable image"]),
    "wrong descriptor": (
        ["search", "{tmp}/mac", "{photos}/a/p01.jpg", "--descriptor", "gem"],
        "search",
        ["are mac, not gem"],
    ),
    "not a collection": (["index", "{tmp}/empty"], "index", ["not a collection's descriptors"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_complete_looking(case, bad, capsys):
    argv, command, needles = BAD[case]
    status = main([a.format(**bad) for a in argv])
    one_line_refusal(status, capsys.readouterr().err, command, *needles)
    assert not (bad["tmp"] / "out").exists()
    assert os.listdir(bad["tmp"] / "empty") == []


# -- the results page in a browser (as tests/test_view.py does) ----------------------------------------------


from test_view import browser as viewer_browser  # noqa: E402

browser = viewer_browser  # the viewer tests' headless Chromium, one per module


def test_browser_shows_the_query_and_its_neighbours_without_requests(browser, emb, photos, tmp_path):
    from vggnet.collection.page import write_results_page

    build_index(emb)
    searcher, found = search_photo(emb, photos / "a/p03.png", k=5, device="cpu")
    page = write_results_page(tmp_path / "hits.html", photos / "a/p03.png", searcher.collection.root, found)
    browser.get(page.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith("data:") for name in fetched)
    shown = browser.execute_script(
        "return [...document.querySelectorAll('figure')].map(f => [f.querySelector('img').naturalWidth,"
        " f.querySelector('img').complete, f.querySelector('figcaption').textContent])"
    )
    assert len(shown) == 6 and all(w > 0 and done for w, done, _ in shown)
    assert shown[0][2].startswith("query: ") and shown[1][2].startswith("1. a/p03.png (cos 1.0000")
    assert [s[2].split()[1] for s in shown[1:]] == [n.path for n in found]
