"""Multilingual cleaning on real translated documentation: the keep rate of each language within 15
points of English's, on pages that are translations of kept English pages.

The fixture (``fixtures/multilingual/``, written by ``bench/bench_multilingual.py --write-fixture``; its
README names the sources) holds translated pages of the Debian manuals and GNOME's user help in 27
languages, with their English originals, as our extractor reads them. For each profile, the pairs
whose English original the profile keeps are judged: English's keep rate on them is 100%, so each
language must keep at least 85% of its translations (``KNOWN_GAPS`` lists the one measured exception,
with its reason). With Gopher's English stop words for every
language (main before per-language rules) most languages keep under half of them.

Pages are cleaned as ``clean_documents`` cleans them: with their detected language (CLD2, stored in
the fixture) when ``clean_document`` takes one, without it on a checkout that has no per-language rules.
"""

from __future__ import annotations

import gzip
import inspect
import json
import pathlib

import pytest

from crawl2serve.assets.corpus.cleaning import clean_document
from crawl2serve.assets.corpus.thresholds import PROFILES

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "multilingual" / "translated_pages.json.gz"
DATA = json.loads(gzip.decompress(FIXTURE.read_bytes()).decode("utf-8"))
MAX_GAP = 15.0  # points below English's keep rate
MIN_PAIRS = 8  # a language is judged on at least this many pairs (one page: at most 12.5 points)
# Languages whose gap is known to exceed MAX_GAP, with the reason; the test fails when a language is
# farther than MAX_GAP and not listed, and when a listed one is no longer (keep the list true).
KNOWN_GAPS: dict[str, dict[str, str]] = {
    "published": {},
    "documentation": {
        # Finnish writes ~30% fewer words than English for the same text (median 0.70 on these pairs):
        # short help pages of 52-68 English words have 39-49 Finnish ones, under Gopher's 50-word
        # minimum, which FineWeb-2 keeps for every language (it publishes no per-language minimum).
        "fi": "Gopher's 50-word minimum on short Finnish pages",
    },
}
TAKES_LANGUAGE = "language" in inspect.signature(clean_document).parameters


def _kept(text: str, profile, language: str) -> bool:
    if TAKES_LANGUAGE:
        return clean_document(text, profile, language=language).text is not None
    return clean_document(text, profile).text is not None


def keep_rates(profile_name: str) -> dict[str, tuple[int, int]]:
    """Language -> (translations kept, pairs) over the pairs whose English original is kept."""
    profile = PROFILES[profile_name]
    english_kept = {k: _kept(p["text"], profile, "en") for k, p in DATA["english"].items()}
    rates: dict[str, list[int]] = {}
    for t in DATA["translations"]:
        if english_kept[t["key"]]:
            r = rates.setdefault(t["lang"], [0, 0])
            r[0] += _kept(t["text"], profile, t["detected"])
            r[1] += 1
    return {lang: (k, n) for lang, (k, n) in rates.items()}


def test_fixture_covers_many_languages_with_english_originals():
    langs = {t["lang"] for t in DATA["translations"]}
    assert len(langs) >= 20
    assert {"de", "fr", "es", "pt", "ru", "ja", "zh", "ko", "pl", "uk"} <= langs
    assert all(t["key"] in DATA["english"] for t in DATA["translations"])


@pytest.mark.parametrize("profile_name", ["published", "documentation", "fineweb"])
def test_each_language_keeps_translations_of_kept_english_pages(profile_name):
    if profile_name not in PROFILES:
        pytest.skip(f"no {profile_name} profile in this checkout")
    rates = keep_rates(profile_name)
    judged = {lang: (k, n) for lang, (k, n) in rates.items() if n >= MIN_PAIRS}
    assert len(judged) >= 20, rates
    gaps = {lang: round(100 - 100 * k / n, 1) for lang, (k, n) in judged.items()}
    too_far = {lang: f"{k}/{n} kept, gap {gaps[lang]}" for lang, (k, n) in judged.items() if gaps[lang] > MAX_GAP}
    assert set(too_far) == set(KNOWN_GAPS.get(profile_name, {})), too_far
