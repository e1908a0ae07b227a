import numpy as np
import pytest
import torch
from PIL import Image

from vggnet.data import open_image, scan_image_folder
from vggnet.weights import Preprocessing


def test_preprocessing_caffe_is_bgr_0_255_minus_means():
    x = torch.rand(1, 3, 4, 4)
    y = Preprocessing.caffe()(x)
    expected_b = x[0, 2] * 255 - 103.939
    torch.testing.assert_close(y[0, 0], expected_b)
    torch.testing.assert_close(y[0, 2], x[0, 0] * 255 - 123.68)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "I;16", "LA"])
def test_open_image_converts_every_mode(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8))
    im = rgb.convert("L").convert("I;16") if mode == "I;16" else rgb.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    im.save(path)
    out = open_image(path)
    assert out.mode == "RGB" and out.size == (9, 8)


def test_unreadable_image_warns_with_path(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="skipping unreadable image .*bad.jpg"):
        assert open_image(bad) is None


def test_scan_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        scan_image_folder(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "1.png")
    with pytest.raises(ValueError, match="b: class folder holds no images"):
        scan_image_folder(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "2.jpg")
    samples, classes = scan_image_folder(tmp_path)
    assert classes == ["a", "b"] and [c for _, c in samples] == [0, 1]


def test_digits_fixed_split():
    from vggnet.data import open_dataset

    train, val = open_dataset("digits", "train", 24), open_dataset("digits", "val", 24)
    assert (len(train), len(val)) == (1437, 360)
    im, label = val[0]
    assert im.size == (24, 24) and im.mode == "RGB" and 0 <= label <= 9
    assert set(train.index).isdisjoint(val.index)


def test_open_dataset_folder_with_split(tmp_path):
    from vggnet.data import open_dataset

    for split in ("train", "val"):
        (tmp_path / split / "cat").mkdir(parents=True)
        Image.new("RGB", (5, 5)).save(tmp_path / split / "cat" / "a.png")
    ds = open_dataset(str(tmp_path), "val")
    assert ds.classes == ["cat"] and ds.root.endswith("val") and len(ds) == 1
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        open_dataset(str(tmp_path / "x"))


# -- CIFAR python batches ---------------------------------------------------------------------


def write_cifar10(root, n_per_batch=4):
    """A miniature CIFAR-10 folder in the original layout (Python-2-style bytes keys)."""
    import pickle

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    names = [f"class{i}".encode() for i in range(10)]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(batches):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 10 + b, 20 + b, 30 + b  # first image: flat colour
        labels = [(b + i) % 10 for i in range(n_per_batch)]
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f, protocol=2)


def test_cifar10_python_batches(tmp_path):
    from vggnet.data import open_dataset

    write_cifar10(tmp_path / "cifar-10-batches-py")
    train = open_dataset(f"cifar10:{tmp_path}", "train")
    val = open_dataset(str(tmp_path / "cifar-10-batches-py"), "val")  # recognised without the prefix
    assert (len(train), len(val)) == (20, 4)
    assert train.classes[:2] == ["class0", "class1"] and len(train.classes) == 10
    im, label = train[4]  # first image of data_batch_2: R, G, B planes 11, 21, 31
    assert im.size == (32, 32) and im.mode == "RGB" and label == 1
    assert np.asarray(im)[5, 7].tolist() == [11, 21, 31]
    assert val[0][1] == 5 and np.asarray(val[0][0])[0, 0].tolist() == [15, 25, 35]


def test_cifar100_fine_labels(tmp_path):
    import pickle

    from vggnet.data import open_dataset

    tmp_path.joinpath("c").mkdir()
    with open(tmp_path / "c" / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": ["x"] * 20}, f)
    for name, n in (("train", 6), ("test", 2)):
        data = np.zeros((n, 3072), dtype=np.uint8)
        with open(tmp_path / "c" / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": list(range(90, 90 + n)), "coarse_labels": [0] * n}, f)
    train, val = open_dataset(f"cifar100:{tmp_path / 'c'}", "train"), open_dataset(f"cifar100:{tmp_path / 'c'}", "val")
    assert (len(train), len(val), len(train.classes)) == (6, 2, 100)
    assert [train[i][1] for i in range(6)] == [90, 91, 92, 93, 94, 95]


def test_cifar_refuses_code_and_names_missing_files(tmp_path):
    import pickle

    from vggnet.data import Cifar, read_cifar_batch

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(ValueError, match=r"evil: not a CIFAR python batch \(refusing to load builtins.print\)"):
        read_cifar_batch(tmp_path / "evil")
    write_cifar10(tmp_path / "c10")
    (tmp_path / "c10" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3: no such CIFAR batch file"):
        Cifar(tmp_path / "c10", "cifar10", "train")


# -- statistics and transforms (section 3.1) ------------------------------------------------------------


class Images(torch.utils.data.Dataset):
    """Items from a list of arrays (None = unreadable)."""

    classes = ["a", "b"]

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        a = self.arrays[i]
        return (None if a is None else Image.fromarray(a)), i % 2


def test_stats_mean_and_covariance_eigendecomposition():
    from vggnet.data import compute_stats

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(7)] + [None]
    stats = compute_stats(Images(arrays), samples=100)
    pixels = np.concatenate([a.reshape(-1, 3) for a in arrays[:7]]).astype(np.float64)  # the unreadable one is skipped
    assert (stats.images, stats.pixels) == (7, 210)
    np.testing.assert_allclose(stats.mean, pixels.mean(0), rtol=1e-12)
    cov = np.cov(pixels.T, bias=True)
    v, e = np.asarray(stats.eigval), np.asarray(stats.eigvec)
    np.testing.assert_allclose(e @ np.diag(v) @ e.T, cov, rtol=1e-9, atol=1e-9)  # eigen-decomposition of the covariance
    assert v[0] >= v[1] >= v[2] >= 0


def test_stats_sample_size_and_file_round_trip(tmp_path):
    from vggnet.data import RGBStats, compute_stats

    arrays = [np.full((2, 2, 3), i, dtype=np.uint8) for i in range(10)]
    stats = compute_stats(Images(arrays), samples=4, seed=1)
    assert stats.images == 4
    stats.save(tmp_path / "s.json")
    assert RGBStats.load(tmp_path / "s.json") == stats
    (tmp_path / "bad.json").write_text('{"mean": [1, 2]}')
    with pytest.raises(ValueError, match="bad.json: not a statistics file"):
        RGBStats.load(tmp_path / "bad.json")


def stats_for_tests():
    from vggnet.data import RGBStats

    q = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    return RGBStats(mean=[100.0, 110.0, 120.0], eigval=[400.0, 100.0, 25.0], eigvec=q.tolist())


@pytest.mark.parametrize("size, s", [((60, 40), 48), ((40, 60), 33), ((50, 50), 32)])
def test_rescale_sets_the_shorter_side(size, s):
    from vggnet.data import rescale

    out = rescale(Image.new("RGB", size), s)
    assert min(out.size) == s
    assert abs(max(out.size) - max(size) * s / min(size)) <= 0.5  # isotropic


def test_rescaled_crop_equals_crop_of_the_rescaled_image():
    from vggnet.data import rescale, rescaled_crop, rescaled_size

    g = np.random.default_rng(0)
    smooth = Image.fromarray(g.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((200, 150), Image.BICUBIC)
    noise = Image.fromarray(g.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    differing = 0
    for image in (smooth, noise):
        for s in (64, 100, 150, 151, 300):  # down, equal (no resize), up
            w, h = rescaled_size(image.size, s)
            assert (w, h) == rescale(image, s).size
            for x0, y0 in ((0, 0), (w - 64, h - 64), (int(g.integers(0, w - 63)), int(g.integers(0, h - 63)))):
                a = np.asarray(rescale(image, s).crop((x0, y0, x0 + 64, y0 + 64)), dtype=np.int16)
                b = np.asarray(rescaled_crop(image, s, x0, y0, 64), dtype=np.int16)
                assert b.shape == (64, 64, 3)
                assert np.abs(a - b).max() <= 2  # float rounding of the box flips a rounding, never more
                differing += int((a != b).sum())
    assert differing < 0.01 * 2 * 5 * 3 * 64 * 64 * 3  # under 1% of the values differ at all


def test_train_transform_is_crop_flip_shift_minus_mean():
    from vggnet.data import TrainTransform

    stats = stats_for_tests()
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = Image.fromarray(a)
    # S fixed at the image size: the crop is the whole image, so only the flip and the colour shift remain.
    t = TrainTransform((32, 32), 32, stats, color_shift=0.1, flip=True)
    seen_flip = set()
    for seed in range(12):
        x = t(image, np.random.default_rng(seed))
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        d = (x + torch.tensor(stats.mean).view(3, 1, 1)).numpy().transpose(1, 2, 0)  # image + shift
        flipped = np.allclose(d - d[0, 0], a[:, ::-1] - a[0, -1].astype(np.float32), atol=1e-3)
        assert flipped or np.allclose(d - d[0, 0], a - a[0, 0].astype(np.float32), atol=1e-3)
        seen_flip.add(flipped)
        shift = d[0, 0] - (a[0, -1] if flipped else a[0, 0])  # the same RGB offset on every pixel
        rng = np.random.default_rng(seed)
        rng.integers(32, 33), rng.integers(0, 1), rng.integers(0, 1), rng.random()  # S, x0, y0, flip
        alpha = rng.normal(0, 0.1, 3)
        expected = np.asarray(stats.eigvec) @ (alpha * np.sqrt(stats.eigval))
        np.testing.assert_allclose(shift, expected, atol=1e-3)
    assert seen_flip == {True, False}


def test_train_transform_jitters_scale_and_crop_position():
    from vggnet.data import TrainTransform

    stats = stats_for_tests()
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))  # x ramp, value 4x
    t = TrainTransform((32, 64), 32, stats, color_shift=0.0, flip=False)
    spans, starts = set(), set()
    for seed in range(30):
        x = t(Image.fromarray(ramp), np.random.default_rng(seed))[0] + stats.mean[0]
        spans.add(round(float(x[0, -1] - x[0, 0])))  # horizontal extent of the crop, in source pixels x 4
        starts.add(round(float(x[0, 0])))
    assert len(spans) > 5 and len(starts) > 5  # S and the crop position are drawn per image
    # 32 output pixels cover 32 * 64 / S source pixels: about 31 (S=64) to 63 (S=32) pixel steps.
    assert 4 * 30 <= min(spans) and max(spans) <= 4 * 63


def test_transformed_is_reproducible_per_epoch_and_skips_unreadable():
    from vggnet.data import TrainTransform, Transformed, collate_skipping

    a = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    ds = Transformed(Images([a, None, a, a]), TrainTransform((32, 48), 32, stats_for_tests()), seed=3)
    first = ds[2][0]
    assert torch.equal(first, ds[2][0])  # same seed, epoch, index: same augmentation
    assert not torch.equal(first, ds[3][0])  # another index: another draw
    ds.set_epoch(1)
    assert not torch.equal(first, ds[2][0])  # another epoch: another draw
    x, y, skipped = collate_skipping([ds[i] for i in range(4)])
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [0, 0, 1] and skipped == [1]
    assert collate_skipping([ds[1]])[0] is None


def test_eval_transform_centre_crop():
    from vggnet.data import EvalTransform

    a = np.arange(48 * 64 * 3, dtype=np.uint32).reshape(48, 64, 3) % 251
    x = EvalTransform(48, 32, (1.0, 2.0, 3.0))(Image.fromarray(a.astype(np.uint8)))
    expected = a[8:40, 16:48].astype(np.float32) - np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert torch.equal(x, torch.from_numpy(expected.transpose(2, 0, 1).copy()))


def test_stats_command_writes_a_file_training_can_use(tmp_path, capsys):
    from vggnet.cli import main
    from vggnet.data import RGBStats

    assert (
        main(["stats", "digits", "--samples", "50", "--out", str(tmp_path / "s.json"), "--quiet", "--workers", "0"])
        == 0
    )
    out = capsys.readouterr().out
    stats = RGBStats.load(tmp_path / "s.json")
    assert stats.images == 50 and "mean RGB" in out and f"{stats.mean[0]:8.3f}" in out
    assert stats.mean[0] == pytest.approx(stats.mean[1]) == pytest.approx(stats.mean[2])  # grey digits
    assert stats.eigval[1] < 1e-6 * stats.eigval[0]  # all the variance lies along (1, 1, 1)
    np.testing.assert_allclose(np.abs(np.asarray(stats.eigvec)[:, 0]), [3**-0.5] * 3, atol=1e-9)


def test_stats_of_real_photos():
    import os

    from conftest import IMAGENETTE
    from vggnet.data import compute_stats, open_dataset

    if not os.path.isdir(IMAGENETTE):
        pytest.skip(f"real photos not found at {IMAGENETTE}")
    stats = compute_stats(open_dataset(IMAGENETTE, "train"), samples=20)
    assert stats.images == 20
    assert all(60 < m < 160 for m in stats.mean)  # natural photos: mid-grey means (ImageNet: 124, 116, 104)
    assert stats.eigval[0] > 5 * stats.eigval[1] > 0  # the first component (brightness) dominates
    assert np.all(
        np.sign(np.asarray(stats.eigvec)[:, 0]) == np.sign(stats.eigvec[0][0])
    )  # all-positive or all-negative


def test_a_sliver_that_would_rescale_into_a_bomb_is_refused():
    from vggnet.data import check_rescale

    check_rescale((640, 480), 512)  # an ordinary photo: nothing to say
    with pytest.raises(
        ValueError,
        match=r"20000x1 pixels rescaled to a shorter side of 256 would be 5120000x256, over the decompression-bomb limit of 178,956,970 pixels",
    ):
        check_rescale((20000, 1), 256)
