"""Strings for people, one JSON file per language (`en.json`, `zh.json`): a new language is one new file.

Each file holds the same keys in sections ("view" for the viewer page, "explain" for the report), plus
"terms", the glossary both use. Templates name their values in braces, `{params}`, filled by `fill` here
and by the page's script: numbers arrive formatted, so every language shows the same digits.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

DEFAULT = "en"
PLACEHOLDER = re.compile(r"\{([a-z_0-9]+)\}")


def languages() -> list[str]:
    """The languages with a strings file, default first."""
    found = sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".json"))
    return sorted(found, key=lambda lang: lang != DEFAULT)


def check_lang(lang: str) -> str:
    """`lang` if a strings file exists for it; else a one-line error naming the accepted ones."""
    if lang not in languages():
        raise ValueError(f"--lang {lang!r}: accepted {', '.join(languages())}")
    return lang


@cache
def _load(lang: str) -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(f"{check_lang(lang)}.json").read_text(encoding="utf-8"))


def strings(lang: str, section: str) -> dict[str, Any]:
    """One section ("view", "explain", "terms") of a language's strings."""
    return _load(lang)[section]


def fill(template: str, **values: Any) -> str:
    """`template` with each {name} replaced by str(values[name]); a missing value is a KeyError naming it."""
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


class Strings:
    """A section's strings with `s(key, **values)` filling in the values: `s("summary", layers=16)`."""

    def __init__(self, lang: str, section: str) -> None:
        self.lang = check_lang(lang)
        self.table = strings(lang, section)

    def __call__(self, key: str, **values: Any) -> str:
        return fill(self.table[key], **values)
