"""What checking content hashes costs: loading a full-size VGG16 with and without verification.

A random VGG16 (138 M parameters) is saved in the project format (553 MB); `load_weights` then reads
it with verify=True (the default: the sha256 of the metadata and of every tensor's bytes recomputed)
and verify=False, interleaved, after a warm-up that puts the file in the page cache, so the figures
are CPU time, not disk time. Also timed: the digest alone, a converted file's source hash
(file_sha256 over the same bytes), and a VGG16 resume checkpoint (weights + SGD momentum, 1.1 GB)
read with and without its check.
Run: PYTHONPATH=src python benchmarks/weights_verify.py   (about 2 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, machine_line, median, publish  # noqa: E402

from vggnet import build  # noqa: E402
from vggnet.train import load_checkpoint, save_checkpoint  # noqa: E402
from vggnet.weights import digest, file_sha256, load_weights, save_weights  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed loads of each kind (default: 5)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (width 1/16, 1 round) for tests")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 1
    if args.out is not None:
        import common

        common.RESULTS = args.out
    torch.manual_seed(0)
    model = build("D", width=1 / 16 if args.smoke else 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        weights, ckpt = Path(tmp) / "vgg16.safetensors", Path(tmp) / "last.pt"
        save_weights(model, weights)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for p in model.parameters():
            optimizer.state[p]["momentum_buffer"] = torch.randn_like(p)
        save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "position": {}})
        del optimizer
        state = model.state_dict()
        sizes = {"weights": weights.stat().st_size, "checkpoint": ckpt.stat().st_size}
        times = interleaved(
            {
                "load_weights, verify=True": lambda: load_weights(weights),
                "load_weights, verify=False": lambda: load_weights(weights, verify=False),
                "digest of the tensors (in memory)": lambda: digest(state),
                "file_sha256 of the file": lambda: file_sha256(weights),
                "load_checkpoint, verify=True": lambda: load_checkpoint(ckpt),
                "load_checkpoint, verify=False": lambda: load_checkpoint(ckpt, verify=False),
            },
            rounds=args.rounds,
        )
    info = machine()
    info["load_average"] = os.getloadavg()
    medians = {name: median(t) for name, t in times.items()}
    on, off = medians["load_weights, verify=True"], medians["load_weights, verify=False"]
    c_on, c_off = medians["load_checkpoint, verify=True"], medians["load_checkpoint, verify=False"]
    rows = "\n".join(f"| {name} | {m:.2f} | {min(times[name]):.2f} |" for name, m in medians.items())
    text = (
        "# What content-hash verification costs: VGG16\n\n"
        f"Machine: {machine_line(info)}; load average {info['load_average'][0]:.1f} while it ran (a shared machine).  \n"
        "Command: `PYTHONPATH=src python benchmarks/weights_verify.py`.  \n"
        f"A random VGG16 ({sum(v.numel() for v in state.values()):,} numbers): {sizes['weights'] / 1e6:.0f} MB in the project format; its resume "
        f"checkpoint with SGD momentum {sizes['checkpoint'] / 1e6:.0f} MB. Files in the page cache (a warm-up read "
        f"first); {args.rounds} interleaved rounds, seconds.\n\n"
        "| what | median (s) | best (s) |\n|---|---:|---:|\n" + rows + "\n\n"
        f"Verification adds **{on - off:.2f} s** to loading VGG16's weights ({off:.2f} s -> {on:.2f} s, x{on / off:.1f}) "
        f"and {c_on - c_off:.2f} s to reading its checkpoint ({c_off:.2f} s -> {c_on:.2f} s): sha256 at "
        f"{sizes['weights'] / medians['digest of the tensors (in memory)'] / 1e6:.0f} MB/s on one core.\n"
    )
    data = {"machine": info, "sizes_bytes": sizes, "rounds": args.rounds, "seconds": times, "medians": medians}
    return publish("weights_verify", data, text)


if __name__ == "__main__":
    sys.exit(main())
