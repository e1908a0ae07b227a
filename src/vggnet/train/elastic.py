"""Elastic training: a torchrun restart resumes its own run by itself.

`torchrun --max-restarts N` restarts every worker when one is lost, with the same command line and
TORCHELASTIC_RESTART_COUNT raised by one. A restarted worker resumes from the run folder's newest good
checkpoint without --resume when that checkpoint was written by this same torchrun job (its
TORCHELASTIC_RUN_ID, recorded in every checkpoint) and the folder's config.json is this job's
configuration. Anything else is a new run, which refuses a folder that holds one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..configs import TrainConfig
from ..runs import CONFIG


def restart_count() -> int:
    """How many times torchrun has restarted this job's workers (0 outside torchrun)."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def restarted_by_torchrun() -> bool:
    """True in a worker that torchrun started again after a failure."""
    return restart_count() > 0 and bool(torchrun_job())


def torchrun_job() -> str:
    """The torchrun job's id (TORCHELASTIC_RUN_ID: a fresh one per `--standalone` launch); "" outside torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID", "")


def same_job(ckpt: dict[str, Any], run: Path, cfg: TrainConfig) -> bool:
    """Whether `ckpt` was written by this torchrun job, for this configuration."""
    if not torchrun_job() or ckpt.get("job") != torchrun_job():
        return False
    try:
        saved = json.loads((run / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return saved == dataclasses.asdict(dataclasses.replace(cfg, out=str(run), resume=""))
