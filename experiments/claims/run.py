"""Put three of VGG's best-known claims to the test on Imagenette: small kernels, depth, and dropping the FC layers.

    PYTHONPATH=src python experiments/claims/run.py                  # train and test what is missing, then RESULTS.md
    PYTHONPATH=src python experiments/claims/run.py --only B-s0      # some runs
    PYTHONPATH=src python experiments/claims/run.py --report-only    # RESULTS.md and the figure from metrics/ and probs/

Every arm is a Table 1 configuration (or section 4.1's shallow variant) with batch norm, trained from scratch
with the same recipe and the same number of epochs, once per seed; E-initA alone starts from the same seed's A
(A-again, trained just before it) as section 3.1 did. The plateau rule and the choice of the best
epoch look at a fixed tenth of the training photos held out from training, never at the test photos; every net
is then tested on all 3,925 validation photos. Runs go to runs/claims/<run> (git-ignored); metrics/<run>.json
and probs/<run>.pt (the test posteriors) are committed, never checkpoints or photos. Interrupted runs resume.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _imagenette() -> Any:
    """experiments/imagenette/run.py, whose decoded cache of the photos this experiment shares."""
    spec = importlib.util.spec_from_file_location("imagenette_run", REPO / "experiments" / "imagenette" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


imagenette = _imagenette()
DATA = imagenette.DATA
CACHE = REPO / "runs" / "imagenette" / "cache"  # the photos decoded once at 146 px, shared with that experiment


@dataclass(frozen=True)
class Arm:
    """One network of the comparison: a configuration, a head, and where its first layers come from."""

    arch: str
    head: str = "fc"
    init_from: str = ""  # an arm whose run of the same seed gives conv1_1-conv3_2 and FC6-FC8 (section 3.1)


# The recipe every arm shares (section 3.1 scaled as in experiments/imagenette, with batch norm).
RECIPE: dict[str, Any] = {
    "width": 1 / 8,  # conv 8-64 channels, FC 512
    "crop": 64,  # the paper's 224 times 2/7
    "scale": [73],  # fixed S = 256 x 2/7
    "batch": 64,
    "lr": 1e-2,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "dropout": 0.5,
    "epochs": 16,
    "patience": 1,  # the plateau rule over a few epochs: one epoch without progress on the held-out photos
    "max_decreases": 2,
    "init": "kaiming",  # batch norm trains every depth from scratch: no net-A initialisation to confound depth
    "color_shift": 0.1,
    "workers": 1,
    "threads": 1,  # two runs side by side, one thread each: no OpenMP barrier waits on a shared machine
    "quiet": True,
}
HOLDOUT = imagenette.HOLDOUT  # the tenth of each class's training photos held out for the plateau rule and best epoch
TEST_Q = 73  # dense evaluation at Q = S, with flips, on all 3,925 validation photos

ARMS: dict[str, Arm] = {
    "A": Arm("A_bn"),
    "B": Arm("B_bn"),
    "B-5x5": Arm("B-5x5_bn"),
    "D": Arm("D_bn"),
    "D-gap": Arm("D_bn", head="gap"),
    "E": Arm("E_bn"),
    "D-7x7": Arm("D-7x7_bn"),
    "A-again": Arm("A_bn"),  # A trained again: the first A runs kept no weights for E-initA to start from
    "E-initA": Arm("E_bn", init_from="A-again"),
}
SEEDS = (0, 1, 2)
# Runs in priority order: one seed of every arm the three claims need first, then the other seeds, then extras.
CORE = ("B", "B-5x5", "A", "D", "D-gap")
EXTRA = ("E", "D-7x7")
RUNS = [f"{arm}-s{seed}" for seed in SEEDS for arm in CORE] + [f"{arm}-s{seed}" for seed in SEEDS for arm in EXTRA]
# Added 2026-12-07 (DESIGN.md): two more seeds where one bad seed left a comparison undecided.
MORE_SEEDS, MORE_ARMS = (3, 4), ("A", "B", "B-5x5", "D", "D-7x7")
RUNS += [f"{arm}-s{seed}" for seed in MORE_SEEDS for arm in MORE_ARMS]
# Added 2026-12-07 (DESIGN.md): E as the paper trained it, from the same seed's A, each A just before its E.
RUNS += [f"{arm}-s{seed}" for seed in SEEDS for arm in ("A-again", "E-initA")]


def arm_of(run: str) -> tuple[str, int]:
    """("B-5x5", 2) from "B-5x5-s2"."""
    arm, _, seed = run.rpartition("-s")
    return arm, int(seed)


def source_of(run: str) -> str | None:
    """The run whose weights start this one ("A-again-s1" for "E-initA-s1"); None for a run from scratch."""
    arm, seed = arm_of(run)
    return f"{ARMS[arm].init_from}-s{seed}" if ARMS[arm].init_from else None


# -- data: the decoded photos, a held-out tenth of the training split (experiments/imagenette/run.py) ----------

Split, holdout_split = imagenette.Split, imagenette.holdout_split


# -- one run: train, test, keep metrics and posteriors ----------------------------------------------------


def config(run: str, root: Path, stats: Path) -> Any:
    """The TrainConfig of one run (E-initA: `--init-from` its source's run folder, the rest of E's recipe)."""
    from vggnet.configs import TrainConfig

    arm, seed = arm_of(run)
    source = source_of(run)
    return TrainConfig(**RECIPE, data="imagenette", stats=str(stats), arch=ARMS[arm].arch, head=ARMS[arm].head,
                       seed=seed, out=str(root / run), init_from=str(root / source) if source else "")  # fmt: skip


def train_run(run: str, root: Path, stats: Path, datasets: tuple[Split, Split]) -> float:
    """Train (or resume) one run on (training part, held-out part); returns the wall seconds spent now."""
    import dataclasses

    from vggnet.runs import CHECKPOINT
    from vggnet.train import train

    cfg = config(run, root, stats)
    if (Path(cfg.out) / CHECKPOINT).is_file():
        cfg = dataclasses.replace(cfg, resume=cfg.out)
    elif cfg.init_from and not finished(Path(cfg.init_from)):
        raise FileNotFoundError(
            f"{cfg.init_from}: {run} starts from this run, which has not finished here; train it first "
            f"(run.py --only {Path(cfg.init_from).name},{run}; if its metrics exist from another machine, "
            f"delete metrics/{Path(cfg.init_from).name}.json so that it trains again)"
        )
    start = time.perf_counter()
    train(cfg, datasets=datasets)
    return time.perf_counter() - start


def finished(out: Path) -> bool:
    """Whether a run's checkpoint says it has finished (its last epoch, or the plateau rule's stop)."""
    from vggnet.runs import CHECKPOINT, CONFIG
    from vggnet.train import load_checkpoint

    if not (out / CHECKPOINT).is_file():
        return False
    position = load_checkpoint(out / CHECKPOINT)["position"]
    return bool(position["stopped"]) or position["epoch"] >= json.loads((out / CONFIG).read_text())["epochs"]


def test_run(out: Path, val: torch.utils.data.Dataset, probs_dir: Path) -> dict[str, Any]:
    """Dense evaluation at Q = S with flips on every validation photo; posteriors kept in probs_dir."""
    from vggnet.configs import EvalConfig
    from vggnet.evaluate import evaluate

    r = evaluate([out], val, EvalConfig(method="dense", scales=str(TEST_Q), flip=True, batch_size=64), progress=False)
    probs_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"labels": r.labels, "dense": r.probs}, probs_dir / f"{out.name}.pt")
    return {"top1": round(r.top1_error, 3), "top5": round(r.top5_error, 3), "images": r.images, "q": TEST_Q}


def write_metrics(run: str, out: Path, seconds: float, test: dict[str, Any], metrics_dir: Path) -> Path:
    """metrics/<run>.json: arm, recipe, per-epoch history, wall time, the test result, size and cost."""
    from vggnet.analysis import layer_table, totals
    from vggnet.model import build
    from vggnet.runs import read_history

    arm, seed = arm_of(run)
    cost = {}
    for label, width, side in (("trained", RECIPE["width"], RECIPE["crop"]), ("full", 1.0, 224)):
        with torch.device("meta"):
            model = build(ARMS[arm].arch, head=ARMS[arm].head, width=width, num_classes=10, input_size=side)
        t = totals(layer_table(model, side))
        cost[label] = {"width": width, "input": side, "params": t["params"], "macs": t["macs"]}
    record = {
        "name": run,
        "arm": arm,
        "seed": seed,
        "net": asdict(ARMS[arm]),
        **({"start": start_record(out)} if source_of(run) else {}),
        "recipe": RECIPE,
        "train_seconds": round(seconds, 1),
        "history": read_history(out),
        "test": test,
        "cost": cost,
    }
    metrics_dir.mkdir(parents=True, exist_ok=True)
    path = metrics_dir / f"{run}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def start_record(out: Path) -> dict[str, Any]:
    """Where a run's first weights came from (its init.json): the source run, its file's SHA-256, the new layers."""
    from vggnet.runs import INIT

    init = json.loads((out / INIT).read_text())
    return {"from": Path(init["path"]).parent.name, "sha256": init["sha256"], "new_layers": init["new_layers"]}


def with_sources(names: list[str]) -> list[str]:
    """`names` with each run's source run put before it when not asked for (E-initA-s1 needs A-again-s1)."""
    out: list[str] = []
    for name in names:
        source = source_of(name)
        if source and source not in out and source not in names:
            out.append(source)
        out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated runs, e.g. B-s0,B-5x5-s0 (default: every run, in order)")
    p.add_argument("--report-only", action="store_true", help="only regenerate RESULTS.md and the figure")
    p.add_argument("--no-report", action="store_true", help="train and test only")
    p.add_argument("--max-minutes", type=float, default=0, help="start no new run after this many minutes")
    p.add_argument(
        "--data",
        default=imagenette.DEFAULT_DATA,
        help="Imagenette: a folder, or a name fetched once (imagenette: 320 px, imagenette-160); default: the shared copy, else imagenette",
    )
    p.add_argument("--root", default=str(REPO / "runs" / "claims"), help="where the runs go")
    p.add_argument("--out", default=str(HERE), help="where metrics/, probs/, RESULTS.md and the figure go")
    p.add_argument("--cache", default=str(CACHE), help="the decoded photos (built on first use)")
    args = p.parse_args(argv)

    sys.path.insert(0, str(HERE))
    out_dir, root, cache = Path(args.out), Path(args.root), Path(args.cache)
    metrics_dir, probs_dir = out_dir / "metrics", out_dir / "probs"
    import report  # beside this file

    if args.report_only:
        print(report.write_results(metrics_dir, probs_dir, out_dir))
        return 0
    from vggnet.data import dataset_folder

    try:
        data = dataset_folder(args.data)  # a folder, or a name fetched once
    except (OSError, ValueError) as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    if not (data / "train").is_dir():
        print(f"run.py: error: {data}: no Imagenette train/ folder", file=sys.stderr)
        return 2
    names = [n for n in args.only.split(",") if n] or RUNS
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        print(f"run.py: error: unknown run(s) {', '.join(unknown)}; known: {', '.join(RUNS)}", file=sys.stderr)
        return 2
    names = with_sources(names)
    stats = root / "stats.json"
    if not stats.is_file():  # from the training photos that train (the held-out tenth excluded)
        from vggnet.data import compute_stats

        root.mkdir(parents=True, exist_ok=True)
        train_part, _ = holdout_split(imagenette.cached(data, "train", cache))
        compute_stats(train_part, 10000, 0).save(stats)
    start = time.perf_counter()
    for name in names:
        out = root / name
        if (metrics_dir / f"{name}.json").is_file():
            print(f"{name}: metrics exist, skipped", flush=True)
            continue
        if args.max_minutes and (time.perf_counter() - start) / 60 > args.max_minutes:
            print(f"{name}: not started (--max-minutes {args.max_minutes} reached)", flush=True)
            continue
        seconds_file = out / "train_seconds.json"
        if not finished(out):
            print(f"{name}: training", flush=True)
            before = json.loads(seconds_file.read_text()) if seconds_file.is_file() else 0.0
            seconds_file.parent.mkdir(parents=True, exist_ok=True)
            parts = holdout_split(imagenette.cached(data, "train", cache))
            try:
                spent = train_run(name, root, stats, parts)
            except FileNotFoundError as e:
                print(f"run.py: error: {e}", file=sys.stderr)
                return 1
            seconds_file.write_text(json.dumps(before + spent))
        print(f"{name}: testing", flush=True)
        test = test_run(out, imagenette.cached(data, "val", cache), probs_dir)
        seconds = json.loads(seconds_file.read_text()) if seconds_file.is_file() else 0.0
        print(f"{name}: {write_metrics(name, out, seconds, test, metrics_dir)}", flush=True)
    if not args.no_report:
        print(report.write_results(metrics_dir, probs_dir, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
