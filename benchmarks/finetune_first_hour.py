"""A new user's first hour on a CPU, timed: convert, predict, probe, fine-tune, evaluate, view, export.

Each step is the command docs/finetuning.md shows, run as a fresh `python -m vggnet` process (start-up
and weight loading included) on two classes of Imagenette's real photos. "before" runs the same
commands with the code of another checkout (--before-src, e.g. main before issue 36); its head-only
fine-tune is timed for one epoch and multiplied by the epochs, as a user would wait for it.

The weights are a full-size VGG16 built here with random values (no network access): the timings depend
on the shapes only, not on the values, but the accuracies printed by the commands mean nothing.

    PYTHONPATH=src python benchmarks/finetune_first_hour.py --before-src /work/main/src
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_flags, cpu_model, publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGENETTE = ROOT.parent / "shared" / "data" / "imagenette"
CLASSES = {"tench": "n01440764", "springer": "n02102040"}


def photos(src: Path, dst: Path, train: int, val: int) -> Path:
    """dst/{train,val}/<class>/ as links to the first photos of two Imagenette classes (nothing copied)."""
    for split, n in (("train", train), ("val", val)):
        for name, wnid in CLASSES.items():
            folder = dst / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for f in sorted((src / split / wnid).iterdir())[:n]:
                (folder / f.name).symlink_to(f)
    return dst


def step(name: str, args: list[str], src: Path, env: dict[str, str], log: Path) -> dict[str, object]:
    """Run `python -m vggnet ARGS` with `src` first on the path; its wall time and exit status."""
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ vggnet {' '.join(args)}\n")
        out.flush()
        rc = subprocess.call(
            [sys.executable, "-m", "vggnet", *args], env={**env, "PYTHONPATH": str(src)}, stdout=out, stderr=out
        )
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.1f} s (exit {rc})", flush=True)
    return {"step": name, "command": "vggnet " + " ".join(args), "seconds": round(seconds, 1), "exit": rc}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-src", type=Path, help="src/ of the code to compare with (omitted: after only)")
    parser.add_argument("--data", type=Path, default=IMAGENETTE, help="Imagenette's folder (train/, val/ by wnid)")
    parser.add_argument("--train", type=int, default=125, help="training photos per class (default: 125)")
    parser.add_argument("--val", type=int, default=50, help="validation photos per class (default: 50)")
    parser.add_argument("--epochs", type=int, default=10)
    opts = parser.parse_args()
    if not opts.data.is_dir():
        print(f"{opts.data}: no Imagenette folder; nothing measured")
        return 0
    work = Path(tempfile.mkdtemp(prefix="first_hour_"))
    log = work / "log.txt"
    env = dict(os.environ, VGGNET_CACHE=str(work / "cache"), VGGNET_FROZEN_CACHE=str(work / "frozen"))
    after = ROOT / "src"
    data = photos(opts.data, work / "photos", opts.train, opts.val)
    photo = next((data / "val" / "tench").iterdir())
    from vggnet import build

    torch.save(build("vgg16").state_dict(), work / "vgg16.pth")  # torchvision's layout and names, random values
    subprocess.call(
        [sys.executable, "-m", "vggnet", "info"], env={**env, "PYTHONPATH": str(after)}, stdout=subprocess.DEVNULL
    )  # builds the compiled kernels once, untimed (about a minute, once per machine)
    load = [os.getloadavg()[0]]
    w, run, e = str(work / "vgg16.safetensors"), str(work / "run"), str(opts.epochs)
    recipe = ["train", str(data), "--init-from", w, "--freeze", "conv1_1-fc7", "--lr", "0.01"]
    rows = []
    if opts.before_src:
        b = opts.before_src
        step("convert (before's code, untimed)", ["convert", str(work / "vgg16.pth"), w], b, env, log)
        rows.append(
            step("probe fc7", ["probe", str(data), "--weights", w, "--layer", "fc7"], b, env, log) | {"code": "before"}
        )
        one = step(
            "fine-tune, 1 epoch", [*recipe, "--epochs", "1", "--batch", "32", "--out", run + "-before"], b, env, log
        )
        rows.append(one | {"code": "before", "per_epoch": True})
        load.append(os.getloadavg()[0])
        (work / "vgg16.safetensors").unlink()
    rows.append(step("convert", ["convert", str(work / "vgg16.pth"), w], after, env, log) | {"code": "after"})
    rows.append(step("predict", ["predict", str(photo), "--weights", w], after, env, log) | {"code": "after"})
    rows.append(
        step("predict --fast", ["predict", str(photo), "--weights", w, "--fast"], after, env, log) | {"code": "after"}
    )
    for label in ("probe fc7 --fast (features computed)", "probe fc7 --fast (features cached)"):
        args = ["probe", str(data), "--weights", w, "--layer", "fc7", "--fast"]
        rows.append(step(label, args, after, env, log) | {"code": "after"})
    rows.append(
        step("fine-tune as documented, 1 epoch", [*recipe, "--epochs", "1", "--out", run + "-paper"], after, env, log)
        | {"code": "after", "per_epoch": True}
    )
    for i, label in enumerate(("outputs computed", "outputs cached")):
        args = [*recipe, "--epochs", e, "--augment", "center", "--out", f"{run}-{i}"]
        rows.append(step(f"fine-tune --augment center ({label})", args, after, env, log) | {"code": "after"})
    weights = f"{run}-0/model.safetensors"
    evaluate = ["evaluate", weights, "--data", str(data)]
    rows.append(
        step("evaluate --method center --fast", [*evaluate, "--method", "center", "--fast"], after, env, log)
        | {"code": "after"}
    )
    rows.append(step("evaluate (dense, the default)", evaluate, after, env, log) | {"code": "after"})
    rows.append(
        step("view", ["view", str(photo), "--weights", weights, "--out", str(work / "view.html")], after, env, log)
        | {"code": "after"}
    )
    rows.append(step("export", ["export", weights, str(work / "model.onnx")], after, env, log) | {"code": "after"})
    load.append(os.getloadavg()[0])
    for row in rows:
        if row.get("per_epoch"):
            row["estimated_seconds"] = round(float(row["seconds"]) * opts.epochs, 1)
    info = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags(), "isa": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "load_average_1min": load,
    }  # fmt: skip
    data_line = f"{2 * opts.train} training and {2 * opts.val} validation photos (Imagenette: {', '.join(CLASSES)})"
    result = {"machine": info, "data": data_line, "epochs": opts.epochs, "rows": rows, "log": str(log)}
    publish("finetune_first_hour", result, markdown(result))
    return 0


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# A first hour with pretrained VGG16 on a CPU",
        "",
        f"Generated by `benchmarks/finetune_first_hour.py`. {m['cpu']}, {m['cores']} cores "
        f"({', '.join(m['flags'])}; torch dispatches {m['isa']}), torch {m['torch']}, {m['torch_threads']} threads. "
        f"1-minute load average during the run: {', '.join(f'{x:.1f}' for x in m['load_average_1min'])} "
        "(a shared machine: other jobs ran beside it, so each figure is one run's wall time, not a best case).",
        "",
        f"Data: {r['data']}. Weights: a full-size VGG16 (138 M parameters) built locally with random values and "
        "saved in torchvision's layout: the timings depend on the shapes, not the values; accuracies mean nothing.",
        "Each step is one `python -m vggnet` process: start-up and loading the 528 MB of weights included.",
        "The compiled CPU kernels that `--fast` uses were built before the timings (once per machine, about a minute).",
        "",
        f"| step | code | wall time (s) | for {r['epochs']} epochs (s) | command |",
        "|---|---|---:|---:|---|",
    ]
    for row in r["rows"]:
        est = f"{row['estimated_seconds']:.0f} (1 epoch x {r['epochs']})" if "estimated_seconds" in row else ""
        lines.append(f"| {row['step']} | {row['code']} | {row['seconds']:.1f} | {est} | `{row['command']}` |")
    lines += [
        "",
        '"before": the code before issue 36 (head-only fine-tuning ran the whole network in training mode each '
        'step and stopped on --batch 256 for this folder, so it ran with --batch 32). "after": this checkout.',
        "Paths in the commands are the benchmark's temporary folder.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
