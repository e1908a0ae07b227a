"""The training loop of section 3.1: one epoch of SGD steps, one validation, the end of an epoch.

`train_step` and `validate` take explicit arguments; `train_one_epoch` and `end_epoch` advance a `Run`
(`state.py`), which is what a checkpoint saves.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import batch_loader
from ..io import report
from ..metrics import count_correct, reported_ks
from ..runs import WEIGHTS
from ..tables import human_bytes
from ..weights import Preprocessing, save_weights
from .distributed import Dist, epoch_indices
from .schedule import set_lr
from .state import SUMS, Run, checkpoint, write_metrics

Batch = tuple[torch.Tensor | None, torch.Tensor]  # (images (N, 3, H, W), or None if all were unreadable; labels)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """bf16/fp16 autocast on the device, or nothing."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    micro_batches: Sequence[Batch],
    device: torch.device,
    *,
    amp: str = "none",
    memory_format: torch.memory_format = torch.contiguous_format,
    crop: int = 224,
    ddp: nn.parallel.DistributedDataParallel | None = None,
    stand_in: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """One SGD step over micro-batches whose gradients add up to the whole batch's.

    Returns (summed loss, top-1 hits, top-5 hits) on the device, without a sync. A micro-batch whose
    images were all unreadable runs as a zero-weight stand-in of side `crop` (or of shape `stand_in`: a
    frozen prefix's outputs), so DDP's collectives stay in step.
    """
    valid = sum(len(y) for _, y in micro_batches)
    optimizer.zero_grad(set_to_none=True)
    out = torch.zeros(3, dtype=torch.float64, device=device)
    for j, (x, y) in enumerate(micro_batches):
        weight = 1.0
        if x is None:
            x, y, weight = torch.zeros(1, *(stand_in or (3, crop, crop))), torch.zeros(1, dtype=torch.long), 0.0
        x = x.to(device, non_blocking=True, memory_format=memory_format if x.dim() == 4 else torch.contiguous_format)
        y = y.to(device, non_blocking=True)
        # DDP all-reduces gradients on the last micro-batch of the step only.
        last = ddp is None or j == len(micro_batches) - 1
        with contextlib.nullcontext() if last else ddp.no_sync():
            with autocast(device, amp):
                logits = net(x)  # (micro, classes)
                loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
            # Each micro-batch adds its share of the step's mean loss: together, the full batch's gradient.
            scaler.scale(loss_sum * (weight / max(valid, 1))).backward()
        if weight:
            top1, top5 = count_correct(logits.detach(), y)
            out += torch.stack([loss_sum.detach().double(), top1.double(), top5.double()])
    scaler.step(optimizer)
    scaler.update()
    return out


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device | str = "cpu",
    amp: str = "none",
    channels_last: bool = False,
    env: Dist | None = None,
    on_skip: Callable[[list[int]], None] | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Mean loss and top-1/top-5 error (%) over a loader of collate_skipping batches (summed over ranks).

    `on_skip` receives the indices of unreadable items; their count is returned as "skipped". `progress`:
    a bar on stderr that advances per image.
    """
    from tqdm import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits, images, skipped
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dataset = getattr(loader, "dataset", None)
    total = len(dataset) if dataset is not None else None
    bar = tqdm(total=total, desc="validation", unit="img", file=sys.stderr, disable=not progress, leave=False)
    for x, y, skipped in loader:
        bar.update(len(y) + len(skipped))
        sums[4] += len(skipped)
        if skipped and on_skip is not None:
            on_skip(skipped)
        if x is None:
            continue
        x = x.to(device, non_blocking=True, memory_format=fmt if x.dim() == 4 else torch.contiguous_format)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        sums[0] += F.cross_entropy(logits.float(), y, reduction="sum")
        top1, top5 = count_correct(logits, y)
        sums[1:4] += torch.stack([top1, top5, torch.tensor(len(y), device=device)]).to(sums)
    bar.close()
    model.train(was_training)
    loss, c1, c5, n, skipped = (env or Dist()).sum(sums.tolist())
    n_ = max(n, 1.0)
    return {
        "loss": loss / n_,
        "top1": 100 * (1 - c1 / n_),
        "top5": 100 * (1 - c5 / n_),
        "images": n,
        "skipped": skipped,
    }


def train_one_epoch(run: Run) -> None:
    """The remaining steps of the current epoch (all of them unless resuming mid-epoch)."""
    from tqdm import tqdm

    cfg, env, pos, epoch = run.cfg, run.env, run.pos, run.pos.epoch
    run.model.train()
    run.train_set.set_epoch(epoch)
    indices = epoch_indices(len(run.train_base), epoch, cfg.seed, env, run.per_step)
    loader = batch_loader(
        run.train_set,
        run.micro,
        sampler=indices[pos.step * run.per_step :],
        workers=cfg.workers,
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed + epoch),  # leaves the global RNG (dropout) alone
    )
    batches = iter(loader)
    bar = tqdm(
        total=run.steps,
        initial=pos.step,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="step",
        file=sys.stderr,
        disable=cfg.quiet or not env.main,
        leave=False,
    )
    pending = torch.zeros(3, dtype=torch.float64, device=run.device)  # loss, top-1, top-5 not yet in sums
    start, seconds = time.perf_counter(), run.sums["seconds"]
    while pos.step < run.steps:
        micro_batches = []
        for _ in range(cfg.accum):
            x, y, skipped = next(batches)
            run.report_skipped(skipped, "train")
            run.sums["skipped"] += len(skipped)
            micro_batches.append((x, y))
        pending += train_step(
            run.net, run.optimizer, run.scaler, micro_batches, run.device,
            amp=cfg.amp, memory_format=run.memory_format, crop=cfg.crop, ddp=run.ddp, stand_in=run.stand_in,
        )  # fmt: skip
        run.sums["images"] += sum(len(y) for _, y in micro_batches)
        pos.step += 1
        pos.global_step += 1
        run.sums["seconds"] = seconds + time.perf_counter() - start
        bar.update(1)
        mid_checkpoint = cfg.checkpoint_every and pos.global_step % cfg.checkpoint_every == 0
        if mid_checkpoint or pos.step % 20 == 0 or pos.step == run.steps:
            for key, value in zip(("loss", "top1", "top5"), pending.tolist(), strict=True):  # one sync
                run.sums[key] += value
            pending.zero_()
            n = max(run.sums["images"], 1.0)
            bar.set_postfix(loss=f"{run.sums['loss'] / n:.3f}", img_s=f"{n / run.sums['seconds']:.0f}")
        if mid_checkpoint and pos.step < run.steps:
            checkpoint(run)
    bar.close()


def end_epoch(run: Run) -> str:
    """Validate, step the schedule, keep the best weights, checkpoint and write the metrics; returns the schedule's action."""
    cfg, env, epoch = run.cfg, run.env, run.pos.epoch
    start = time.perf_counter()
    val = validate(
        run.val_net or run.model, run.val_loader, run.device, cfg.amp, cfg.channels_last, env,
        lambda indices: run.report_skipped(indices, "val"), progress=not cfg.quiet and env.main,
    )  # fmt: skip
    loss, c1, c5, images, skipped = env.sum([run.sums[k] for k in SUMS[:5]])
    n = max(images, 1.0)
    record = {
        "epoch": epoch + 1,
        "lr": run.schedule.lr,
        "train_loss": loss / n,
        "train_top1": 100 * (1 - c1 / n),
        "train_top5": 100 * (1 - c5 / n),
        "val_loss": val["loss"],
        "val_top1": val["top1"],
        "val_top5": val["top5"],
        "images_per_s": images / max(run.sums["seconds"], 1e-9),
        "seconds": run.sums["seconds"] + time.perf_counter() - start,  # training + validation
        "skipped": int(skipped + val["skipped"]),
        "steps": run.pos.global_step,
    }
    action = run.schedule.step(val["top1"])
    record["best"] = action == "improved"
    set_lr(run.optimizer, run.schedule.lr)
    if env.main and action == "improved":
        save_best(run, epoch, val)
    run.pos.history.append(record)
    run.pos.epoch, run.pos.step, run.pos.stopped = epoch + 1, 0, action == "stop"
    run.sums = dict.fromkeys(SUMS, 0.0)
    checkpoint(run)
    if env.main:
        write_metrics(run.dir, run.pos.history, run.model.cfg.num_classes)
        log_epoch(record, cfg.epochs, action, run.schedule.decreases, run.model.cfg.num_classes)
    return action


def save_best(run: Run, epoch: int, val: dict[str, float]) -> None:
    """The best epoch's weights in the project format, with their input preprocessing, training scale and origin."""
    smin, smax = run.scale
    if not run.cfg.quiet:
        size = human_bytes(sum(v.numel() * v.element_size() for v in run.model.state_dict().values()))
        report(f"writing the best epoch's weights {run.dir / WEIGHTS} ({size})")
    save_weights(
        run.model,
        run.dir / WEIGHTS,
        preprocessing=run.preprocessing or Preprocessing("RGB", 255.0, tuple(run.stats.mean), (1.0, 1.0, 1.0)),
        class_names=run.classes,
        source="vggnet train",
        extra={
            "scale": [smin, smax],  # the evaluation's default test scales derive from these
            "crop": run.cfg.crop,
            "epoch": epoch + 1,
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            **({"init_from": run.origin} if run.origin else {}),
        },
    )


def log_epoch(record: dict[str, Any], epochs: int, action: str, decreases: int, num_classes: int = 1000) -> None:
    """One line per epoch on stderr (quiet mode included); top-5 only where there are more than 5 classes."""
    top5 = f"top-5 {record['val_top5']:.2f}%  " if 5 in reported_ks(num_classes) else ""
    line = (
        f"epoch {record['epoch']}/{epochs}  lr {record['lr']:.1e}  train loss {record['train_loss']:.3f} "
        f"top-1 {record['train_top1']:.2f}%  val loss {record['val_loss']:.3f} top-1 {record['val_top1']:.2f}% "
        f"{top5}{record['images_per_s']:.0f} img/s  {record['seconds']:.1f} s"
    )
    report(line + ("  (best)" if record["best"] else "") + ("  (LR / 10)" if action == "decrease" else ""))
    if action == "stop":
        report(f"validation error plateaued after {decreases} LR decreases; stopping")


def fit(run: Run) -> None:
    """Train until the last epoch or the schedule's stop."""
    while not run.pos.stopped and run.pos.epoch < run.cfg.epochs:
        train_one_epoch(run)
        end_epoch(run)
