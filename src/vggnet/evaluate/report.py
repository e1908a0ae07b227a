"""Evaluation reports: a Markdown table shaped like the paper's Tables 3-6, JSON, a confusion matrix."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..configs import EvalConfig
from ..io import optional, write_text
from ..metrics import error_cells, error_columns
from ..tables import markdown_table, per_class_table
from .loop import Result, evaluate
from .protocol import method_text

MAX_CONFUSION_CLASSES = 100  # a confusion matrix PNG beyond this is unreadable


def _scale_text(s: tuple[int, int]) -> str:
    return str(s[0]) if s[0] == s[1] else f"[{s[0]}, {s[1]}]"


def _joined(values: list[str]) -> str:
    return values[0] if len(set(values)) == 1 else " / ".join(values)


def method_label(result: Result) -> str:
    """The evaluation method in words: "dense, flip", "multi-crop 5x5, flip (50/scale)", ..."""
    return method_text(result.method, result.grid, result.flip)


def errors_of(result: Result) -> dict[int, float]:
    """{k: top-k error in %} of a result."""
    return {1: result.top1_error, 5: result.top5_error}


def results_table(results: Sequence[Result]) -> str:
    """One row per result, in the shape of the paper's Tables 3-6 (errors in %; top-5 only with more than 5 classes)."""
    columns = error_columns(len(r.class_names) for r in results)
    header = ["ConvNet", "train S", "test Q", "method", "images", *(f"top-{k} err (%)" for k in columns)]
    rows = [
        [
            " + ".join(r.configs),
            _joined([_scale_text(s) for s in r.train_scales]),
            _joined([",".join(map(str, q)) for q in r.scales]),
            method_label(r),
            r.images,
            *error_cells(errors_of(r), len(r.class_names), columns),
        ]
        for r in results
    ]
    return markdown_table(header, rows)


def save_result(result: Result, out_dir: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Write NAME.json, NAME.md and (up to 100 classes, with vggnet[plots]) NAME_confusion.png; NAME: `result.tag`."""
    out, name = Path(out_dir), name or result.tag
    written = [write_text(out / f"{name}.json", json.dumps(result.to_dict(), indent=1) + "\n")]
    text = (
        f"# {' + '.join(result.configs)} on {result.data} ({result.split})\n\n{results_table([result])}\n\n"
        f"{result.images} images, {len(result.skipped)} unreadable skipped, {result.seconds:.1f} s.\n\n"
        + per_class_table(result.class_names, result.per_class_accuracy)
        + "\n"
    )
    written.append(write_text(out / f"{name}.md", text))
    if len(result.class_names) <= MAX_CONFUSION_CLASSES and optional(
        "matplotlib", "plots", "confusion matrix PNG not drawn"
    ):
        from ..plots import confusion_figure

        written.append(out / f"{name}_confusion.png")
        confusion_figure(result, written[-1], method_label(result))
    return written


def scale_report(
    weights_or_runs: Sequence[str | os.PathLike[str]],
    data_spec: str = "digits",
    cfg: EvalConfig | None = None,
    progress: bool = True,
) -> tuple[list[Result], str]:
    """Dense error at a single scale beside multi-scale (Table 3 vs Table 4); returns results and a table."""
    base = dataclasses.replace(cfg or EvalConfig(), method="dense")
    results = [
        evaluate(weights_or_runs, data_spec, dataclasses.replace(base, scales=s), progress) for s in ("single", "multi")
    ]
    return results, results_table(results)
