"""Training as in section 3.1: SGD with momentum, plateau LR schedule, net-A initialisation, runs you can resume.

    from vggnet.configs import TrainConfig
    from vggnet.train import train
    run_dir = train(TrainConfig(data="digits", arch="A", width=1 / 8, crop=32, scale=[37]))

The same `train()` runs under `torchrun --nproc_per_node=N` with DistributedDataParallel. The pieces:
`state` builds a run once, `loop` trains an epoch and validates, `checkpoint` saves and restores it
exactly (hashed, the previous one kept), `distributed` is the torchrun plumbing, `elastic` lets a torchrun
restart resume by itself, `schedule` the optimiser and LR rule, `initialize` the model, net-A initialisation
and starting from pretrained weights, `finetune` frozen layers, per-group LRs and the weights' own input,
`config` reads option files. A run folder's layout is in `vggnet.runs`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..configs import TrainConfig
from ..runs import CHECKPOINT, CONFIG, INIT, METRICS, PLOT, PREVIOUS, STATS, WEIGHTS, best_record
from .checkpoint import (
    Position,
    has_checkpoint,
    load_checkpoint,
    load_resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import load_config, read_config_file
from .distributed import Dist, epoch_indices, setup_distributed, teardown_distributed
from .finetune import FrozenBatchNorm2d, freeze, param_groups, parse_freeze, to_network_input, weight_layers
from .initialize import (
    NET_A_LAYERS,
    Pretrained,
    build_model,
    copy_pretrained,
    init_from,
    open_pretrained,
    paper_names,
    start_config,
)
from .loop import autocast, end_epoch, fit, train_one_epoch, train_step, validate
from .schedule import PlateauSchedule, sgd
from .state import SUMS, Run, build_run, checkpoint, write_metrics


def train(cfg: TrainConfig, datasets: tuple[Dataset, Dataset] | None = None) -> Path:
    """Train (or resume) one run as configured; returns the run directory.

    `datasets`: (train, val) datasets to use instead of opening `cfg.data` (which then only names them),
    items (PIL image or None, label) with a `classes` list, like `vggnet.data.ImageFolder`'s.
    """
    env = setup_distributed(cfg.device)
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        run = build_run(cfg, env, datasets)
        fit(run)
        return run.dir
    finally:  # leave the process as it was (tests and notebooks call train() more than once)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
        teardown_distributed(env)


__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "INIT",
    "METRICS",
    "NET_A_LAYERS",
    "PLOT",
    "PREVIOUS",
    "STATS",
    "SUMS",
    "WEIGHTS",
    "Dist",
    "FrozenBatchNorm2d",
    "PlateauSchedule",
    "Position",
    "Pretrained",
    "Run",
    "autocast",
    "best_record",
    "build_model",
    "build_run",
    "checkpoint",
    "copy_pretrained",
    "end_epoch",
    "epoch_indices",
    "fit",
    "freeze",
    "has_checkpoint",
    "init_from",
    "load_checkpoint",
    "load_config",
    "load_resume_checkpoint",
    "open_pretrained",
    "paper_names",
    "param_groups",
    "parse_freeze",
    "read_config_file",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "setup_distributed",
    "sgd",
    "start_config",
    "train",
    "train_one_epoch",
    "to_network_input",
    "train_step",
    "validate",
    "weight_layers",
    "write_metrics",
]
