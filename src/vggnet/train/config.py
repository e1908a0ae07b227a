"""Training options from files: a JSON or TOML table of TrainConfig fields, or a run folder's config.json."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..configs import TrainConfig
from ..io import report
from ..runs import CONFIG
from .distributed import Dist


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Fields of a TrainConfig from a JSON or TOML file; unknown keys are an error, old names are accepted."""
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
    for old, new in TrainConfig.renamed_fields.items():  # run folders written before a field was renamed
        if old in raw and new not in raw:
            raw[new] = raw.pop(old)
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


def fit_batch(cfg: TrainConfig, images: int, env: Dist, least_steps: int = 4) -> TrainConfig:
    """`cfg`, or with --batch halved when the training set holds less than one step of it (said in one line).

    Halved until an epoch holds `least_steps` steps, while it still splits into --accum x processes; a
    set smaller than even that is a one-line error naming --batch. A resumed run keeps its recorded batch.
    """

    def steps(batch: int) -> int:
        return images // env.world // (batch // (cfg.accum * env.world) * cfg.accum)

    if cfg.resume or steps(cfg.batch) > 0:
        return cfg
    batch, unit = cfg.batch, cfg.accum * env.world
    while steps(batch) < least_steps and batch // 2 >= unit and (batch // 2) % unit == 0:
        batch //= 2
    if steps(batch) == 0:
        raise ValueError(
            f"{cfg.data}: {images} training images are fewer than one step of --batch {cfg.batch}; "
            f"add images or pass a smaller --batch"
        )
    if env.main:
        report(
            f"{cfg.data}: {images} training images are fewer than --batch {cfg.batch}: "
            f"training with --batch {batch} ({steps(batch)} steps per epoch); pass --batch N to choose"
        )
    return dataclasses.replace(cfg, batch=batch)
