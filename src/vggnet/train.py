"""Training as in section 3.1: SGD with momentum, plateau LR schedule, net-A initialisation, runs you can resume.

A run directory holds:

    config.json        the resolved TrainConfig
    stats.json         mean RGB and RGB-covariance eigen-decomposition of the training set
    metrics.jsonl      one JSON line per epoch (loss, top-1/top-5 errors, LR, images/s, seconds, skipped files)
    metrics.png        loss, errors and LR against epoch (with vggnet[plots])
    model.safetensors  the best weights (lowest validation top-1 error), project format
    last.pt            the resume checkpoint: model, optimiser, schedule, scaler, RNG states, position in the epoch

The same `train()` runs under `torchrun --nproc_per_node=N` with DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .configs import AMP_MODES, HEADS, INITS, ModelConfig, TrainConfig, resolve
from .data import (
    EvalTransform,
    RGBStats,
    TrainTransform,
    Transformed,
    collate_skipping,
    compute_stats,
    item_name,
    open_dataset,
)
from .io import atomic_write, optional, report
from .model import VGG
from .weights import Preprocessing, load_weights, save_weights

CONFIG, STATS, METRICS, PLOT, WEIGHTS, CHECKPOINT = (
    "config.json",
    "stats.json",
    "metrics.jsonl",
    "metrics.png",
    "model.safetensors",
    "last.pt",
)

# Section 3.1: deeper nets start from net A's first four conv layers and its three FC layers.
NET_A_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")


# -- configuration files ---------------------------------------------------------------------------


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Fields of a TrainConfig from a JSON or TOML file; unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    toml = path.suffix.lower() == ".toml"
    if toml:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ValueError(f"{path}: TOML config files need Python 3.11 or later; use JSON") from None
    try:
        raw = tomllib.loads(path.read_text()) if toml else json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a {'TOML' if toml else 'JSON'} file ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a table of TrainConfig fields")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{path}: unknown training option(s) {', '.join(unknown)}")
    return raw


def load_config(path: str | os.PathLike[str], base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from a JSON/TOML file (or a run directory's config.json) over `base`."""
    path = Path(path)
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise FileNotFoundError(f"{path}: not a run directory (no {CONFIG})")
        path = path / CONFIG
    return dataclasses.replace(base or TrainConfig(), **read_config_file(path))


def check_config(cfg: TrainConfig, world: int = 1) -> None:
    """Raise a one-line error for any inconsistent option, before anything is loaded."""
    if len(cfg.scale) not in (1, 2) or min(cfg.scale) < 1:
        raise ValueError(f"--scale takes S or Smin,Smax (positive), got {cfg.scale}")
    smin = min(cfg.scale)
    if cfg.crop < 32:
        raise ValueError(f"--crop {cfg.crop} is below 32, the smallest input a VGG accepts (5 pools)")
    if smin < cfg.crop:
        raise ValueError(f"--crop {cfg.crop} is larger than the rescaled image (shorter side S={smin}); use S >= crop")
    if cfg.val_scale and cfg.val_scale < cfg.crop:
        raise ValueError(f"--crop {cfg.crop} is larger than the validation image (--val-scale {cfg.val_scale})")
    if cfg.batch < 1 or cfg.accum < 1 or cfg.batch % (cfg.accum * world):
        raise ValueError(f"--batch {cfg.batch} must split evenly into --accum {cfg.accum} x {world} process(es)")
    if cfg.amp not in AMP_MODES:
        raise ValueError(f"--amp {cfg.amp!r}: accepted {', '.join(AMP_MODES)}")
    if cfg.init not in INITS:
        raise ValueError(f"--init {cfg.init!r}: accepted {', '.join(INITS)}")
    if cfg.head not in HEADS:
        raise ValueError(f"--head {cfg.head!r}: accepted {', '.join(HEADS)}")
    resolve(cfg.model)
    for name in ("lr", "epochs", "width", "stats_samples"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if cfg.patience < 0 or cfg.max_decreases < 0 or cfg.checkpoint_every < 0 or cfg.workers < 0:
        raise ValueError("--patience, --max-decreases, --checkpoint-every and --workers cannot be negative")


# -- the learning-rate schedule (section 3.1) ----------------------------------------------------------


@dataclass
class PlateauSchedule:
    """Divide the LR by 10 when validation top-1 error has not improved for `patience` epochs.

    At most `max_decreases` decreases; a plateau after the last one stops training.
    """

    lr: float
    factor: float = 0.1
    patience: int = 5
    max_decreases: int = 3
    best: float = math.inf
    bad_epochs: int = 0
    decreases: int = 0

    def step(self, error: float) -> str:
        """Record one epoch's validation error: "improved", "wait", "decrease" or "stop"."""
        if error < self.best:
            self.best, self.bad_epochs = error, 0
            return "improved"
        self.bad_epochs += 1
        if self.bad_epochs <= self.patience:
            return "wait"
        if self.decreases >= self.max_decreases:
            return "stop"
        self.lr, self.decreases, self.bad_epochs = self.lr * self.factor, self.decreases + 1, 0
        return "decrease"


# -- model -------------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig, num_classes: int) -> VGG:
    """The VGG of a training config; the paper init's std is divided by sqrt(width) for narrow nets."""
    return VGG(
        ModelConfig(
            config=cfg.model,
            num_classes=num_classes,
            head=cfg.head,
            width=cfg.width,
            dropout=cfg.dropout,
            input_size=cfg.crop,
            init=cfg.init,
            init_std=cfg.init_std / math.sqrt(cfg.width),  # fan-in shrinks with width; keep each layer's gain
        )
    )


def paper_names(model: VGG) -> dict[str, str]:
    """Paper layer name -> state-dict prefix, e.g. conv2_1 -> features.3 in net A, features.5 in net D."""
    names = {n: f"features.{i}" for i, n in enumerate(model.feature_names)}
    names.update({n: f"classifier.{i}" for i, n in enumerate(model.classifier_names)})
    return names


def init_from(model: VGG, source: str | os.PathLike[str]) -> list[str]:
    """Copy weights from a run (its model.safetensors) or a weights file; returns the copied state keys.

    Same configuration: every tensor (e.g. S=384 from S=256, jittered S from S=384). Net A (or A-LRN)
    into a deeper net: conv1_1, conv2_1, conv3_1, conv3_2, fc6, fc7, fc8 (and their BN), the rest stays random.
    """
    path = Path(source)
    path = path / WEIGHTS if path.is_dir() else path
    src, _ = load_weights(path)
    same = (src.cfg.config, src.cfg.batch_norm) == (model.cfg.config, model.cfg.batch_norm)
    if not same and src.cfg.config not in ("A", "A-LRN"):
        raise ValueError(
            f"{path}: --init-from copies net A into a deeper net or a net of the same configuration; "
            f"got {src.cfg.config} -> {model.cfg.config}"
        )
    own, theirs = model.state_dict(), src.state_dict()
    if same:
        keys = list(own)
    else:
        src_names, dst_names = paper_names(src), paper_names(model)
        layers = [n for n in NET_A_LAYERS if n in src_names and n in dst_names]
        layers += [n.replace("conv", "bn") for n in layers if n.replace("conv", "bn") in dst_names]
        prefixes = {dst_names[n] + ".": src_names[n] + "." for n in layers if n in src_names}
        keys = [k for k in own if any(k.startswith(p) for p in prefixes)]
        theirs = {
            k: theirs[prefixes[p] + k[len(p) :]] for k in keys for p in prefixes if k.startswith(p)
        }  # target key -> source tensor
    state = dict(own)
    for k in keys:
        if k not in theirs or theirs[k].numel() != own[k].numel():
            shape = tuple(theirs[k].shape) if k in theirs else "nothing"
            raise ValueError(f"{path}: cannot copy {k}: source has {shape}, the model needs {tuple(own[k].shape)}")
        state[k] = theirs[k].reshape(own[k].shape)  # fc <-> conv heads hold the same numbers
    model.load_state_dict(state)
    return keys


# -- distributed ---------------------------------------------------------------------------------------


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (a list of one without torchrun)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def setup_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{local}"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


# -- checkpoints -------------------------------------------------------------------------------------


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


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through a temporary file and a rename: a kill leaves the previous checkpoint intact."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> dict[str, Any]:
    """A resume checkpoint, loaded without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no resume checkpoint")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: unreadable checkpoint ({str(e).splitlines()[0]})") from None


# -- metrics -----------------------------------------------------------------------------------------


def count_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (N, k)
    hit = top == labels[:, None]
    return [hit[:, : min(k, logits.shape[1])].any(1).sum() for k in ks]


def sgd(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.SGD:
    """The paper's optimiser (section 3.1): SGD with momentum and weight decay, over all parameters."""
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        fused=device.type in ("cpu", "cuda") or None,  # one kernel for all parameters: 2-12% a step here
    )


@torch.no_grad()
def evaluate_top_k(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device | str = "cpu",
    amp: str = "none",
    channels_last: bool = False,
    dist_env: Dist | None = None,
    on_skip: Callable[[list[int]], None] | None = None,
) -> dict[str, float]:
    """Mean loss and top-1/top-5 error (%) over a loader of collate_skipping batches (summed over ranks).

    `on_skip` receives the indices of unreadable items; their count is returned as "skipped".
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits, images, skipped
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for x, y, skipped in loader:
        sums[4] += len(skipped)
        if skipped and on_skip is not None:
            on_skip(skipped)
        if x is None:
            continue
        x, y = x.to(device, non_blocking=True, memory_format=fmt), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        sums[0] += F.cross_entropy(logits.float(), y, reduction="sum")
        top1, top5 = count_correct(logits, y)
        sums[1:4] += torch.stack([top1, top5, torch.tensor(len(y), device=device)]).to(sums)
    model.train(was_training)
    loss, c1, c5, n, skipped = (dist_env or Dist()).sum(sums.tolist())
    n_ = max(n, 1.0)
    return {
        "loss": loss / n_,
        "top1": 100 * (1 - c1 / n_),
        "top5": 100 * (1 - c5 / n_),
        "images": n,
        "skipped": skipped,
    }


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """bf16/fp16 autocast on the device, or nothing."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def write_metrics(run: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl (one line per finished epoch) and, with matplotlib, metrics.png, both atomically."""
    text = "".join(json.dumps(h) + "\n" for h in history)
    atomic_write(run / METRICS, lambda tmp: Path(tmp).write_text(text))
    if history and optional("matplotlib", "plots", f"{PLOT} not drawn"):
        from .plots import plot_metrics

        plot_metrics(history, run / PLOT)


# -- the loop ------------------------------------------------------------------------------------------


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # optimiser steps done in that epoch
    global_step: int = 0
    stopped: bool = False  # the schedule ran out of LR decreases
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics record per finished epoch


# Running sums of the epoch in progress: summed loss, top-1 and top-5 hits, images, skipped files, training seconds.
SUMS = ("loss", "top1", "top5", "images", "skipped", "seconds")


def make_run_dir(cfg: TrainConfig, env: Dist) -> Path:
    """The run directory: the one to resume, or a new one (refusing to overwrite a run)."""
    if cfg.resume:
        run = Path(cfg.resume)
        if not (run / CHECKPOINT).is_file():
            raise FileNotFoundError(f"{run}: no {CHECKPOINT} to resume from")
        return run
    name = cfg.out or f"runs/{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = Path(env.broadcast(name))
    if (run / CHECKPOINT).exists():
        raise ValueError(f"{run} already holds a run; continue it with --resume {run} or choose another --out")
    return run


def epoch_indices(n: int, epoch: int, seed: int, env: Dist, per_step: int) -> list[int]:
    """This rank's training indices of one epoch, in order, whole steps only (DistributedSampler's shuffle)."""
    sampler = torch.utils.data.DistributedSampler(
        range(n), num_replicas=env.world, rank=env.rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    return indices[: len(indices) // per_step * per_step]


def train(cfg: TrainConfig, datasets: tuple[Dataset, Dataset] | None = None) -> Path:
    """Train (or resume) one run as configured; returns the run directory.

    `datasets`: (train, val) datasets to use instead of opening `cfg.data` (which then only names them),
    items (PIL image or None, label) with a `classes` list, like `vggnet.data.ImageFolder`'s.
    """
    env = setup_distributed(cfg.device)
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        return Trainer(cfg, env, datasets).run()
    finally:  # leave the process as it was (tests and notebooks call train() more than once)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
        if env.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class Trainer:
    """One run of a TrainConfig: data, model, optimiser, schedule, and the loop over epochs."""

    def __init__(self, cfg: TrainConfig, env: Dist, datasets: tuple[Dataset, Dataset] | None = None) -> None:
        check_config(cfg, env.world)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = not cfg.deterministic
        self.cfg, self.env, self.device = cfg, env, env.device
        self.run_dir = make_run_dir(cfg, env)
        ckpt = load_checkpoint(self.run_dir / CHECKPOINT, self.device) if cfg.resume else None

        # Data: both splits are opened (and their errors raised) before any work starts.
        if datasets is None:
            datasets = open_dataset(cfg.data, "train", cfg.digits_size), open_dataset(cfg.data, "val", cfg.digits_size)
        self.train_base, self.val_base = datasets
        self.classes = list(self.train_base.classes)
        if list(self.val_base.classes) != self.classes:
            raise ValueError(f"{cfg.data}: the validation classes differ from the training classes")
        if env.main and getattr(self.val_base, "root", None) == getattr(self.train_base, "root", 0):
            report(f"{cfg.data} has no val/ split: validating on the training images")
        self.micro = cfg.batch // (cfg.accum * env.world)  # images per forward pass
        self.per_step = self.micro * cfg.accum  # images per optimiser step on this rank
        self.steps = len(self.train_base) // env.world // self.per_step
        if self.steps == 0:
            raise ValueError(
                f"{cfg.data}: {len(self.train_base)} training images are fewer than one step of --batch {cfg.batch}"
            )
        self.stats = self.load_stats(ckpt)

        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.model = build_model(cfg, len(self.classes))
        if cfg.init_from and ckpt is None:
            copied = init_from(self.model, cfg.init_from)
            if env.main:
                report(f"initialised {len(copied)} tensors from {cfg.init_from}")
        self.fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.fmt)
        self.optimizer = sgd(self.model, cfg, self.device)
        self.schedule = PlateauSchedule(cfg.lr, cfg.lr_factor, cfg.patience, cfg.max_decreases)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.pos = Position()
        self.sums = dict.fromkeys(SUMS, 0.0)
        rng = self.restore(ckpt) if ckpt is not None else None
        if env.main:
            saved = dataclasses.replace(cfg, out=str(self.run_dir), resume="")
            text = json.dumps(dataclasses.asdict(saved), indent=1)
            atomic_write(self.run_dir / CONFIG, lambda tmp: Path(tmp).write_text(text))
        self.set_lr()

        self.net: nn.Module = self.model  # what the training step calls: DDP and/or compiled
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if env.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.net = torch.compile(self.net)

        self.smin, self.smax = min(cfg.scale), max(cfg.scale)
        transform = TrainTransform((self.smin, self.smax), cfg.crop, self.stats, cfg.color_shift, cfg.flip)
        self.train_set = Transformed(self.train_base, transform, cfg.seed)
        val_set = Transformed(self.val_base, EvalTransform(cfg.val_scale or self.smin, cfg.crop, self.stats.mean))
        self.val_loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(val_set, range(env.rank, len(val_set), env.world)),  # a shard per rank
            batch_size=self.micro,
            num_workers=cfg.workers,
            collate_fn=collate_skipping,
            pin_memory=self.device.type == "cuda",
        )
        self.reported: set[tuple[str, int]] = set()  # unreadable items already named (per process)
        if rng is not None:  # the RNG states last: everything above may have drawn random numbers
            set_rng_state(rng, self.device)

    # -- setup helpers ---------------------------------------------------------------------------------

    def load_stats(self, ckpt: dict[str, Any] | None) -> RGBStats:
        """The run's own statistics when resuming, a given file, or computed on rank 0 and broadcast."""
        if ckpt is not None:
            return RGBStats.load(self.run_dir / STATS)
        if self.cfg.stats:
            stats = RGBStats.load(self.cfg.stats)
        else:
            stats = None
            if self.env.main:
                cfg = self.cfg
                stats = compute_stats(self.train_base, cfg.stats_samples, cfg.seed, cfg.workers, not cfg.quiet)
            stats = self.env.broadcast(stats)
        if self.env.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            stats.save(self.run_dir / STATS)
        return stats

    def restore(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        """Load a resume checkpoint into the model, optimiser, schedule and position; returns this rank's RNG."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule = PlateauSchedule(**ckpt["schedule"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.pos = Position(**ckpt["position"])
        ranks = ckpt["ranks"]
        if self.pos.step and len(ranks) != self.env.world:
            raise ValueError(f"{self.run_dir} stopped mid-epoch with {len(ranks)} process(es); resume it with as many")
        mine = ranks[self.env.rank] if self.env.rank < len(ranks) else ranks[0]
        if self.pos.step:
            self.sums = dict(mine["sums"])
        return mine["rng"]

    def set_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.lr

    def report_skipped(self, indices: list[int], split: str) -> None:
        """Name each unreadable file once on stderr."""
        base = self.train_base if split == "train" else self.val_base
        for i in indices:
            if (split, i) not in self.reported:
                self.reported.add((split, i))
                report(f"skipping unreadable {split} image {item_name(base, i)}")

    def checkpoint(self) -> None:
        """Write the resume checkpoint (every rank's RNG state and running sums; rank 0 writes)."""
        ranks = self.env.gather({"rng": rng_state(self.device), "sums": dict(self.sums)})
        if self.env.main:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": dataclasses.asdict(self.schedule),
                "scaler": self.scaler.state_dict(),
                "position": dataclasses.asdict(self.pos),
                "ranks": ranks,
            }
            save_checkpoint(self.run_dir / CHECKPOINT, state)

    # -- the loop --------------------------------------------------------------------------------------------

    def run(self) -> Path:
        """Train until the last epoch or the schedule's stop; returns the run directory."""
        while not self.pos.stopped and self.pos.epoch < self.cfg.epochs:
            self.train_epoch()
            self.end_epoch()
        return self.run_dir

    def train_epoch(self) -> None:
        """The remaining steps of the current epoch (all of them unless resuming mid-epoch)."""
        from tqdm import tqdm

        cfg, env, epoch = self.cfg, self.env, self.pos.epoch
        self.model.train()
        self.train_set.set_epoch(epoch)
        indices = epoch_indices(len(self.train_base), epoch, cfg.seed, env, self.per_step)
        loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=self.micro,
            sampler=indices[self.pos.step * self.per_step :],
            num_workers=cfg.workers,
            collate_fn=collate_skipping,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed + epoch),  # leaves the global RNG (dropout) alone
        )
        batches = iter(loader)
        bar = tqdm(
            total=self.steps,
            initial=self.pos.step,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            file=sys.stderr,
            disable=cfg.quiet or not env.main,
            leave=False,
        )
        pending = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, top-1, top-5 not yet in sums
        start, seconds = time.perf_counter(), self.sums["seconds"]
        while self.pos.step < self.steps:
            pending += self.train_step([next(batches) for _ in range(cfg.accum)])
            self.pos.step += 1
            self.pos.global_step += 1
            self.sums["seconds"] = seconds + time.perf_counter() - start
            bar.update(1)
            mid_checkpoint = cfg.checkpoint_every and self.pos.global_step % cfg.checkpoint_every == 0
            if mid_checkpoint or self.pos.step % 20 == 0 or self.pos.step == self.steps:
                for key, value in zip(("loss", "top1", "top5"), pending.tolist(), strict=True):  # one sync
                    self.sums[key] += value
                pending.zero_()
                n = max(self.sums["images"], 1.0)
                bar.set_postfix(loss=f"{self.sums['loss'] / n:.3f}", img_s=f"{n / self.sums['seconds']:.0f}")
            if mid_checkpoint and self.pos.step < self.steps:
                self.checkpoint()
        bar.close()

    def train_step(self, micro_batches: list[tuple[torch.Tensor | None, torch.Tensor, list[int]]]) -> torch.Tensor:
        """One SGD step over `accum` micro-batches; returns (summed loss, top-1 hits, top-5 hits) on the device."""
        cfg = self.cfg
        valid = sum(len(y) for _, y, _ in micro_batches)
        self.optimizer.zero_grad(set_to_none=True)
        out = torch.zeros(3, dtype=torch.float64, device=self.device)
        for j, (x, y, skipped) in enumerate(micro_batches):
            self.report_skipped(skipped, "train")
            self.sums["skipped"] += len(skipped)
            weight = 1.0
            if x is None:  # every image unreadable: a zero-weight stand-in keeps DDP's collectives in step
                x, y, weight = torch.zeros(1, 3, cfg.crop, cfg.crop), torch.zeros(1, dtype=torch.long), 0.0
            x = x.to(self.device, non_blocking=True, memory_format=self.fmt)
            y = y.to(self.device, non_blocking=True)
            # DDP all-reduces gradients on the last micro-batch of the step only.
            last = self.ddp is None or j == cfg.accum - 1
            with contextlib.nullcontext() if last else self.ddp.no_sync():
                with autocast(self.device, cfg.amp):
                    logits = self.net(x)  # (micro, classes)
                    loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
                # Each micro-batch adds its share of the step's mean loss: together, the full batch's gradient.
                self.scaler.scale(loss_sum * (weight / max(valid, 1))).backward()
            if weight:
                top1, top5 = count_correct(logits.detach(), y)
                out += torch.stack([loss_sum.detach().double(), top1.double(), top5.double()])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.sums["images"] += valid
        return out

    def end_epoch(self) -> None:
        """Validate, step the schedule, keep the best weights, checkpoint and write the metrics."""
        cfg, env, epoch = self.cfg, self.env, self.pos.epoch
        start = time.perf_counter()
        val = evaluate_top_k(
            self.model,
            self.val_loader,
            self.device,
            cfg.amp,
            cfg.channels_last,
            env,
            lambda indices: self.report_skipped(indices, "val"),
        )
        loss, c1, c5, images, skipped = env.sum([self.sums[k] for k in SUMS[:5]])
        n = max(images, 1.0)
        record = {
            "epoch": epoch + 1,
            "lr": self.schedule.lr,
            "train_loss": loss / n,
            "train_top1": 100 * (1 - c1 / n),
            "train_top5": 100 * (1 - c5 / n),
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "images_per_s": images / max(self.sums["seconds"], 1e-9),
            "seconds": self.sums["seconds"] + time.perf_counter() - start,  # training + validation
            "skipped": int(skipped + val["skipped"]),
            "steps": self.pos.global_step,
        }
        action = self.schedule.step(val["top1"])
        record["best"] = action == "improved"
        self.set_lr()
        if env.main and action == "improved":
            save_weights(
                self.model,
                self.run_dir / WEIGHTS,
                preprocessing=Preprocessing("RGB", 255.0, tuple(self.stats.mean), (1.0, 1.0, 1.0)),
                class_names=self.classes,
                source="vggnet train",
                extra={
                    "scale": [self.smin, self.smax],  # the evaluation's default test scales derive from these
                    "crop": cfg.crop,
                    "epoch": epoch + 1,
                    "val_top1": val["top1"],
                    "val_top5": val["top5"],
                },
            )
        self.pos.history.append(record)
        self.pos.epoch, self.pos.step, self.pos.stopped = epoch + 1, 0, action == "stop"
        self.sums = dict.fromkeys(SUMS, 0.0)
        self.checkpoint()
        if env.main:
            write_metrics(self.run_dir, self.pos.history)
            line = (
                f"epoch {epoch + 1}/{cfg.epochs}  lr {record['lr']:.1e}  train loss {record['train_loss']:.3f} "
                f"top-1 {record['train_top1']:.2f}%  val loss {val['loss']:.3f} top-1 {val['top1']:.2f}% "
                f"top-5 {val['top5']:.2f}%  {record['images_per_s']:.0f} img/s  {record['seconds']:.1f} s"
            )
            report(line + ("  (best)" if record["best"] else "") + ("  (LR / 10)" if action == "decrease" else ""))
            if action == "stop":
                report(f"validation error plateaued after {self.schedule.decreases} LR decreases; stopping")


def best_record(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The metrics line of a run's best epoch (lowest validation top-1 error)."""
    path = Path(run) / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (has the run finished an epoch?)")
    history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return min(history, key=lambda h: h["val_top1"])
