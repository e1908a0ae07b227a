"""Training options from files: a JSON or TOML table of TrainConfig fields, or a run folder's config.json."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..configs import TrainConfig
from ..runs import CONFIG


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
