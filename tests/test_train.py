import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vggnet.cli import main
from vggnet.configs import TrainConfig
from vggnet.metrics import count_correct
from vggnet.model import VGG
from vggnet.train import (
    NET_A_LAYERS,
    PlateauSchedule,
    init_from,
    load_checkpoint,
    paper_names,
    train,
)
from vggnet.weights import read_meta, save_weights

SRC = str(Path(__file__).resolve().parents[1] / "src")


def make_folder(root: Path, train_per_class: int = 8, val_per_class: int = 2, size: int = 36) -> str:
    """ROOT/{train,val}/{red,blue}/*.png: two colour classes with noise, learnable in a few steps."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(("blue", "red")):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 120, (size, size + 4 * (i % 3), 3), dtype=np.uint8)
                a[..., 2 - 2 * c] += 120
                Image.fromarray(a).save(root / split / name / f"{i}.png")
    return str(root)


def tiny(data: str, out: Path, **changes) -> TrainConfig:
    """A training job of about a second: width 1/16, 32-pixel crops, batch 4, no dropout, deterministic."""
    base = dict(
        data=data, out=str(out), width=1 / 16, crop=32, scale=[32, 40], batch=4, epochs=1, init="kaiming",
        dropout=0.0, workers=0, threads=1, quiet=True, deterministic=True, stats_samples=100,
    )  # fmt: skip
    base.update(changes)
    return TrainConfig(**base)


def final_state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return make_folder(tmp_path_factory.mktemp("data"))


# -- schedule and metrics -------------------------------------------------------------------------------


def test_plateau_schedule_three_decreases_then_stop():
    s = PlateauSchedule(lr=0.01, patience=1, max_decreases=3)
    errors = [50, 40, 41, 42, 30, 31, 31, 31, 31, 31, 31]
    actions = [s.step(e) for e in errors]
    assert actions == [
        "improved", "improved", "wait", "decrease", "improved", "wait", "decrease", "wait", "decrease", "wait", "stop",
    ]  # fmt: skip
    assert s.lr == pytest.approx(1e-5) and s.decreases == 3 and s.best == 30


def test_count_correct_top1_top5_and_few_classes():
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5, 6], [6.0, 5, 4, 3, 2, 1, 0]])
    labels = torch.tensor([6, 2])
    assert [int(c) for c in count_correct(logits, labels)] == [1, 2]
    assert [int(c) for c in count_correct(logits, torch.tensor([1, 6]))] == [0, 0]  # both outside the top 5
    assert [int(c) for c in count_correct(logits[:, :3], torch.tensor([0, 2]))] == [0, 2]  # top-5 of 3 classes


# -- init from net A (section 3.1) ---------------------------------------------------------------------


def test_init_from_net_a_copies_exactly_seven_layers(tmp_path):
    a = VGG(arch="A", width=1 / 16, input_size=32, num_classes=5)
    save_weights(a, tmp_path / "a.safetensors")
    torch.manual_seed(1)
    d = VGG(arch="D", width=1 / 16, input_size=32, num_classes=5)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    copied = init_from(d, tmp_path / "a.safetensors")
    # A's conv1_1, conv2_1, conv3_1, conv3_2 are features.0/3/6/8; in D they are features.0/5/10/12.
    expected = [
        f"{m}.{p}" for m in ("features.0", "features.5", "features.10", "features.12") for p in ("weight", "bias")
    ]
    expected += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert copied == expected
    src, dst = a.state_dict(), d.state_dict()
    pairs = {
        "features.0": "features.0",
        "features.5": "features.3",
        "features.10": "features.6",
        "features.12": "features.8",
    }
    pairs.update({f"classifier.{i}": f"classifier.{i}" for i in (0, 3, 6)})
    for key in dst:
        module, param = key.rsplit(".", 1)
        if module in pairs:
            assert torch.equal(dst[key], src[f"{pairs[module]}.{param}"]), key
        else:
            assert torch.equal(dst[key], before[key]), key  # left as initialised
    assert set(paper_names(d)) >= set(NET_A_LAYERS)


def test_init_from_bn_and_same_config_and_refusals(tmp_path):
    a_bn = VGG(arch="A_bn", width=1 / 16, input_size=32, num_classes=3)
    save_weights(a_bn, tmp_path / "a.safetensors")
    e_bn = VGG(arch="E_bn", width=1 / 16, input_size=32, num_classes=3)
    copied = init_from(e_bn, tmp_path / "a.safetensors")
    assert "features.1.running_mean" in copied and "features.7.weight" in copied  # bn1_1; conv2_1 of E
    assert len(copied) == 4 * 2 + 4 * 5 + 3 * 2  # four convs, their BN (5 tensors each), three FCs
    same = VGG(arch="A_bn", width=1 / 16, input_size=32, num_classes=3)
    assert init_from(same, tmp_path / "a.safetensors") == list(same.state_dict())  # fine-tuning: everything
    d = VGG(arch="D", width=1 / 16, input_size=32, num_classes=3)
    save_weights(d, tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="copies net A into a deeper net .* got D -> E"):
        init_from(VGG(arch="E", width=1 / 16, input_size=32, num_classes=3), tmp_path / "d.safetensors")
    four = VGG(arch="D", width=1 / 16, input_size=32, num_classes=4)  # other classes: FC8 stays new
    fresh = four.state_dict()["classifier.6.weight"].clone()
    copied = init_from(four, tmp_path / "d.safetensors")
    assert "classifier.6.weight" not in copied and "classifier.3.weight" in copied and "features.0.weight" in copied
    assert torch.equal(four.state_dict()["classifier.6.weight"], fresh)
    with pytest.raises(ValueError, match=r"cannot copy features.0.weight: source has \(4, 3, 3, 3\), the model needs"):
        init_from(VGG(arch="D", width=1 / 8, input_size=32, num_classes=3), tmp_path / "d.safetensors")


# -- a run end to end ---------------------------------------------------------------------------------------


def test_run_directory_contents(folder, tmp_path):
    run = train(tiny(folder, tmp_path / "run", epochs=2, checkpoint_every=1))
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json", "last.pt", "metrics.jsonl", "metrics.png", "model.safetensors", "previous.pt", "stats.json",
    ]  # fmt: skip
    # (no temporary file left behind; previous.pt: the checkpoint last.pt replaced)
    saved = json.loads((run / "config.json").read_text())
    assert saved["scale"] == [32, 40] and saved["batch"] == 4 and saved["out"] == str(run) and saved["resume"] == ""
    rows = history(run)
    assert [r["epoch"] for r in rows] == [1, 2] and [r["steps"] for r in rows] == [4, 8]  # 16 images / batch 4
    for key in ("train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5", "lr", "images_per_s"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(r["skipped"] == 0 for r in rows) and rows[0]["lr"] == 0.01
    assert (run / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from vggnet.plots import plot_metrics

    curves = [plot_metrics(rows, tmp_path / f"{n}.png", n).axes[1].get_legend_handles_labels()[1] for n in (2, 6)]
    assert curves == [
        ["train top1", "val top1"],
        ["train top1", "train top5", "val top1", "val top5"],
    ]  # 2 classes: no top-5
    meta = read_meta(run / "model.safetensors")
    stats = json.loads((run / "stats.json").read_text())
    assert meta.class_names == ["blue", "red"] and meta.model.input_size == 32 and meta.model.config == "A"
    assert meta.preprocessing.scale == 255.0 and meta.preprocessing.std == (1.0, 1.0, 1.0)
    assert list(meta.preprocessing.mean) == pytest.approx(stats["mean"])
    assert meta.extra["scale"] == [32, 40] and meta.extra["crop"] == 32
    best = min(rows, key=lambda r: r["val_top1"])
    assert meta.extra["epoch"] == best["epoch"]
    ckpt = torch.load(run / "last.pt", weights_only=True)  # plain tensors and containers only
    assert ckpt["position"]["epoch"] == 2 and ckpt["position"]["stopped"] is False
    with pytest.raises(ValueError, match="already holds a run; continue it with --resume"):
        train(tiny(folder, run))


@pytest.mark.slow
def test_gradient_accumulation_equals_the_full_batch(folder, tmp_path):
    # Dropout 0 and no BN: 4 micro-batches of 1 must give the gradients of one batch of 4 (float32 summation order
    # differs, so equal within 1e-5 after 8 SGD steps).
    full = train(tiny(folder, tmp_path / "full", epochs=2, accum=1))
    accumulated = train(tiny(folder, tmp_path / "accum", epochs=2, accum=4))
    a, b = final_state(full), final_state(accumulated)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert history(full)[-1]["train_loss"] == pytest.approx(history(accumulated)[-1]["train_loss"], abs=1e-5)
    # The comparison has teeth: a different batch gives different weights.
    other = final_state(train(tiny(folder, tmp_path / "b2", epochs=2, batch=2)))
    assert max((a[k] - other[k]).abs().max().item() for k in a) > 1e-3


def test_bad_files_are_skipped_counted_and_reported_once(tmp_path, capsys):
    root = Path(make_folder(tmp_path / "data", train_per_class=4))
    Image.new("L", (36, 36), 90).save(root / "train" / "blue" / "gray.png")
    Image.new("CMYK", (36, 36), (10, 20, 30, 0)).save(root / "train" / "blue" / "cmyk.jpg")
    Image.new("RGBA", (36, 36), (0, 0, 200, 128)).save(root / "train" / "blue" / "rgba.png")
    Image.new("P", (36, 36), 3).save(root / "train" / "red" / "palette.png")
    Image.fromarray(np.full((36, 36), 40000, dtype=np.uint16)).save(root / "train" / "red" / "deep.png")
    (root / "train" / "red" / "zero.jpg").write_bytes(b"")
    (root / "train" / "red" / "text.png").write_bytes(b"this is not an image")
    good = (root / "train" / "red" / "0.png").read_bytes()
    (root / "train" / "blue" / "truncated.png").write_bytes(good[: len(good) // 2])
    # 16 files = 4 steps of 4: every file is visited each epoch.
    run = train(tiny(str(root), tmp_path / "run", epochs=2))
    assert [r["skipped"] for r in history(run)] == [3, 3]
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipping unreadable" in line]
    assert sorted(Path(line.split()[-1]).name for line in lines) == ["text.png", "truncated.png", "zero.jpg"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "vggnet", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda r: None, ["--scale", "256"], "nowhere: no such dataset folder"),
        (lambda r: (r / "a").mkdir(parents=True), [], "class folder holds no images"),
        (lambda r: r.mkdir(), [], "no class sub-folders"),
        (lambda r: make_folder(r), ["--crop", "224", "--scale", "200"], "--crop 224 is larger than the rescaled image"),
        (lambda r: make_folder(r), ["--batch", "6", "--accum", "4"], "--batch 6 must split evenly into --accum 4"),
        (
            lambda r: make_folder(r),
            ["--batch", "64", "--accum", "32", "--crop", "32"],
            "16 training images are fewer than one step of --batch 64; add images or pass a smaller --batch",
        ),
    ],
    ids=["missing", "empty-class", "no-images", "crop", "accum", "small"],
)
def test_bad_setups_fail_in_one_line_before_training(tmp_path, capsys, make, args, message):
    root = tmp_path / "nowhere"
    make(root)
    assert main(["train", str(root), "--out", str(tmp_path / "run"), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vggnet train: error:") and message in err
    assert not (tmp_path / "run").exists()


def test_resume_errors_name_the_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "gone")]) == 2
    assert capsys.readouterr().err.strip() == f"vggnet train: error: {tmp_path / 'gone'}: no such run directory"
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{tmp_path}: not a run directory (no config.json)")


def test_config_file_then_command_line(folder, tmp_path, capsys):
    (tmp_path / "job.toml").write_text(
        "epochs = 2\nlr = 0.02\nscale = [32, 36]\nwidth = 0.0625\ncrop = 32\nbatch = 8\n"
    )
    common = ["--workers", "0", "--threads", "1", "--quiet", "--stats-samples", "50", "--dropout", "0"]
    assert (
        main(
            [
                "train",
                folder,
                "--config",
                str(tmp_path / "job.toml"),
                "--lr",
                "0.03",
                "--out",
                str(tmp_path / "r"),
                *common,
            ]
        )
        == 0
    )
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["scale"], saved["batch"]) == (2, 0.03, [32, 36], 8)
    assert "best epoch" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text('{"epochs": 1, "learning_rate": 0.1}')
    assert main(["train", folder, "--config", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: unknown training option(s) learning_rate" in capsys.readouterr().err


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_train(folder, tmp_path, amp):
    run = train(tiny(folder, tmp_path / amp, amp=amp, channels_last=True, deterministic=False))
    row = history(run)[0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    ckpt = load_checkpoint(run / "last.pt")
    assert ("scale" in ckpt["scaler"]) == (amp == "fp16")  # the gradient scaler is saved for fp16 only
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())


# -- resume after SIGKILL, with real processes ----------------------------------------------------------


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    data = make_folder(tmp_path / "data", train_per_class=24)  # 48 images: 12 steps of 4 per epoch
    args = ["--width", "0.0625", "--crop", "32", "--scale", "32,40", "--batch", "4", "--epochs", "2"]
    args += ["--init", "kaiming", "--workers", "0", "--threads", "1", "--deterministic", "--quiet"]
    args += ["--stats-samples", "100", "--checkpoint-every", "3"]  # dropout stays 0.5: the RNG state must resume too
    run = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen([sys.executable, "-m", "vggnet", "train", data, "--out", str(run), *args], env=env)
    deadline = time.monotonic() + 60
    while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    position = load_checkpoint(run / "last.pt")["position"]
    assert position["epoch"] == 0 and 0 < position["step"] < 12  # killed mid-epoch
    assert not (run / "metrics.jsonl").exists()

    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr

    reference = train(
        TrainConfig(
            data=data, out=str(tmp_path / "whole"), width=0.0625, crop=32, scale=[32, 40], batch=4, epochs=2,
            init="kaiming", workers=0, threads=1, deterministic=True, quiet=True, stats_samples=100,
        )
    )  # fmt: skip
    a, b = final_state(run), final_state(reference)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-exact
    ha, hb = history(run), history(reference)
    assert [(r["train_loss"], r["val_top1"], r["lr"]) for r in ha] == [
        (r["train_loss"], r["val_top1"], r["lr"]) for r in hb
    ]


# -- DistributedDataParallel, two processes on CPU: tests/test_elastic.py (with a worker killed and restarted) --


def test_resume_a_finished_run_with_more_epochs(folder, tmp_path):
    import dataclasses

    from vggnet.train import load_config

    run = train(tiny(folder, tmp_path / "run", epochs=1))
    cfg = dataclasses.replace(load_config(run), resume=str(run), epochs=2)
    assert train(cfg) == run
    assert [r["epoch"] for r in history(run)] == [1, 2] and [r["steps"] for r in history(run)] == [4, 8]
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


def test_compile_flag_wraps_the_training_forward(folder, tmp_path, monkeypatch):
    # The real torch.compile takes ~50 s on this CPU; a pass-through stand-in checks the wiring.
    calls = []

    def fake_compile(module):
        calls.append(type(module).__name__)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(tiny(folder, tmp_path / "run", compile=True))
    assert calls == ["VGG"]


def test_given_datasets_replace_the_data_spec(folder, tmp_path):
    from vggnet.data import open_dataset

    opened = (open_dataset(folder, "train"), open_dataset(folder, "val"))
    a = train(tiny(folder, tmp_path / "a"))
    b = train(tiny("a label only", tmp_path / "b"), datasets=opened)  # the spec is never opened
    for key, value in final_state(a).items():
        assert torch.equal(final_state(b)[key], value), key
