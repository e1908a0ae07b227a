"""Elastic training: a torchrun restart resumes its own run by itself; anything else still refuses a used folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_train import SRC, final_state, folder, history, make_folder, tiny  # noqa: F401 (folder is a fixture)
from vggnet.train import load_checkpoint, train

WORKER = str(Path(__file__).resolve().parent / "killed_worker.py")


def as_torchrun(monkeypatch, job: str, restart: int) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", job)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(restart))


def test_only_a_restart_of_the_same_job_and_configuration_resumes(folder, tmp_path, monkeypatch, capsys):  # noqa: F811
    cfg = tiny(folder, tmp_path / "run", epochs=1)
    as_torchrun(monkeypatch, "job-1", 0)
    run = train(cfg)
    assert load_checkpoint(run / "last.pt")["job"] == "job-1"
    refusal = f"{run} already holds a run; continue it with --resume {run} or choose another --out"
    with pytest.raises(ValueError, match=refusal):  # the first attempt of a job is a new run
        train(cfg)
    as_torchrun(monkeypatch, "job-2", 1)
    with pytest.raises(ValueError, match=refusal):  # a restart, but the checkpoint is another job's
        train(cfg)
    as_torchrun(monkeypatch, "job-1", 1)
    with pytest.raises(ValueError, match=refusal):  # the same job, another configuration
        train(tiny(folder, tmp_path / "run", epochs=1, lr=0.02))
    capsys.readouterr()
    assert train(cfg) == run  # the same job and configuration: resumed (here, already finished)
    assert capsys.readouterr().err.strip() == f"torchrun restart 1: resuming {run} at epoch 2, step 0"
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    with pytest.raises(ValueError, match=refusal):  # a plain rerun
        train(cfg)


def torchrun(out: Path, data: str, kill_at: int, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1", KILL_AT_STEP=str(kill_at), KILL_RANK="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1"]
    cmd += [WORKER, "train", data, "--out", str(out), "--width", "0.0625", "--crop", "32", "--scale", "32,40"]
    cmd += ["--batch", "4", "--epochs", "2", "--init", "kaiming", "--dropout", "0", "--workers", "0", "--threads", "1"]
    cmd += ["--quiet", "--stats-samples", "100", "--deterministic", "--checkpoint-every", "3"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_torchrun_restarts_a_killed_worker_and_ends_as_an_uninterrupted_run(tmp_path):
    data = make_folder(tmp_path / "data", train_per_class=24)  # 48 images: 12 steps of 2 x 2 per epoch
    killed = torchrun(tmp_path / "killed", data, kill_at=5)  # rank 1 dies in step 5 of epoch 1; last.pt is step 3
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert f"torchrun restart 1: resuming {tmp_path / 'killed'} at epoch 1, step 3" in killed.stderr
    assert "exitcode: -9" in killed.stderr  # torchrun saw a worker killed by SIGKILL
    whole = torchrun(tmp_path / "whole", data, kill_at=0)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "torchrun restart" not in whole.stderr
    a, b = final_state(tmp_path / "killed"), final_state(tmp_path / "whole")
    assert all(torch.equal(a[k], b[k]) for k in b)  # bit-exact
    drop = ("images_per_s", "seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in history(tmp_path / "killed")] == [
        {k: v for k, v in r.items() if k not in drop} for r in history(tmp_path / "whole")
    ]
    # DDP itself: rank r takes items r, r+2, ... of the same shuffled order, so each step sees the 4 images one
    # process would (dropout 0); rank 0 alone reports and writes.
    assert whole.stdout.count("best epoch") == 1 and len(history(tmp_path / "whole")) == 2
    single = train(tiny(data, tmp_path / "single", epochs=2))
    c = final_state(single)
    assert max((b[k] - c[k]).abs().max().item() for k in b) < 1e-5
    assert history(tmp_path / "whole")[-1]["train_loss"] == pytest.approx(history(single)[-1]["train_loss"], abs=1e-5)
    assert history(tmp_path / "whole")[-1]["val_top1"] == history(single)[-1]["val_top1"]
