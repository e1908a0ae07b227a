"""Resume checkpoints: where a run stands, every RNG state, written atomically and read without pickles.

Each checkpoint carries the sha256 of its content (`weights.integrity.digest`), checked on load. The
one it replaces is kept as previous.pt, so a damaged last.pt (a flipped bit, a truncated copy) still
leaves a good checkpoint to resume from; a failed write (a full disk) leaves both as they were.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configs import TrainConfig
from ..io import atomic_write, report
from ..limits import CHECKPOINT_BYTES
from ..runs import CHECKPOINT, DAMAGED, PREVIOUS
from ..weights.integrity import check, digest
from ..weights.torchvision import torch_load
from .distributed import Dist
from .elastic import restart_count, restarted_by_torchrun, same_job


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # optimiser steps done in that epoch
    global_step: int = 0
    stopped: bool = False  # the schedule ran out of LR decreases
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics record per finished epoch


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG state of this process as plain lists and tensors (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's generators (model init and dropout draw from them)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save `state` and its sha256 through a temporary file and a rename; the file replaced becomes previous.pt.

    A kill or a failed write (a full disk) leaves the checkpoints as they were; the failure is an OSError
    saying which checkpoint is intact.
    """
    path = Path(path)
    state = {**state, "sha256": digest(state)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # through a Python file, so a failed write keeps its OSError (ENOSPC)
            torch.save(state, f)

    try:
        atomic_write(path, write, keep=path.with_name(PREVIOUS))
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as a RuntimeError
        cause: BaseException | None = e
        while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
            cause = cause.__cause__ or cause.__context__
        reason = cause.strerror if isinstance(cause, OSError) else str(e).strip().splitlines()[-1]
        kept = f"{path} is intact" if path.is_file() else "no earlier checkpoint exists"
        raise OSError(
            f"{path}: could not write the checkpoint ({reason}); {kept}: free space and continue with --resume {path.parent}"
        ) from e


def load_checkpoint(
    path: str | os.PathLike[str], device: torch.device | str = "cpu", verify: bool = True
) -> dict[str, Any]:
    """A resume checkpoint, loaded without unpickling arbitrary objects; its sha256 checked with `verify`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no resume checkpoint")
    state = torch_load(path, CHECKPOINT_BYTES, "unreadable checkpoint, truncated or damaged", device)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a vggnet resume checkpoint")
    recorded = state.pop("sha256", None)  # checkpoints written before hashes have none
    if verify and recorded is not None:
        check(digest(state), str(recorded), path, "its content")
    return state


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds a resume checkpoint (last.pt, or previous.pt alone)."""
    return (run_dir / CHECKPOINT).is_file() or (run_dir / PREVIOUS).is_file()


def load_resume_checkpoint(
    run_dir: Path, device: torch.device | str = "cpu", verify: bool = True
) -> tuple[dict[str, Any], str]:
    """The newest good checkpoint of a run: last.pt, else previous.pt; returns it and why last.pt was passed over ("" if not).

    Raises a one-line ValueError naming both files when neither loads.
    """
    last, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    problems = []
    for path in (last, previous):
        try:
            return load_checkpoint(path, device, verify), "; ".join(problems)
        except (ValueError, FileNotFoundError) as e:
            problems.append(str(e))
    raise ValueError(f"{run_dir}: no usable checkpoint: {'; '.join(problems)}")


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors nested in dicts, lists and tuples (about a checkpoint's size on disk)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def where(ckpt: dict[str, Any]) -> str:
    """Where a checkpoint stands, in words: "epoch 2, step 6"."""
    pos = ckpt["position"]
    return f"epoch {pos['epoch'] + 1}, step {pos['step']}"


def open_run_dir(cfg: TrainConfig, env: Dist) -> tuple[Path, dict[str, Any] | None]:
    """The run directory and the checkpoint to resume (None for a new run, which never overwrites one).

    A run resumes with --resume, or by itself when torchrun restarted this process (elastic.py).
    """
    if cfg.resume:
        run = Path(cfg.resume)
        if not has_checkpoint(run):
            raise FileNotFoundError(f"{run}: no {CHECKPOINT} to resume from")
        return run, resume_checkpoint(run, env, cfg.verify)
    name = cfg.out or f"runs/{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = Path(env.broadcast(name))
    if not has_checkpoint(run):
        return run, None
    if restarted_by_torchrun():
        ckpt = resume_checkpoint(run, env, cfg.verify)
        if same_job(ckpt, run, cfg):
            if env.main:
                report(f"torchrun restart {restart_count()}: resuming {run} at {where(ckpt)}")
            return run, ckpt
    raise ValueError(f"{run} already holds a run; continue it with --resume {run} or choose another --out")


def resume_checkpoint(run: Path, env: Dist, verify: bool) -> dict[str, Any]:
    """The newest good checkpoint of `run` (last.pt, else previous.pt, saying why on rank 0).

    A damaged last.pt is renamed last.pt.damaged, so the next checkpoint does not keep it as previous.pt.
    """
    ckpt, passed_over = load_resume_checkpoint(run, env.device, verify)
    if passed_over and env.main:
        kept = ""
        if (run / CHECKPOINT).is_file():
            (run / CHECKPOINT).replace(run / DAMAGED)
            kept = f"; {CHECKPOINT} kept as {DAMAGED}"
        report(f"{passed_over}; resuming from {run / PREVIOUS} ({where(ckpt)}){kept}")
    return ckpt
