"""Training step (forward, backward, SGD momentum 0.9 + weight decay 5e-4, cross-entropy): ours vs torchvision's VGG.

Ours: vggnet.train.train_step (the code `vggnet train` runs) on the model build_model makes, in the memory
format and with the optimiser a run sets up (by default channels-last, fused SGD: `train.sgd`). Baseline: a
plain loop over torchvision's VGG with the same weights (its
state_dict loaded into ours with strict=True), the same optimiser settings and the same batches.
Two networks: the demo's (A, width 1/8, 32x32 crops, 10 classes, batch 32) and VGG-11 (A) at 224, batch 8.
Run: PYTHONPATH=src python benchmarks/train_step.py   (about 3 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, machine_line, median, publish  # noqa: E402

from vggnet.configs import TrainConfig  # noqa: E402
from vggnet.train import build_model, sgd, train_step  # noqa: E402


def torchvision_twin(ours: torch.nn.Module) -> torch.nn.Module:
    """torchvision's VGG class with our network's layer sizes (its vgg11 itself at full width, 224)."""
    import torchvision

    convs = [m for m in ours.features if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in ours.classifier if isinstance(m, torch.nn.Linear)]
    if ours.cfg.width == 1 and ours.cfg.input_size == 224 and fcs[-1].out_features == 1000:
        return torchvision.models.vgg11()
    cfg: list[int | str] = []
    for m in ours.features:
        if isinstance(m, torch.nn.Conv2d):
            cfg.append(m.out_channels)
        elif isinstance(m, torch.nn.MaxPool2d):
            cfg.append("M")
    net = torchvision.models.VGG(torchvision.models.vgg.make_layers(cfg), num_classes=fcs[-1].out_features)
    net.avgpool = torch.nn.AdaptiveAvgPool2d(ours.avgpool.output_size)  # 1x1 here: the 32x32 net's grid
    net.classifier = torch.nn.Sequential(
        torch.nn.Linear(fcs[0].in_features, fcs[0].out_features), torch.nn.ReLU(True), torch.nn.Dropout(0.5),
        torch.nn.Linear(fcs[1].in_features, fcs[1].out_features), torch.nn.ReLU(True), torch.nn.Dropout(0.5),
        torch.nn.Linear(fcs[2].in_features, fcs[2].out_features),
    )  # fmt: skip
    assert len(convs) == sum(isinstance(c, int) for c in cfg)
    return net


def stepper(cfg: TrainConfig, classes: int) -> tuple[torch.nn.Module, Callable[[torch.Tensor, torch.Tensor], None]]:
    """The model a run builds, placed as a run places it, and one call of train_step with a run's arguments."""
    device = torch.device("cpu")
    model = build_model(cfg, classes)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = sgd(model, cfg, device)
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        train_step(model, optimizer, scaler, [(x, y)], device, amp=cfg.amp, memory_format=fmt, crop=cfg.crop)

    return model, step


def measure(name: str, cfg: TrainConfig, classes: int, rounds: int) -> dict[str, object]:
    """Images/s of our training step and torchvision's plain loop on the same weights and batches."""
    torch.manual_seed(0)
    ours, ours_step = stepper(cfg, classes)
    theirs = torchvision_twin(ours)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the same weights in both
    ours.train()
    theirs.train()
    opt = torch.optim.SGD(theirs.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(cfg.batch, 3, cfg.crop, cfg.crop, generator=g)
    y = torch.randint(0, classes, (cfg.batch,), generator=g)

    def torchvision_step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(theirs(x), y).backward()
        opt.step()

    times = interleaved({"ours": lambda: ours_step(x, y), "torchvision": torchvision_step}, rounds)
    ips = {k: cfg.batch / median(v) for k, v in times.items()}
    return {
        "network": name,
        "model": cfg.arch,
        "width": cfg.width,
        "crop": cfg.crop,
        "classes": classes,
        "batch": cfg.batch,
        "rounds": rounds,
        "images_per_s": ips,
        "ratio": ips["ours"] / ips["torchvision"],
        "seconds": times,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds-small", type=int, default=30, help="interleaved rounds, demo network")
    parser.add_argument("--rounds-large", type=int, default=5, help="interleaved rounds, VGG-11 at 224")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (width 1/16, batch 4, 2 rounds) for tests")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    parser.add_argument("--name", default="train_step")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(os.cpu_count() or 1)

    from vggnet.demo import demo_configs

    demo, _ = demo_configs(quick=False, out=Path("unused"))
    demo = dataclasses.replace(demo, threads=0)
    runs = []
    if args.smoke:
        runs.append(measure("smoke", dataclasses.replace(demo, width=1 / 16, batch=4), 10, 2))
    else:
        runs.append(measure("demo (A, width 1/8, 32x32)", demo, 10, args.rounds_small))
        vgg11 = TrainConfig(model="A", width=1.0, crop=224, batch=8, lr=1e-2, init="kaiming")
        runs.append(measure("VGG-11 (A), 224x224", vgg11, 1000, args.rounds_large))
    results = {"runs": runs, "machine": machine(), "command": " ".join(sys.argv)}
    if args.out is not None:
        import common

        common.RESULTS = args.out
    return publish(args.name, results, markdown(results))


def markdown(r: dict) -> str:
    """The results as Markdown: images/s of each and the ratio, per network."""
    cmd = "PYTHONPATH=src python benchmarks/" + r["command"].split("benchmarks/")[-1]
    lines = [
        "# Training step, ours vs torchvision's VGG, CPU",
        "",
        f"Machine: {machine_line(r['machine'])}.  ",
        f"Command: `{cmd}`.  ",
        "A step: forward, cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4); the same weights",
        "(torchvision's state_dict loaded into ours, strict) and the same batch; ours is",
        "`vggnet.train.train_step`, torchvision's a plain loop. Interleaved rounds, medians.",
        "",
        "| network | batch | rounds | ours images/s | torchvision images/s | ours / torchvision |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in r["runs"]:
        ips = run["images_per_s"]
        lines.append(
            f"| {run['network']} | {run['batch']} | {run['rounds']} | {ips['ours']:.1f} | "
            f"{ips['torchvision']:.1f} | {run['ratio']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
