"""The batched input path (`--decode cpu`) against the per-image PIL path: same crops, same pixels, same skips."""

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vggnet.cli import main
from vggnet.configs import EvalConfig, TrainConfig
from vggnet.data import (
    BatchedImages,
    EvalTransform,
    ImageFolder,
    RGBStats,
    TrainTransform,
    Transformed,
    batch_loader,
    decode_device,
    rescale,
    rescaled_crop,
    rescaled_size,
    to_uint8_tensor,
)
from vggnet.data.batched import read_raw
from vggnet.data.resample import resize, resize_boxes
from vggnet.data.transforms import crop_box
from vggnet.train import load_checkpoint, train

STATS = RGBStats(
    [120.0, 110.0, 100.0], [900.0, 60.0, 10.0], np.linalg.qr(np.arange(9.0).reshape(3, 3) + np.eye(3))[0].tolist()
)


def smooth(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like RGB image: coarse noise upsampled (JPEG keeps its detail)."""
    return Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)


def make_folder(root: Path) -> Path:
    """root/<class>/ with RGB, greyscale and CMYK JPEGs, a PNG, a truncated JPEG and a text file named .jpg."""
    rng = np.random.default_rng(0)
    sizes = [(48, 40), (40, 56), (64, 64), (37, 50), (90, 33), (45, 45)]
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            smooth(rng, w, h).save(root / c / f"{i}.jpg", quality=90)
    smooth(rng, 52, 44).convert("L").save(root / "a" / "grey.jpg", quality=90)
    smooth(rng, 44, 52).convert("CMYK").save(root / "a" / "cmyk.jpg", quality=90)
    smooth(rng, 60, 45).save(root / "b" / "png.png")
    data = io.BytesIO()
    smooth(rng, 50, 40).save(data, "JPEG", quality=90)
    (root / "b" / "truncated.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) * 2 // 3])  # header whole
    (root / "b" / "text.jpg").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("batched"))


# -- resampling: Pillow's pixels ------------------------------------------------------------------


@pytest.mark.parametrize("size", [(48, 40), (40, 56), (200, 150), (31, 90)])
def test_resize_boxes_equal_pillow_crops_and_rescales(size):
    rng = np.random.default_rng(sum(size))
    image = smooth(rng, *size)
    tensor = to_uint8_tensor(image)
    for s in (32, 37, 48, 64, 100):  # up- and downscaling
        rw, rh = rescaled_size(size, s)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, rw - 32 + 1)), int(rng.integers(0, rh - 32 + 1))
            want = to_uint8_tensor(rescaled_crop(image, s, x0, y0, 32))
            got = resize_boxes([tensor], [crop_box(size, s, x0, y0, 32)], (32, 32))[0]
            assert torch.equal(got, want), (size, s, x0, y0)
        assert torch.equal(resize(tensor, (rw, rh)), to_uint8_tensor(rescale(image, s)))


def test_pass_order_follows_the_installed_pillow():
    from vggnet.data.resample import _resize_group, horizontal_first, pillow_order

    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 56, 40), dtype=np.uint8))
    box = (0.0, 2.5, 40.0, 42.3)
    rows, columns = (_resize_group([image], [box], (32, 32), [False], rows_first=r) for r in (True, False))
    assert not torch.equal(rows, columns)  # the probe can tell the two orders apart
    assert pillow_order() in ("rows", "size")
    assert horizontal_first((224, 224), (224, 224))  # equal shrink (none): rows first under both rules
    assert horizontal_first((40, 56), (32, 32)) == (pillow_order() == "rows")


def test_resize_boxes_batches_images_of_different_sizes():
    rng = np.random.default_rng(1)
    images = [smooth(rng, w, h) for w, h in [(40, 30), (30, 120), (33, 33)]]  # 30x120: columns first in Pillow 13
    boxes = [(1.5, 2.25, 30.0, 28.0), (0.0, 10.0, 30.0, 110.5), (0.0, 0.0, 33.0, 33.0)]
    got = resize_boxes([to_uint8_tensor(im) for im in images], boxes, (24, 20))
    assert got.shape == (3, 3, 20, 24) and got.dtype == torch.uint8
    for g, im, box in zip(got, images, boxes, strict=True):
        assert torch.equal(g, to_uint8_tensor(im.resize((24, 20), Image.BILINEAR, box=box)))


# -- the batched dataset against Transformed ----------------------------------------------------------


def both_paths(folder: Path, transform, seed: int = 3, epoch: int = 2, batch: int = 5, workers: int = 0):
    """Every batch of the folder through the per-image path and the batched path (CPU)."""
    base = ImageFolder(folder)
    per_image, batched = Transformed(base, transform, seed), BatchedImages(base, transform, seed)
    per_image.set_epoch(epoch)
    batched.set_epoch(epoch)
    order = list(np.random.default_rng(0).permutation(len(base)))
    a = list(batch_loader(per_image, batch, sampler=order))
    b = list(batch_loader(batched, batch, sampler=order, workers=workers))
    return a, b


@pytest.mark.parametrize(
    "transform",
    [
        TrainTransform((36, 60), 32, STATS),  # jittered S, flips, colour shift
        TrainTransform((32, 32), 32, STATS, color_shift=0.0, flip=False),
        EvalTransform(40, 32, STATS.mean),  # the per-epoch validation's centre crop
    ],
    ids=["jittered", "fixed", "centre"],
)
def test_batched_path_gives_the_per_image_tensors(folder, transform):
    a, b = both_paths(folder, transform)
    assert len(a) == len(b) == 4
    skipped = []
    for (xa, ya, sa), (xb, yb, sb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and sa == sb
        assert xa.shape == xb.shape and torch.equal(xa, xb)  # bit for bit: same decoder, Pillow's resize in int32
        skipped += sb
    names = sorted(Path(ImageFolder(folder).samples[i][0]).name for i in skipped)
    assert names == ["text.jpg", "truncated.jpg"]


@pytest.mark.parametrize("source", ["torchvision", "caffe"])
def test_batched_path_gives_a_fine_tunes_input_too(folder, source):
    from vggnet.train.finetune import input_adapter, rgb255_mean, to_network_input
    from vggnet.weights import Preprocessing

    pre = getattr(Preprocessing, source)()  # 0-1 RGB over std; 0-255 BGR
    transform = TrainTransform((36, 60), 32, dataclasses.replace(STATS, mean=rgb255_mean(pre)))
    base = ImageFolder(folder)
    per_image = Transformed(base, to_network_input(transform, pre), 3)
    batched = BatchedImages(base, transform, 3, adapt=input_adapter(pre))
    order = list(np.random.default_rng(0).permutation(len(base)))
    a, b = list(batch_loader(per_image, 5, sampler=order)), list(batch_loader(batched, 5, sampler=order))
    assert len(a) == len(b) == 4
    for (xa, ya, _), (xb, yb, _) in zip(a, b, strict=True):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    assert float(a[0][0].abs().max()) < (3.0 if source == "torchvision" else 256.0)  # the weights' scale


def test_batches_finished_in_the_main_process_equal_the_loaders(folder):
    from torch.utils.data import DataLoader

    from vggnet.data.batched import BatchLoader

    ds = BatchedImages(ImageFolder(folder), TrainTransform((36, 60), 32, STATS), seed=1)
    in_loader = list(batch_loader(ds, 5))
    in_main = list(BatchLoader(DataLoader(ds, 5, collate_fn=list), ds))  # what a GPU does, one batch ahead
    assert len(in_main) == len(in_loader) == 4
    assert in_main[-1][0] is None and len(in_main[-1][2]) == 2  # the last batch: the two bad files only
    for (xa, ya, sa), (xb, yb, sb) in zip(in_loader[:-1], in_main[:-1], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and sa == sb


def test_raw_items_are_jpeg_bytes_or_pil_decoded(folder):
    base = ImageFolder(folder)
    kinds = {}
    with pytest.warns(UserWarning, match="skipping unreadable image .*text.jpg"):
        for i, (path, _) in enumerate(base.samples):
            payload, _, size = read_raw(base, i)
            kinds[Path(path).name] = None if payload is None else (payload.dim(), size)
    assert kinds["0.jpg"] == (1, (48, 40)) and kinds["grey.jpg"] == (1, (52, 44))  # bytes, header size
    assert kinds["cmyk.jpg"] == (3, (44, 52)) and kinds["png.png"] == (3, (60, 45))  # decoded by PIL
    assert kinds["truncated.jpg"] == (1, (50, 40))  # the header reads; the decoder refuses it later
    assert kinds["text.jpg"] is None


def test_same_seed_same_crops_other_epoch_other_crops(folder):
    transform = TrainTransform((36, 60), 32, STATS)
    base = ImageFolder(folder)
    ds = BatchedImages(base, transform, seed=5)
    draws = [ds[i][3] for i in range(4)]
    assert [ds[i][3].x0 for i in range(4)] == [d.x0 for d in draws]
    ds.set_epoch(1)
    assert [(d.scale, d.x0, d.y0) for d in draws] != [(ds[i][3].scale, ds[i][3].x0, ds[i][3].y0) for i in range(4)]


@pytest.mark.slow
def test_loader_processes_give_the_same_batches(folder):
    a, b = both_paths(folder, TrainTransform((36, 60), 32, STATS), workers=2)
    for (xa, ya, sa), (xb, yb, sb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and sa == sb


def test_real_photos_equal_bit_for_bit():
    from conftest import IMAGENETTE

    root = Path(IMAGENETTE, "val")
    if not root.is_dir():
        pytest.skip(f"real photos not found at {IMAGENETTE}")
    files = sorted(root.rglob("*.JPEG"))[::97][:24]  # two dozen photos across the classes
    base = ImageFolder(root)
    keep = [i for i, (p, _) in enumerate(base.samples) if Path(p) in set(files)]
    transform = TrainTransform((256, 512), 224, STATS)  # the paper's jittering
    per_image = Transformed(base, transform, seed=0)
    batched = BatchedImages(base, transform, seed=0)
    (xa, _, _), (xb, _, _) = (next(iter(batch_loader(d, len(keep), sampler=keep))) for d in (per_image, batched))
    assert xa.shape == (24, 3, 224, 224) and torch.equal(xa, xb)


# -- training and evaluation with --decode cpu ----------------------------------------------------------


def tiny(data: str, out: Path, **changes) -> TrainConfig:
    base = dict(
        data=data, out=str(out), width=1 / 16, crop=32, scale=[36, 48], batch=4, epochs=1, init="kaiming",
        dropout=0.0, workers=0, threads=1, quiet=True, deterministic=True, stats_samples=100,
    )  # fmt: skip
    base.update(changes)
    return TrainConfig(**base)


@pytest.mark.slow
@pytest.mark.parametrize("data", ["folder", "digits"])
def test_training_with_decode_cpu_equals_decode_pil(folder, tmp_path, data, capsys):
    spec = str(folder) if data == "folder" else "digits"
    extra = {"epochs": 2} if data == "folder" else {"stats_samples": 50, "digits_size": 40, "batch": 96}
    runs = [train(tiny(spec, tmp_path / d, decode=d, **extra)) for d in ("pil", "cpu")]
    a, b = (load_checkpoint(r / "last.pt") for r in runs)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    timing = ("seconds", "images_per_s")
    strip = [
        [{k: v for k, v in json.loads(line).items() if k not in timing} for line in (r / "metrics.jsonl").open()]
        for r in runs
    ]
    assert strip[0] == strip[1]
    if data == "folder":
        assert strip[1][0]["skipped"] == 4  # text.jpg and truncated.jpg, in training and validation
        err = capsys.readouterr().err  # each bad file named once per split and run: train and val, pil and cpu
        assert err.count("unreadable train image") == err.count("unreadable val image") == 4
        assert err.count("truncated.jpg") == err.count("text.jpg") == 4


@pytest.mark.slow
def test_evaluate_with_decode_cpu_equals_decode_pil(folder, tmp_path):
    from vggnet.evaluate import evaluate
    from vggnet.model import VGG
    from vggnet.weights import Preprocessing, save_weights

    torch.manual_seed(0)
    model = VGG(arch="A", width=1 / 16, num_classes=2, input_size=32, head="conv")
    weights = tmp_path / "w.safetensors"
    save_weights(model, weights, preprocessing=Preprocessing("RGB", 255.0, (120.0, 110.0, 100.0), (1.0, 1.0, 1.0)),
                 class_names=["a", "b"], extra={"scale": [36, 48], "crop": 32})  # fmt: skip
    results = [
        evaluate([weights], str(folder), EvalConfig(m, "36,44", split="x", decode=d, device="cpu"), progress=False)
        for m in ("dense", "center")
        for d in ("pil", "cpu")
    ]
    for pil, cpu in (results[:2], results[2:]):
        assert torch.equal(pil.probs, cpu.probs) and torch.equal(pil.labels, cpu.labels)
        assert pil.skipped == cpu.skipped and sorted(Path(p).name for p in cpu.skipped) == ["text.jpg", "truncated.jpg"]
        assert cpu.images == 15  # of 17 files


# -- errors ---------------------------------------------------------------------------------------


def test_decode_gpu_without_cuda_is_a_one_line_error():
    assert decode_device("pil", torch.device("cpu")) is None
    assert decode_device("cpu", torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="--decode gpu decodes on the job's CUDA device, but"):
        decode_device("gpu", torch.device("cpu"))
    with pytest.raises(ValueError, match="--decode 'nvjpeg': accepted pil, cpu, gpu"):
        TrainConfig(decode="nvjpeg").check()
    with pytest.raises(ValueError, match="--decode 'x': accepted pil, cpu, gpu"):
        EvalConfig(decode="x").check()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cli_train_decode_gpu_exits_2_and_writes_nothing(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(folder), "--out", str(out), "--decode", "gpu", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--decode gpu decodes on the job's CUDA device, but this machine has no CUDA GPU" in err[0]
    assert not out.exists()
    assert main(["evaluate", str(tmp_path / "w.safetensors"), "--decode", "gpu", "--device", "cpu"]) == 2
    assert "--decode gpu decodes on the job's CUDA device" in capsys.readouterr().err


# -- on a GPU (skipped without CUDA; run by benchmarks/gpu_pipeline.sh) ----------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_gpu_resampling_equals_the_cpus():
    rng = np.random.default_rng(2)
    images = [to_uint8_tensor(smooth(rng, w, h)) for w, h in [(200, 150), (30, 120), (64, 64), (500, 375)]]
    boxes = [(10.5, 3.0, 150.0, 120.0), (0.0, 10.0, 30.0, 110.5), (0.0, 0.0, 64.0, 64.0), (100.0, 50.0, 400.0, 350.0)]
    flips = [True, False, True, False]
    want = resize_boxes(images, boxes, (56, 48), flips)
    got = resize_boxes([im.cuda() for im in images], boxes, (56, 48), flips)
    assert got.is_cuda and torch.equal(got.cpu(), want)  # integer arithmetic: the same on any device


@needs_cuda
@pytest.mark.slow
def test_gpu_path_gives_the_per_image_crops_up_to_the_decoder(folder):
    transform = TrainTransform((36, 60), 32, STATS)
    base = ImageFolder(folder)
    per_image = list(batch_loader(Transformed(base, transform, 3), 5))
    gpu = BatchedImages(base, transform, 3, device="cuda")
    batched = list(batch_loader(gpu, 5, workers=2))
    diffs = []
    for (xa, ya, sa), (xb, yb, sb) in zip(per_image, batched, strict=True):
        assert torch.equal(ya, yb) and sa == sb  # the same images skipped
        if xa is not None:
            assert xb.is_cuda and xa.shape == xb.shape
            diffs.append((xa - xb.cpu()).abs())
    d = torch.cat([x.flatten() for x in diffs])
    print(f"nvJPEG against libjpeg-turbo, after the transforms: max {d.max():.0f}, mean {d.mean():.4f}")
    assert d.mean() < 2.0  # same crops and flips: only the JPEG decoders' rounding differs


@needs_cuda
@pytest.mark.slow
def test_training_with_decode_gpu_runs_and_skips_the_bad_files(folder, tmp_path):
    run = train(tiny(str(folder), tmp_path / "gpu", decode="gpu", device="cuda", deterministic=False))
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped"] == 4 and record["images_per_s"] > 0
