"""A training run's state, built once: data, model, optimiser, schedule, position, and its files.

`build_run` does every check and load before any work starts, in an order that keeps a resumed run
bit-identical to an uninterrupted one (the RNG states are restored last). The loop (`loop.py`)
reads and advances the `Run` it returns; checkpoints save and restore it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..configs import TrainConfig
from ..data import (
    BatchedImages,
    EvalTransform,
    RGBStats,
    TensorItems,
    TrainTransform,
    Transformed,
    batch_loader,
    compute_stats,
    decode_device,
    item_name,
    open_dataset,
)
from ..frozen import (
    Prefix,
    Rest,
    Split,
    cached_outputs,
    compute_outputs,
    folds,
    output_shape,
    prefix_length,
    prefix_state,
    span,
    stages,
)
from ..io import optional, report, write_text
from ..model import VGG
from ..runs import CHECKPOINT, CONFIG, INIT, METRICS, PLOT, STATS
from ..tables import human_bytes
from ..weights import Preprocessing
from .checkpoint import (
    Position,
    open_run_dir,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    tensor_bytes,
)
from .config import fit_batch
from .distributed import Dist
from .elastic import torchrun_job
from .finetune import (
    check_class_sizes,
    freeze,
    input_adapter,
    param_groups,
    parse_freeze,
    rgb255_mean,
    to_network_input,
)
from .initialize import build_model, copy_pretrained, describe_start, open_pretrained, start_config
from .schedule import PlateauSchedule, set_lr, sgd
from .slim import check_loaded, omitted_keys, refill, slim_state

# Running sums of the epoch in progress: summed loss, top-1 and top-5 hits, images, skipped files, training seconds.
SUMS = ("loss", "top1", "top5", "images", "skipped", "seconds")


@dataclass
class Run:
    """Everything one training run holds; the loop reads and advances it, checkpoints save it."""

    cfg: TrainConfig
    env: Dist
    dir: Path
    classes: list[str]
    stats: RGBStats
    model: VGG
    net: nn.Module  # what the training step calls: the model, wrapped in DDP and/or compiled
    ddp: nn.parallel.DistributedDataParallel | None
    optimizer: torch.optim.Optimizer
    schedule: PlateauSchedule
    scaler: torch.amp.GradScaler
    train_base: Dataset
    val_base: Dataset
    train_set: Transformed | BatchedImages | TensorItems  # TensorItems: a frozen prefix's outputs (frozen.py)
    val_loader: Iterable[Any]  # batches of (images or None, labels, skipped indices)
    micro: int  # images per forward pass
    per_step: int  # images per optimiser step on this rank
    steps: int  # optimiser steps per epoch
    pos: Position = field(default_factory=Position)
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUMS, 0.0))
    reported: set[tuple[str, int]] = field(default_factory=set)  # unreadable items already named (per process)
    preprocessing: Preprocessing | None = None  # the input the model takes, recorded with its weights
    origin: dict[str, Any] = field(default_factory=dict)  # where --init-from's weights came from (INIT)
    val_net: nn.Module | None = None  # what validation calls (default: the model): the net without DDP or compile
    stand_in: tuple[int, ...] | None = None  # one input's shape, for a micro-batch whose files were all unreadable
    omitted: list[str] = field(default_factory=list)  # state keys the checkpoints leave to --init-from (slim.py)

    @property
    def device(self) -> torch.device:
        return self.env.device

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cfg.channels_last else torch.contiguous_format

    @property
    def scale(self) -> tuple[int, int]:
        """(Smin, Smax) of the training rescale."""
        return min(self.cfg.scale), max(self.cfg.scale)

    def report_skipped(self, indices: list[int], split: str) -> None:
        """Name each unreadable file once on stderr."""
        base = self.train_base if split == "train" else self.val_base
        for i in indices:
            if (split, i) not in self.reported:
                self.reported.add((split, i))
                report(f"skipping unreadable {split} image {item_name(base, i)}")


def open_datasets(cfg: TrainConfig, env: Dist, datasets: tuple[Dataset, Dataset] | None) -> tuple[Dataset, Dataset]:
    """The training and validation datasets (both opened, and their errors raised, before any work starts)."""
    if datasets is None:
        train_base = open_dataset(cfg.data, "train", cfg.digits_size)
        datasets = train_base, open_dataset(cfg.data, "val", cfg.digits_size, fallback="train")
    train_base, val_base = datasets
    if list(val_base.classes) != list(train_base.classes):
        raise ValueError(f"{cfg.data}: the validation classes differ from the training classes")
    check_class_sizes(train_base, cfg.data)
    if env.main and getattr(val_base, "root", None) == getattr(train_base, "root", 0):
        report(f"{cfg.data} has no val/ split: validating on the training images")
    return train_base, val_base


def load_stats(cfg: TrainConfig, env: Dist, run_dir: Path, train_base: Dataset, resuming: bool) -> RGBStats:
    """The run's own statistics when resuming, a given file, or computed on rank 0 and broadcast."""
    if resuming:
        return RGBStats.load(run_dir / STATS)
    if cfg.stats:
        stats = RGBStats.load(cfg.stats)
    else:
        stats = None
        if env.main:
            stats = compute_stats(train_base, cfg.stats_samples, cfg.seed, cfg.workers, not cfg.quiet)
        stats = env.broadcast(stats)
    if env.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        stats.save(run_dir / STATS)
    return stats


def build_run(cfg: TrainConfig, env: Dist, datasets: tuple[Dataset, Dataset] | None = None) -> Run:
    """Check, open and build everything a run needs (or restore it from its checkpoint with `cfg.resume`)."""
    cfg.check(env.world)
    decoder = decode_device(cfg.decode, env.device)  # None: PIL per image; before anything is written
    # the data next: a folder too small for --batch is told in seconds, not after loading the weights
    train_base, val_base = open_datasets(cfg, env, datasets)
    cfg = fit_batch(cfg, len(train_base), env)
    start = open_pretrained(cfg.init_from, cfg.verify) if cfg.init_from and not cfg.resume else None
    if start is not None:  # the weights' own configuration, checked before anything is written
        cfg = start_config(cfg, start)
    with torch.device("meta"):  # a bad --freeze fails here, before anything is written
        parse_freeze(build_model(cfg, 1), cfg.freeze)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    run_dir, ckpt = open_run_dir(cfg, env)
    micro = cfg.batch // (cfg.accum * env.world)
    per_step = micro * cfg.accum
    steps = len(train_base) // env.world // per_step
    stats = load_stats(cfg, env, run_dir, train_base, ckpt is not None)

    seed_everything(cfg.seed)
    classes = list(train_base.classes)
    model = build_model(cfg, len(classes))
    pre = Preprocessing("RGB", 255.0, tuple(stats.mean), (1.0, 1.0, 1.0))  # the paper's: minus the mean RGB
    origin: dict[str, Any] = {}
    new: list[str] | None = None  # state keys of the layers not copied from --init-from (None: all are new)
    copied: list[str] = []
    if start is not None and ckpt is None:  # (a torchrun restart that resumes by itself has a checkpoint)
        copied = copy_pretrained(model, start.model, str(start.path), classes, start.meta.class_names)
        origin, pre = describe_start(start, model, copied), start.meta.preprocessing
        new = [k for k in model.state_dict() if k not in copied]
        if env.main:
            write_text(run_dir / INIT, json.dumps({**origin, "preprocessing": dataclasses.asdict(pre), "new": new}))
            fresh = ", ".join(origin["new_layers"]) or "none"
            report(f"initialised {len(copied)} tensors from {start.path}; new layers: {fresh}")
        del start  # the source model is not needed any more (528 MB for VGG16)
    elif (run_dir / INIT).is_file():  # a resumed fine-tune: its input and its new layers as first recorded
        origin = json.loads((run_dir / INIT).read_text())
        pre, new = Preprocessing(**origin.pop("preprocessing")), origin.pop("new")
    if ckpt is not None and ckpt.get("omitted"):  # a slim checkpoint: the frozen layers from --init-from again
        refill(model, run_dir, origin, classes, cfg.verify)
    frozen = freeze(model, cfg.freeze)
    omitted = list(ckpt.get("omitted", [])) if ckpt is not None else omitted_keys(model, copied)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(env.device, memory_format=fmt)
    optimizer = sgd(model, cfg, env.device, param_groups(model, new, cfg.backbone_lr_scale))
    schedule = PlateauSchedule(cfg.lr, cfg.lr_factor, cfg.patience, cfg.max_decreases)
    scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.amp == "fp16")
    pos, sums, rng = Position(), dict.fromkeys(SUMS, 0.0), None
    if ckpt is not None:
        schedule, pos, sums, rng = restore(ckpt, model, optimizer, scaler, env, run_dir)
    if env.main:
        saved = dataclasses.replace(cfg, out=str(run_dir), resume="")
        write_text(run_dir / CONFIG, json.dumps(dataclasses.asdict(saved), indent=1))
    set_lr(optimizer, schedule.lr)

    smin, smax = min(cfg.scale), max(cfg.scale)
    shifted = dataclasses.replace(stats, mean=rgb255_mean(pre))  # the colour shift's PCA is the data's own
    if cfg.augment == "center":  # nothing random: a frozen prefix sees the same input every epoch
        transform: TrainTransform | EvalTransform = EvalTransform(smin, cfg.crop, shifted.mean)
    else:
        transform = TrainTransform((smin, smax), cfg.crop, shifted, cfg.color_shift, cfg.flip)
    val_transform = EvalTransform(cfg.val_scale or smin, cfg.crop, shifted.mean)
    # Layers frozen from conv1_1 run as inference (one process; DDP wraps the whole model)
    n = prefix_length(model, frozen) if env.world == 1 else 0
    rest = Rest(model, n) if n else None
    prefix = cached = None
    if n and cfg.augment == "center":  # the prefix is built only if its outputs are not on disk, then dropped
        cached = frozen_outputs(cfg, model, n, (train_base, val_base), (transform, val_transform), pre, env)
    elif n:
        prefix = Prefix(model, n)
    if prefix is not None and env.main:
        report(
            f"frozen {prefix.span}: run as inference on the fast path each step; its input is "
            f"augmented at random (--augment paper): --augment center computes its outputs once"
        )

    net: nn.Module = model if rest is None else rest if cached else Split(prefix, rest)  # type: ignore[arg-type]
    val_net = net
    ddp = None
    if env.world > 1:
        ids = [env.device.index] if env.device.type == "cuda" else None
        net = ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        net = torch.compile(net)

    if cached is not None:
        train_set, val_set = cached
    elif decoder is None:
        train_set = Transformed(train_base, to_network_input(transform, pre), cfg.seed)
        val_set = Transformed(val_base, to_network_input(val_transform, pre))
    else:  # the weights' channel order and scale applied to each finished batch
        adapt = input_adapter(pre)
        train_set = BatchedImages(train_base, transform, cfg.seed, decoder, adapt=adapt)
        val_set = BatchedImages(val_base, val_transform, device=decoder, adapt=adapt)
    val_loader = batch_loader(
        torch.utils.data.Subset(val_set, range(env.rank, len(val_set), env.world)),  # a shard per rank
        micro,
        workers=cfg.workers,
        pin_memory=env.device.type == "cuda",
    )
    run = Run(
        cfg, env, run_dir, classes, stats, model, net, ddp, optimizer, schedule, scaler, train_base, val_base,
        train_set, val_loader, micro, per_step, steps, pos, sums, preprocessing=pre, origin=origin,
        val_net=val_net, stand_in=tuple(train_set.values.shape[1:]) if cached else None, omitted=omitted,
    )  # fmt: skip
    if rng is not None:  # the RNG states last: everything above may have drawn random numbers
        set_rng_state(rng, env.device)
    return run


def frozen_outputs(
    cfg: TrainConfig,
    model: VGG,
    n: int,
    bases: tuple[Dataset, Dataset],
    transforms: tuple[EvalTransform, EvalTransform],
    pre: Preprocessing,
    env: Dist,
) -> tuple[TensorItems, TensorItems]:
    """The frozen prefix's outputs for the training and validation images, computed once (or read from the cache)."""
    state = prefix_state(model, n)
    names = [name for name, _ in stages(model)[:n]]
    built: list[Prefix] = []

    def prefix() -> Prefix:  # built once, on the first split not read from disk
        if not built:
            built.append(Prefix(model, n))
        return built[0]

    done = []
    for split, base, transform in zip(("train", "val"), bases, transforms, strict=True):
        items = Transformed(base, to_network_input(transform, pre))
        settings = {
            "prefix": names, "scale": transform.size, "crop": transform.crop, "mean": list(transform.mean),
            "preprocessing": dataclasses.asdict(pre), "fast": folds(model, n, True),
        }  # fmt: skip
        desc = f"frozen {span(names)}, {split}"
        args = dict(batch_size=32, workers=cfg.workers, progress=not cfg.quiet and env.main, desc=desc)
        if cfg.frozen_cache:
            shape = output_shape(model, n, transform.crop)
            out, what = cached_outputs(prefix, items, base, settings, state=state, shape=shape, **args)
        else:
            out, what = compute_outputs(prefix(), items, **args), "computed"
        done.append((TensorItems(out.values, out.readable, out.labels), f"{split} {len(base)} images {what}"))
    if env.main:
        report(f"frozen {span(names)}: outputs of the fixed crops, " + "; ".join(d for _, d in done))
    return done[0][0], done[1][0]


def restore(
    ckpt: dict[str, Any],
    model: VGG,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    env: Dist,
    run_dir: Path,
) -> tuple[PlateauSchedule, Position, dict[str, float], dict[str, Any]]:
    """Load a resume checkpoint into the model, optimiser and scaler; returns schedule, position, sums, this rank's RNG."""
    omitted = list(ckpt.get("omitted", []))
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=not omitted)
    if omitted:
        check_loaded(run_dir, missing, unexpected, omitted)
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    pos = Position(**ckpt["position"])
    ranks = ckpt["ranks"]
    if pos.step and len(ranks) != env.world:
        raise ValueError(f"{run_dir} stopped mid-epoch with {len(ranks)} process(es); resume it with as many")
    mine = ranks[env.rank] if env.rank < len(ranks) else ranks[0]
    sums = dict(mine["sums"]) if pos.step else dict.fromkeys(SUMS, 0.0)
    return PlateauSchedule(**ckpt["schedule"]), pos, sums, mine["rng"]


def checkpoint(run: Run) -> None:
    """Write the resume checkpoint (every rank's RNG state and running sums; rank 0 writes)."""
    ranks = run.env.gather({"rng": rng_state(run.device), "sums": dict(run.sums)})
    if run.env.main:
        state = {
            "model": slim_state(run.model, run.omitted),
            "omitted": run.omitted,
            "optimizer": run.optimizer.state_dict(),
            "schedule": dataclasses.asdict(run.schedule),
            "scaler": run.scaler.state_dict(),
            "position": dataclasses.asdict(run.pos),
            "ranks": ranks,
            "job": torchrun_job(),  # lets a torchrun restart tell its own checkpoint from an older run's
        }
        if not run.cfg.quiet:  # VGG16's weights and momentum are about 1 GB: seconds of writing, said first
            report(f"writing the resume checkpoint {run.dir / CHECKPOINT} ({human_bytes(tensor_bytes(state))})")
        save_checkpoint(run.dir / CHECKPOINT, state)


def write_metrics(run_dir: Path, history: list[dict[str, Any]], num_classes: int = 1000) -> None:
    """metrics.jsonl (one line per finished epoch) and, with vggnet[plots], metrics.png; both atomically."""
    write_text(run_dir / METRICS, "".join(json.dumps(h) + "\n" for h in history))
    if history and optional("matplotlib", "plots", f"{PLOT} not drawn"):
        from ..plots import plot_metrics

        plot_metrics(history, run_dir / PLOT, num_classes)
