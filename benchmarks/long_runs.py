"""Long runs stay bounded: peak RSS of `evaluate` and `predict` over 1k and 10k images.

Imagenette's validation photos are read again and again (a dataset that cycles them; for predict, a
list of their paths repeated) through a small random VGG (A at width 1/8, 64-pixel input, 10 classes,
test scale 73: the pipeline is what is measured, not the network). Each run is a fresh process that
samples its resident memory every 0.2 s; peak RSS is getrusage's. A flat profile: the 10k run peaks
where the 1k run does, plus what the results themselves hold (posteriors, predictions).
Run: PYTHONPATH=src python benchmarks/long_runs.py   (about 5 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, machine_line, publish  # noqa: E402

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette"  # shared/ beside the repository
SIZES = (1000, 10000)
MIB = 1 << 20


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Sampler(threading.Thread):
    """RSS every `every` seconds, as (seconds since start, bytes)."""

    def __init__(self, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every, self.samples, self.start_time, self.done = every, [], time.perf_counter(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.samples.append((time.perf_counter() - self.start_time, rss_bytes()))


class Cycled(torch.utils.data.Dataset):
    """The first n items of a dataset repeated end to end."""

    def __init__(self, base: torch.utils.data.Dataset, n: int) -> None:
        self.base, self.n, self.classes = base, n, list(base.classes)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.base[i % len(self.base)]


def child(command: str, n: int, weights: str, data: Path) -> dict[str, object]:
    """One measured run in this process."""
    from vggnet.configs import EvalConfig
    from vggnet.data import ImageFolder
    from vggnet.evaluate import evaluate, predict

    torch.set_num_threads(1)  # one image at a time (predict) gains nothing from threads, and a busy machine costs them
    base = ImageFolder(data / "val")
    cfg = EvalConfig(method="dense", flip=True, batch_size=32)
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    if command == "evaluate":
        result = evaluate([weights], Cycled(base, n), cfg, progress=False)
        done = result.images + len(result.skipped)
    else:
        paths = [base.samples[i % len(base)][0] for i in range(n)]
        predictions, skipped = predict(paths, [weights], cfg, progress=False)
        done = len(predictions) + len(skipped)
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    samples = sampler.samples or [(seconds, rss_bytes())]  # a run shorter than one sampling period
    tenth = [rss for t, rss in samples if t >= seconds * 0.1] or [samples[-1][1]]
    return {
        "command": command,
        "images": done,
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB,
        "rss_after_10pct_mib": tenth[0] / MIB,
        "rss_at_end_mib": samples[-1][1] / MIB,
        "samples": [(round(t, 1), round(rss / MIB, 1)) for t, rss in samples[:: max(1, len(samples) // 50)]],
    }


def measure(command: str, n: int, weights: str, data: Path) -> dict[str, object]:
    """Run `child` in a fresh process (so peak RSS is this run's alone)."""
    args = [sys.executable, __file__, "--child", command, "--images", str(n), "--weights", weights, "--data", str(data)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def command_args() -> str:
    """The options this run was given, as typed (the --data of a checkout whose shared/ is elsewhere)."""
    return "".join(f" {a}" for a in sys.argv[1:])


def report(runs: list[dict[str, object]], info: dict[str, object], data: Path) -> str:
    rows = []
    for command in ("evaluate", "predict"):
        small, large = (next(r for r in runs if r["command"] == command and r["images"] == n) for n in SIZES)
        rows.append(
            f"| {command} | {small['peak_rss_mib']:.0f} | {large['peak_rss_mib']:.0f} | "
            f"{large['peak_rss_mib'] - small['peak_rss_mib']:+.0f} | {large['rss_after_10pct_mib']:.0f} -> "
            f"{large['rss_at_end_mib']:.0f} | {large['images'] / large['seconds']:.0f} |"
        )
    return (
        "# Long runs: peak memory of evaluate and predict at 1k and 10k images\n\n"
        f"Machine: {machine_line(info)}.  \n"
        f"Command: `PYTHONPATH=src python benchmarks/long_runs.py{command_args()}`.  \n"
        f"Data: the {len(list((data / 'val').rglob('*.JPEG')))} Imagenette validation photos (224x224 JPEG), "
        "read again and again; a random VGG A at width 1/8, 64-pixel input, 10 classes, test scale 73, dense "
        "evaluation with flips, batch 32, 0 workers, 1 torch thread. One fresh process per run; peak RSS from getrusage, the "
        "profile sampled every 0.2 s.\n\n"
        "| command | peak RSS, 1k images (MiB) | peak RSS, 10k images (MiB) | 10k - 1k (MiB) | 10k run: RSS at 10% -> end (MiB) | images/s (10k) |\n"
        "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(IMAGENETTE), help="Imagenette root (with val/<wnid>/*.JPEG)")
    parser.add_argument("--child", choices=["evaluate", "predict"], help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = Path(args.data)
    if args.child:
        print(json.dumps(child(args.child, args.images, args.weights, data)))
        return 0
    if not (data / "val").is_dir():
        print(f"{data}: no Imagenette photos (val/<wnid>/*.JPEG); nothing measured")
        return 0
    from vggnet import build
    from vggnet.weights import save_weights

    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "net.safetensors")
        torch.manual_seed(0)
        save_weights(build("A", width=1 / 8, num_classes=10, input_size=64), weights, extra={"scale": [73, 73]})
        runs = []
        for n in SIZES:
            for command in ("evaluate", "predict"):
                runs.append(measure(command, n, weights, data))
                print(
                    f"{command} {n}: peak {runs[-1]['peak_rss_mib']:.0f} MiB, {runs[-1]['seconds']:.0f} s", flush=True
                )
    info = machine()
    return publish("long_runs", {"machine": info, "runs": runs}, report(runs, info, data))


if __name__ == "__main__":
    sys.exit(main())
