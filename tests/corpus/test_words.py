"""Word segmentation for scripts without spaces (assets/corpus/words.py) and the per-language table
(assets/corpus/languages.py). The new modules are imported inside the tests, so the file collects on
a checkout without them."""

from __future__ import annotations

import numpy as np


def _bounds(text):
    from crawl2serve.assets.corpus.text_stats import TextStats

    s = TextStats(text)
    starts, ends = s._word_bounds
    return [text[a:b] for a, b in zip(starts.tolist(), ends.tolist())]


def test_chinese_japanese_thai_are_split_into_words():
    assert _bounds("我们的系统是自由软件。") == ["我们", "的", "系统", "是", "自由", "软件"]
    assert _bounds("Debianシステムは、フリーソフトウェアです。") == [
        "Debian",
        "システム",
        "は",
        "フリー",
        "ソフトウェア",
        "です",
    ]
    assert _bounds("ภาษาไทยเป็นภาษาที่ใช้ในประเทศไทย") == ["ภาษา", "ไทย", "เป็น", "ภาษา", "ที่", "ใช้", "ใน", "ประเทศไทย"]


def test_space_separated_text_is_measured_as_before():
    text = "The quick brown fox can't jump over the_lazy dog 3.14 times, e.g. twice."
    import re

    assert _bounds(text) == re.findall(r"\w+", text)


def test_offsets_survive_astral_characters():
    from crawl2serve.assets.corpus.words import icu_boundaries

    text = "𠀀字 系统是 😀 自由软件"
    b = icu_boundaries(text).tolist()
    assert b[0] == 0 and b[-1] == len(text)
    assert all(0 <= x <= len(text) for x in b)
    assert 3 in b and 5 in b and 4 not in b  # |系统|是: Python offsets, not UTF-16 ones


def test_combining_marks_stay_inside_words():
    # Devanagari vowel signs and Thai vowel marks are combining marks (Mn/Mc), not word breaks
    assert _bounds("हिन्दी में है") == ["हिन्दी", "में", "है"]


def test_line_word_count_counts_segmented_words():
    from crawl2serve.assets.corpus.words import line_word_count

    assert line_word_count("我们的系统是自由软件。") == 6
    assert line_word_count("two words") == 2
    assert line_word_count("我们的系统 是 free", at_least=3) == 3


def test_korean_stop_words_match_at_the_end_of_eojeol():
    from crawl2serve.assets.corpus.words import count_suffix_stop_words

    words = ["시스템은", "데비안의", "패키지를", "설치합니다", "컴퓨터"]
    stops = frozenset({"은", "의", "를", "에서"})
    assert count_suffix_stop_words(words, stops) == 3
    assert count_suffix_stop_words(words, stops, distinct=True) == 3


def test_table_covers_the_twenty_largest_fineweb2_languages():
    from crawl2serve.assets.corpus.language_table import FINEWEB2_COMMIT, FINEWEB2_CONFIGS
    from crawl2serve.assets.corpus.languages import LANGUAGES, rules_for

    assert len(FINEWEB2_COMMIT) == 40
    ranks = sorted(cfg["rank"] for cfg in FINEWEB2_CONFIGS.values())
    assert ranks[:20] == list(range(1, 21))
    for code in (
        "ru",
        "zh",
        "zh-Hant",
        "de",
        "es",
        "ja",
        "fr",
        "it",
        "pt",
        "pl",
        "nl",
        "id",
        "tr",
        "cs",
        "ar",
        "vi",
        "ko",
        "sv",
        "fa",
        "ro",
        "uk",
        "th",
    ):
        assert code in LANGUAGES, code
    assert rules_for("en") is None and rules_for("unknown") is None and rules_for("mixed") is None
    assert rules_for("pt-BR").subset == "por_Latn"
    fr = rules_for("fr")
    assert "de" in fr.stop_words and "l'" in fr.stop_words  # FineWeb-2's list, unchanged


def test_profile_for_language_replaces_english_defaults_and_keeps_profile_choices():
    from crawl2serve.assets.corpus.languages import profile_for_language, rules_for
    from crawl2serve.assets.corpus.thresholds import PROFILES

    published, documentation = PROFILES["published"], PROFILES["documentation"]
    assert profile_for_language(published, "en") is published
    assert profile_for_language(published, "unknown") is published
    de = profile_for_language(published, "de")
    rules = rules_for("de")
    assert de.gopher_quality.stop_words == rules.stop_words
    assert de.gopher_quality.max_avg_word_length == rules.threshold("max_avg_word_length") == 15
    assert de.fineweb_quality.new_line_ratio == rules.threshold("new_line_ratio")
    assert de.gopher_repetition.dup_n_grams == rules.threshold("dup_n_grams")
    doc_de = profile_for_language(documentation, "de")
    # the documentation profile's own relaxations for code-heavy pages stay
    assert doc_de.fineweb_quality.new_line_ratio == documentation.fineweb_quality.new_line_ratio
    assert doc_de.gopher_quality.max_non_alpha_words_ratio == documentation.gopher_quality.max_non_alpha_words_ratio
    assert doc_de.gopher_quality.stop_words == rules.stop_words
    zh = profile_for_language(published, "zh")
    assert "。" in zh.c4_quality.end_punctuation
    th = profile_for_language(published, "th")
    assert th.c4_quality.filter_no_terminal_punct is False
    assert profile_for_language(published, "ko").gopher_quality.stop_word_match == "suffix"


def test_stop_words_are_counted_per_language():
    from crawl2serve.assets.corpus.filters import GopherQuality
    from crawl2serve.assets.corpus.languages import profile_for_language
    from crawl2serve.assets.corpus.text_stats import TextStats
    from crawl2serve.assets.corpus.thresholds import PROFILES

    fr = "Le système de paquets est la base de la distribution et il gère l'installation des logiciels."
    english = PROFILES["published"].gopher_quality
    french = profile_for_language(PROFILES["published"], "fr").gopher_quality
    stats = TextStats(fr)
    assert stats.n_stop_words_of(english.stop_words) == 0
    assert stats.n_stop_words_of(french.stop_words) >= 5  # le de la de la et il l des ...
    zh = TextStats("我们的系统是自由软件，在全世界有很多人使用的。")
    chinese = profile_for_language(PROFILES["published"], "zh").gopher_quality
    assert zh.n_stop_words_of(chinese.stop_words) >= 3  # 的 是 在 的
    assert isinstance(GopherQuality().stop_words, tuple)
    assert np.array_equal(np.sort(stats.word_hashes), np.sort(TextStats(fr).word_hashes))
