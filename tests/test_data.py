import numpy as np
import pytest
import torch
from PIL import Image

from vggnet.data import Preprocessing, open_image, scan_image_folder


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
