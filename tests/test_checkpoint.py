"""Checkpoints that survive damage: hashed, the previous one kept, a full disk leaving both intact."""

import errno
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from test_train import final_state, folder, history, tiny  # noqa: F401 (folder is a fixture)
from vggnet.cli import main
from vggnet.train import load_checkpoint, load_resume_checkpoint, save_checkpoint, train
from vggnet.weights import IntegrityError


def state(step: int) -> dict:
    return {"model": {"w": torch.full((3, 3), float(step))}, "position": {"epoch": 0, "step": step}, "ranks": []}


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "bit":  # one bit of the model's numbers: torch.load alone would not notice
        data[bytes(data).find(torch.full((3, 3), 2.0).numpy().tobytes()) + 2] ^= 0x10
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"")


def test_the_previous_checkpoint_is_kept_and_damage_is_detected(tmp_path):
    last = tmp_path / "last.pt"
    for step in (1, 2):
        save_checkpoint(last, state(step))
    assert load_checkpoint(last)["position"]["step"] == 2
    assert load_checkpoint(tmp_path / "previous.pt")["position"]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]  # no temporary file left
    damage(last, "bit")
    with pytest.raises(IntegrityError, match=r"last.pt: damaged: the sha256 of its content differs"):
        load_checkpoint(last)
    assert torch.load(last, weights_only=True)["position"]["step"] == 2  # torch.load alone takes it
    assert load_checkpoint(last, verify=False)["position"]["step"] == 2


@pytest.mark.parametrize("how", ["bit", "truncated", "empty"])
def test_resume_falls_back_to_the_previous_checkpoint(tmp_path, how):
    for step in (1, 2):
        save_checkpoint(tmp_path / "last.pt", state(step))
    damage(tmp_path / "last.pt", how)
    ckpt, why = load_resume_checkpoint(tmp_path)
    assert ckpt["position"]["step"] == 1 and why.startswith(f"{tmp_path / 'last.pt'}: ") and "\n" not in why
    damage(tmp_path / "previous.pt", "truncated")
    with pytest.raises(ValueError, match=rf"{tmp_path}: no usable checkpoint: .*last.pt.*; .*previous.pt: unreadable"):
        load_resume_checkpoint(tmp_path)


def test_a_full_disk_leaves_the_checkpoints_intact(tmp_path, monkeypatch):
    last = tmp_path / "last.pt"
    for step in (1, 2):
        save_checkpoint(last, state(step))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # half a file written, then the disk is full
        f.truncate(f.tell() // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        OSError, match=rf"last.pt: could not write the checkpoint \(No space left on device\); {last} is intact"
    ) as e:
        save_checkpoint(last, state(3))
    assert e.value.__cause__.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing changed, nothing left over


def test_training_on_a_full_disk_stops_with_one_line(folder, tmp_path, monkeypatch, capsys):  # noqa: F811
    real_save, calls = torch.save, []

    def fails_third(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fails_third)
    run = tmp_path / "run"
    args = ["train", folder, "--out", str(run), "--width", "0.0625", "--crop", "32", "--scale", "32,40"]
    args += ["--batch", "4", "--epochs", "1", "--workers", "0", "--threads", "1", "--quiet", "--stats-samples", "50"]
    assert main([*args, "--checkpoint-every", "1", "--deterministic"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"vggnet train: error: {run / 'last.pt'}: could not write the checkpoint (No space left on device); "
        f"{run / 'last.pt'} is intact: free space and continue with --resume {run}"
    )
    assert load_checkpoint(run / "last.pt")["position"]["step"] == 2  # the second checkpoint, unharmed
    monkeypatch.setattr(torch, "save", real_save)
    assert main(["train", "--resume", str(run)]) == 0  # space again: the run continues


def test_a_damaged_last_checkpoint_resumes_from_the_previous_one_exactly(folder, tmp_path, capsys):  # noqa: F811
    run = train(tiny(folder, tmp_path / "run", epochs=2, checkpoint_every=1))
    whole = final_state(run)
    untimed = [{k: v for k, v in r.items() if k not in ("images_per_s", "seconds")} for r in history(run)]
    damage(run / "last.pt", "truncated")  # the end of epoch 2
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"{run / 'last.pt'}: unreadable checkpoint, truncated or damaged" in err
    assert f"; resuming from {run / 'previous.pt'} (epoch 2, step 3); last.pt kept as last.pt.damaged" in err
    assert (run / "last.pt.damaged").stat().st_size > 0  # set aside: the next checkpoint keeps the good one
    after = final_state(run)
    assert all(torch.equal(after[k], whole[k]) for k in whole)  # bit-exact: the last step and epoch end redone
    assert [{k: v for k, v in r.items() if k not in ("images_per_s", "seconds")} for r in history(run)] == untimed


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs, or a skip where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_leaves_the_checkpoint_intact(tmpfs):
    last = tmpfs / "last.pt"
    save_checkpoint(last, {"model": {"w": torch.zeros(100_000)}})  # 0.4 MB: fits, and so does its hard link
    before = last.read_bytes()
    with pytest.raises(OSError, match=rf"could not write the checkpoint \(No space left on device\); {last} is intact"):
        save_checkpoint(last, {"model": {"w": torch.zeros(1_000_000)}})  # 4 MB: does not fit
    assert last.read_bytes() == before and sorted(p.name for p in tmpfs.iterdir()) == ["last.pt"]
    assert load_checkpoint(last)["model"]["w"].numel() == 100_000
