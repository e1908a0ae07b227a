"""Strings for people: every language file holds the same keys, the same placeholders, and is translated."""

import json
from importlib import resources

import pytest

from vggnet.lang import DEFAULT, Strings, check_lang, fill, languages, strings

# Keys whose text may read the same in another language: numbers and units, Table 1's notation, layer names
SAME_IN_EVERY_LANGUAGE = {
    "view": {"title", "rf_value", "label_dropout"},
    "explain": {"col_n", "col_c", "col_macs", "col_gmacs", "col_gflops"},
}


def placeholders(text: str) -> set[str]:
    import re

    return set(re.findall(r"\{([a-z_0-9]+)\}", text))


def test_languages_are_the_files_present_default_first():
    files = sorted(p.name for p in resources.files("vggnet.lang").iterdir() if p.name.endswith(".json"))
    assert [f"{lang}.json" for lang in sorted(languages())] == files
    assert languages()[0] == DEFAULT == "en" and "zh" in languages()


@pytest.mark.parametrize("lang", [lang for lang in languages() if lang != DEFAULT])
def test_every_language_has_the_same_keys_and_placeholders_and_is_translated(lang):
    en = json.loads(resources.files("vggnet.lang").joinpath("en.json").read_text(encoding="utf-8"))
    other = json.loads(resources.files("vggnet.lang").joinpath(f"{lang}.json").read_text(encoding="utf-8"))
    assert other.keys() == en.keys()
    for section in en:
        assert other[section].keys() == en[section].keys(), section
        for key, text in en[section].items():
            assert type(other[section][key]) is type(text), (section, key)
            if not isinstance(text, str):  # a list of font names
                continue
            assert placeholders(other[section][key]) == placeholders(text), (section, key)
            if key not in SAME_IN_EVERY_LANGUAGE.get(section, set()):
                assert other[section][key] != text, f"{section}.{key} is not translated"


def test_fill_and_strings():
    assert fill("{n} stacked 3×3, {n} again", n=3) == "3 stacked 3×3, 3 again"
    with pytest.raises(KeyError, match="rf"):
        fill("{rf} px")
    s = Strings("zh", "view")
    assert s("k_head_stacked", n=2) == "2 个堆叠的 3×3" and strings("en", "view")["row_rf"] == "receptive field"
    with pytest.raises(ValueError, match=r"--lang 'fr': accepted en, zh"):
        check_lang("fr")
