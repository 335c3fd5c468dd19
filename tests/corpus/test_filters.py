"""Unit tests for the corpus rules: text_stats, filters, thresholds and cleaning.

Threshold tests build documents that sit exactly on a threshold (kept: every bound is inclusive)
and one step past it (dropped, with the rule's reason).
"""

from __future__ import annotations

import dataclasses
import random
import re
import unicodedata
from collections import Counter

import pytest

from crawl2serve.assets.corpus.cleaning import CleanResult, clean_document
from crawl2serve.assets.corpus.filters import (
    C4Quality,
    FineWebQuality,
    GopherQuality,
    GopherRepetition,
    LengthBounds,
    normalize_text,
    quality_score,
)
from crawl2serve.assets.corpus.text_stats import STOP_WORDS, TextStats
from crawl2serve.assets.corpus.thresholds import (
    DEFAULT_ORDER,
    DOCUMENTATION,
    FINEWEB,
    PROFILES,
    PUBLISHED,
    Profile,
    profile_with_overrides,
)

# ----- helpers -------------------------------------------------------------------------------------

PROSE = """The river begins high in the mountains, where melting snow gathers into small streams.
Those streams join together and carry cold water down through pine forests and narrow valleys.
Farmers in the lower plains have relied on that water for centuries to grow wheat and barley.

During the spring the current becomes strong enough to move heavy stones along its bed.
Engineers built a series of dams to control floods and to produce electricity for nearby towns.
Each dam changed the habitat of fish, so biologists now monitor salmon populations every year.

Visitors often walk the old towpath that follows the water from the harbor to the first lock.
Along the way they pass mills, bridges and warehouses that once served a busy trading route.
Today the restored buildings hold museums, cafes and workshops where local artists sell their work."""

BOILERPLATE = "\n".join(["Home | About | Contact | Login", "Home | About | Contact | Login", "Menu", "Search"] * 6)


def filler(n: int, length: int = 5, start: int = 0) -> list[str]:
    """``n`` distinct lowercase words of ``length`` letters, none of them a stop word."""
    words = []
    i = start
    while len(words) < n:
        w = "".join(chr(97 + (i // 26**k) % 26) for k in range(length))
        i += 1
        if w not in STOP_WORDS:
            words.append(w)
    return words


def stats(text: str) -> TextStats:
    return TextStats(text)


def permissive_repetition(**kwargs: object) -> GopherRepetition:
    """Every repetition threshold switched off except those given."""
    off = dict(
        dup_line_frac=1.0,
        dup_para_frac=1.0,
        dup_line_char_frac=1.0,
        dup_para_char_frac=1.0,
        top_n_grams=(),
        dup_n_grams=(),
    )
    off.update(kwargs)
    return GopherRepetition(**off)


def permissive_fineweb(**kwargs: object) -> FineWebQuality:
    off = dict(line_punct_thr=0.0, short_line_thr=1.0, char_duplicates_ratio=1.0, new_line_ratio=float("inf"))
    off.update(kwargs)
    return FineWebQuality(**off)


# ----- normalize_text --------------------------------------------------------------------------------


def test_normalize_nfc_composes_characters():
    assert normalize_text("Cafe\u0301 de\u0301ja\u0300") == "Café déjà"
    assert normalize_text("Café") == normalize_text("Cafe\u0301")


def test_normalize_removes_control_chars_and_maps_whitespace():
    assert normalize_text("a\x00b\x07c\x7fd\x9be") == "abcde"
    assert normalize_text("tab\there") == "tab here"
    assert normalize_text("nbsp\xa0em\u2003ideographic\u3000x") == "nbsp em ideographic x"
    assert normalize_text("zero\u200bwidth\ufeff soft\u00adhyphen") == "zerowidth softhyphen"
    assert normalize_text("line\u2028break\u2029para\x85nel") == "line\nbreak\npara\nnel"
    assert normalize_text("vt\x0bff\x0cend") == "vt ff end"
    assert normalize_text("broken \ud800surrogate") == "broken surrogate"


def test_normalize_newlines_spaces_and_blank_lines():
    raw = "  Title   with   spaces  \r\n\r\n\r\n\r\nBody  line   \r\nnext\rline\n\n\n\n\nend   "
    assert normalize_text(raw) == "Title with spaces\n\nBody line\nnext\nline\n\nend"
    # one blank line is kept as a paragraph break; two or more become one
    assert normalize_text("a\n\nb") == "a\n\nb"
    assert normalize_text("a\n\n\nb") == "a\n\nb"
    assert normalize_text("a\n   \n \t \nb") == "a\n\nb"  # whitespace-only lines are blank lines


def test_normalize_collapses_leading_runs_by_default_but_keeps_indentation_on_request():
    code = "def f(x):\n        return  x   +  1    \n\n\n\n\n    pass"
    assert normalize_text(code) == "def f(x):\n return x + 1\n\n pass"
    assert normalize_text(code, keep_indentation=True) == "def f(x):\n        return x + 1\n\n    pass"
    assert normalize_text("\n\n    indented first line\n", keep_indentation=True) == "    indented first line"


def test_normalize_is_idempotent():
    raw = "  A\u00a0\u00a0b \t c\r\n\r\n\r\n  d\u0301  \x01 e\u2028\u2028\u2028f  "
    once = normalize_text(raw)
    assert normalize_text(once) == once
    once_indent = normalize_text(raw, keep_indentation=True)
    assert normalize_text(once_indent, keep_indentation=True) == once_indent


def _normalize_reference(text: str, keep_indentation: bool = False) -> str:
    """The specification, written plainly (character loop and regexes): normalize_text's fast paths
    must give the same result."""
    from crawl2serve.assets.corpus.filters import _SPECIAL

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(_SPECIAL.get(c, "" if 0xD800 <= ord(c) <= 0xDFFF else c) for c in text)
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r"(?<=[^ \n]) {2,}" if keep_indentation else r" {2,}", " ", text)
    text = re.sub(r" +(?=\n|\Z)", "", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") if keep_indentation else text.strip()


def test_normalize_matches_a_plain_reference_implementation():
    pieces = ["a", "b", " ", "  ", "     ", "\n", "\n\n\n", "\t", "\xa0", "\r\n", "\r", "\x00", "\u200b",
              "\u2028", "e\u0301", "\ud800", "\x85", "\x0c", "é", "    indented"]  # fmt: skip
    rng = random.Random(2)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.3:
            text *= 30  # long texts take the many-runs path
        for keep in (False, True):
            assert normalize_text(text, keep_indentation=keep) == _normalize_reference(text, keep), (text, keep)


def test_normalize_empty_and_whitespace_only():
    assert normalize_text("") == ""
    assert normalize_text(" \n\t\u00a0\n ") == ""


# ----- TextStats ---------------------------------------------------------------------------------------


def test_text_stats_basic_counts():
    s = stats("The cat sat. Don't go!\n\n- item one...\n42 = x")
    assert s.n_words == 10  # the cat sat don t go item one 42 x
    assert s.n_tokens == 11  # whitespace tokens include "-" and "="
    assert s.n_alpha_tokens == 8  # "42" and "=" and "-" have no letter
    assert s.n_stop_words == 1  # "the"
    assert s.n_unique_words == 10
    assert s.non_empty_lines == ["The cat sat. Don't go!", "- item one...", "42 = x"]
    assert s.paragraphs == ["The cat sat. Don't go!", "- item one...\n42 = x"]
    assert s.n_bullet_lines == 1 and s.n_ellipsis_lines == 1
    assert s.n_lines_ending_with((".", "!")) == 2 and s.n_lines_ending_with(("go!", "x")) == 2
    assert (s.n_short_lines(6), s.n_short_lines(13), s.n_short_lines(22)) == (1, 2, 3)
    assert s.n_hashes == 0 and s.n_ellipses == 1
    # sentence ends: "sat.", "go!", "one..."; the unterminated line "42 = x" adds one
    assert s.sentence_count == 4
    assert s.mean_word_length == (3 + 3 + 3 + 3 + 1 + 2 + 4 + 3 + 2 + 1) / 10


def test_text_stats_sentences():
    assert stats("").sentence_count == 0
    assert stats("One. Two? Three!").sentence_count == 3
    assert stats('He said "stop." Then left.').sentence_count == 2  # closing quote after the period
    assert stats("Wait... what?!").sentence_count == 2  # runs of terminators count once
    assert stats("pi is 3.14 and os.path is a module").sentence_count == 1  # no ends: one fragment
    assert stats("Heading\nBody text here.").sentence_count == 2


def test_text_stats_words_are_case_insensitive_and_unicode():
    s = stats("Straße STRASSE straße Über über 日本語")
    assert s.n_words == 6
    assert s.n_unique_words == 4  # straße, strasse, über, 日本語


def _naive_words(text: str) -> list[str]:
    return ["".join(c.lower() if len(c.lower()) == 1 else c for c in w) for w in re.findall(r"\w+", text)]


def _naive_top(words: list[str], n: int) -> tuple[int, int]:
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0, 0
    top = max(grams.values())
    return top, max(sum(map(len, g)) for g, c in grams.items() if c == top)


def _naive_dup_chars(words: list[str], n: int) -> int:
    seen, covered = set(), [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            covered[i : i + n] = [True] * n
        seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c)


def test_text_stats_ngram_statistics_match_a_naive_reference():
    vocab = ["the", "of", "Cat", "cat", "dög", "x_1", "42", "a", "be", "naïve", "end.", "why?", "3.14", "—", "#"]
    rng = random.Random(5)
    for _ in range(400):
        text = " ".join(rng.choice(vocab[: rng.randint(2, len(vocab))]) for _ in range(rng.randint(0, 60)))
        s, words = stats(text), _naive_words(text)
        assert s.n_words == len(words)
        assert s.n_unique_words == len(set(words))
        assert s.n_stop_words == sum(w in STOP_WORDS for w in words)
        assert s.n_word_chars == sum(map(len, words))
        for n in range(1, 11):
            count, chars = _naive_top(words, n)
            assert s.top_ngram(n) == (count, chars), (text, n)
            assert s.top_ngram_bound(n) >= count * chars  # the bound the rule uses to skip sorting
            assert s.duplicate_ngram_chars(n) == _naive_dup_chars(words, n), (text, n)


# ----- LengthBounds ----------------------------------------------------------------------------------


def test_length_bounds_edges():
    rule = LengthBounds()
    assert (rule.min_chars, rule.max_chars) == (199, 1_000_000)
    assert rule.check(stats("x" * 199)) is None
    assert rule.check(stats("x" * 198)) == "chars<199"
    small = LengthBounds(min_chars=10, max_chars=20)
    assert small.check(stats("y" * 20)) is None
    assert small.check(stats("y" * 21)) == "chars>20"
    assert small.check(stats("y" * 10)) is None


def test_length_bounds_minimum_is_the_shortest_gopher_passing_text():
    words = ["the", "and"] + filler(48, length=3)
    text = " ".join(words)
    assert len(text) == 199
    assert GopherQuality().check(stats(text)) is None


# ----- GopherQuality --------------------------------------------------------------------------------


def gopher_doc(n_words: int = 50) -> str:
    return " ".join(["the", "of"] + filler(n_words - 2))


def test_gopher_quality_published_defaults():
    g = GopherQuality()
    assert (g.min_doc_words, g.max_doc_words) == (50, 100_000)
    assert (g.min_avg_word_length, g.max_avg_word_length) == (3, 10)
    assert (g.max_symbol_word_ratio, g.max_bullet_lines_ratio, g.max_ellipsis_lines_ratio) == (0.1, 0.9, 0.3)
    assert (g.max_non_alpha_words_ratio, g.min_stop_words) == (0.8, 2)


def test_gopher_min_and_max_words():
    assert GopherQuality().check(stats(gopher_doc(50))) is None
    assert GopherQuality().check(stats(gopher_doc(49))) == "too_few_words"
    capped = GopherQuality(max_doc_words=60)
    assert capped.check(stats(gopher_doc(60))) is None
    assert capped.check(stats(gopher_doc(61))) == "too_many_words"


def test_gopher_mean_word_length_edges():
    at_min = ["the", "and"] + filler(48, length=3)  # 150 chars / 50 words = 3.0
    assert GopherQuality().check(stats(" ".join(at_min))) is None
    below = ["the", "of"] + filler(48, length=3)  # 149 / 50
    assert GopherQuality().check(stats(" ".join(below))) == "mean_word_length<3"
    at_max = ["the", "and"] + filler(46, length=10) + filler(2, length=17)  # 500 / 50 = 10.0
    assert GopherQuality().check(stats(" ".join(at_max))) is None
    above = ["the", "and"] + filler(46, length=10) + filler(1, length=17) + filler(1, length=18)  # 501 / 50
    assert GopherQuality().check(stats(" ".join(above))) == "mean_word_length>10"


def test_gopher_symbol_ratios():
    words = gopher_doc(50).split()
    at = " ".join(f"#{w}" if i < 5 else w for i, w in enumerate(words))  # 5 / 50 = 0.1
    assert GopherQuality().check(stats(at)) is None
    past = " ".join(f"#{w}" if i < 6 else w for i, w in enumerate(words))
    assert GopherQuality().check(stats(past)) == "hash_word_ratio>0.1"
    ell_at = " ".join(f"{w}..." if 2 <= i < 7 else w for i, w in enumerate(words))
    assert GopherQuality().check(stats(ell_at)) is None
    ell_past = " ".join(f"{w}…" if 2 <= i < 8 else w for i, w in enumerate(words))  # "…" counts too
    assert GopherQuality().check(stats(ell_past)) == "ellipsis_word_ratio>0.1"


def lines_doc(n_lines: int, prefix_first: str = "", n_prefixed: int = 0, suffix: str = "", n_suffixed: int = 0) -> str:
    words = filler(n_lines * 6)
    lines = []
    for i in range(n_lines):
        line = " ".join(["the", "of"] + words[i * 6 : i * 6 + 6])
        if i < n_prefixed:
            line = prefix_first + line
        if i < n_suffixed:
            line = line + suffix
        lines.append(line)
    return "\n".join(lines)


def test_gopher_bullet_lines_edge():
    g = GopherQuality()
    assert g.check(stats(lines_doc(10, "- ", 9))) is None  # 9 / 10 = 0.9
    assert g.check(stats(lines_doc(10, "• ", 10))) == "bullet_lines_ratio>0.9"


def test_gopher_ellipsis_lines_edge():
    g = GopherQuality(max_symbol_word_ratio=1.0)  # isolate the line rule
    assert g.check(stats(lines_doc(10, suffix="...", n_suffixed=3))) is None  # 3 / 10
    assert g.check(stats(lines_doc(10, suffix="…", n_suffixed=4))) == "ellipsis_lines_ratio>0.3"


def test_gopher_alpha_word_ratio_edge():
    words = ["the", "of"] + filler(38)
    at = " ".join(words + [str(1000 + i) for i in range(10)])  # 40 of 50 tokens have a letter
    assert GopherQuality().check(stats(at)) is None
    past = " ".join(words[:-1] + [str(1000 + i) for i in range(11)])  # 39 / 50
    assert GopherQuality().check(stats(past)) == "alpha_word_ratio<0.8"
    # symbol-only tokens count as words without letters
    operators = ["=", "->", "(", ")", "{", "}", "+", "-", "*", "/", "%", "==", "!="]
    symbols = " ".join(["the", "of"] + filler(48) + operators)  # 50 / 63 tokens have a letter
    assert GopherQuality().check(stats(symbols)) == "alpha_word_ratio<0.8"
    assert GopherQuality().check(stats(" ".join(["the", "of"] + filler(48) + operators[:12]))) is None  # 50 / 62


def test_gopher_stop_words_edge():
    base = filler(48)
    assert GopherQuality().check(stats(" ".join(["The", "WITH"] + base))) is None  # case-insensitive
    assert GopherQuality().check(stats(" ".join(["the", "zzzz"] + base))) == "too_few_stop_words"
    assert GopherQuality().check(stats(" ".join(["of", "of"] + base))) is None  # occurrences count


# ----- GopherRepetition -----------------------------------------------------------------------------


def test_gopher_repetition_published_defaults():
    r = GopherRepetition()
    assert (r.dup_line_frac, r.dup_para_frac, r.dup_line_char_frac, r.dup_para_char_frac) == (0.3, 0.3, 0.2, 0.2)
    assert r.top_n_grams == ((2, 0.2), (3, 0.18), (4, 0.16))
    assert r.dup_n_grams == ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


def test_gopher_repetition_keeps_prose():
    assert GopherRepetition().check(stats(PROSE)) is None


def test_dup_para_frac_edge():
    uniq = [" ".join(filler(4, start=10 * i)) for i in range(7)]
    rule = permissive_repetition(dup_para_frac=0.3)
    assert rule.check(stats("\n\n".join(uniq + [uniq[0]] * 3))) is None  # 3 / 10
    assert rule.check(stats("\n\n".join(uniq[:6] + [uniq[0]] * 4))) == "dup_para_frac>0.3"  # 4 / 10


def test_dup_para_char_frac_edge():
    rule = permissive_repetition(dup_para_char_frac=0.2)
    dup = "x" * 10
    at = "\n\n".join([dup, dup, dup, "b" * 35, "c" * 35])  # 20 / 100
    assert rule.check(stats(at)) is None
    past = "\n\n".join([dup, dup, dup, "b" * 35, "c" * 34])  # 20 / 99
    assert rule.check(stats(past)) == "dup_para_char_frac>0.2"


def test_dup_line_frac_and_char_frac_edges():
    uniq = [" ".join(filler(4, start=10 * i)) for i in range(7)]
    frac = permissive_repetition(dup_line_frac=0.3)
    assert frac.check(stats("\n".join(uniq + [uniq[1]] * 3))) is None
    assert frac.check(stats("\n".join(uniq[:6] + [uniq[1]] * 4))) == "dup_line_frac>0.3"
    chars = permissive_repetition(dup_line_char_frac=0.2)
    dup = "y" * 10
    assert chars.check(stats("\n".join([dup, dup, dup, "b" * 35, "c" * 35]))) is None
    assert chars.check(stats("\n".join([dup, dup, dup, "b" * 35, "c" * 34]))) == "dup_line_char_frac>0.2"


def top_bigram_doc(total_word_chars: int) -> str:
    """'ab cd' five times (5 x 4 = 20 word chars) among distinct 5-letter fillers."""
    fill_chars = total_word_chars - 20
    fills = (
        filler(fill_chars // 5) + filler(1, length=fill_chars % 5, start=9999)
        if fill_chars % 5
        else filler(fill_chars // 5)
    )
    words: list[str] = []
    for i in range(5):
        words += ["ab", "cd"] + fills[i * 3 : i * 3 + 3]
    words += fills[15:]
    return " ".join(words)


def test_top_2_gram_edge():
    rule = permissive_repetition(top_n_grams=((2, 0.2),))
    at = stats(top_bigram_doc(100))
    assert at.n_word_chars == 100 and at.top_ngram(2) == (5, 4)
    assert rule.check(at) is None  # 5 x 4 / 100 = 0.2
    past = stats(top_bigram_doc(99))
    assert past.n_word_chars == 99
    assert rule.check(past) == "top_2_gram>0.2"


def test_repetition_thresholds_are_checked_by_ascending_n_whatever_their_order():
    block = " ".join(filler(12, start=500))
    text = stats(" ".join([block, " ".join(filler(30)), block]))  # dup share 0.22 for every n <= 12
    rule = permissive_repetition(dup_n_grams=((6, 0.01), (5, 0.9)))
    assert rule.check(text) == "dup_6_gram_chars>0.01"  # n=5 passes, n=6 is still evaluated
    top = permissive_repetition(top_n_grams=((4, 0.01), (2, 0.9)))
    assert top.check(text) == "top_4_gram>0.01"


def test_text_stats_is_lazy():
    s = stats(PROSE)
    assert LengthBounds().check(s) is None
    assert "word_hashes" not in s.__dict__ and "_classes" not in s.__dict__
    GopherQuality(min_doc_words=10_000).check(s)  # fails on the word count: no n-gram or line work
    assert "word_hashes" not in s.__dict__ and not s._ngram_hashes and "non_empty_lines" not in s.__dict__


def test_top_ngram_needs_a_repeat():
    rule = permissive_repetition(top_n_grams=((2, 0.2), (3, 0.18), (4, 0.16)))
    assert rule.check(stats("hello world again")) is None  # one bigram is 100% of it, but never repeats


def dup5_doc(total_word_chars: int) -> str:
    """'aaa bbb ccc ddd eee' twice (the second 15 word chars repeated), distinct fillers around."""
    fill_chars = total_word_chars - 30
    n5, rest = divmod(fill_chars, 5)
    fills = filler(n5) + (filler(1, length=rest, start=7777) if rest else [])
    block = ["aaa", "bbb", "ccc", "ddd", "eee"]
    return " ".join(fills[:5] + block + fills[5:9] + block + fills[9:])


def test_dup_5_gram_chars_edge():
    rule = permissive_repetition(dup_n_grams=((5, 0.15), (6, 0.14)))
    at = stats(dup5_doc(100))
    assert at.n_word_chars == 100 and at.duplicate_ngram_chars(5) == 15
    assert rule.check(at) is None  # 15 / 100
    past = stats(dup5_doc(99))
    assert rule.check(past) == "dup_5_gram_chars>0.15"


def test_dup_ngram_rule_reports_the_first_n_over_its_share():
    block = " ".join(filler(12, start=500))
    text = " ".join([block, " ".join(filler(30)), block])
    assert GopherRepetition().check(stats(text)) == "dup_5_gram_chars>0.15"
    # a 6-gram threshold alone also fires on the same repeat
    assert permissive_repetition(dup_n_grams=((6, 0.14),)).check(stats(text)) == "dup_6_gram_chars>0.14"


# ----- C4Quality -------------------------------------------------------------------------------------


def test_c4_filter_lines_removes_each_kind_of_line():
    text = "\n".join(
        [
            "This line is a proper sentence.",
            "no terminal punctuation here",
            "Two words.",
            "This one trails off...",
            "Please enable JavaScript to continue.",
            "Read our Privacy Policy for details.",
            "This site uses cookies to work.",
            "",
            "The fact is well known[1] and cited[citation needed].",
            "A giant " + "w" * 1001 + " token.",
            'She said "we are done."',
            "Is this the last question?",
        ]
    )
    kept, removed = C4Quality().filter_lines(text)
    assert kept == (
        "This line is a proper sentence.\n\nThe fact is well known and cited.\n"
        'She said "we are done."\nIs this the last question?'
    )
    assert removed == 7


def test_c4_filter_lines_keeps_paragraph_breaks_and_indentation():
    text = (
        "  Indented sentence stays here.\ndrop me\n\nSecond paragraph is here.\n\n\nshort\n\nThird paragraph ends well."
    )
    kept, removed = C4Quality().filter_lines(text)
    assert kept == "  Indented sentence stays here.\n\nSecond paragraph is here.\n\nThird paragraph ends well."
    assert removed == 2


def test_c4_filter_lines_is_configurable():
    text = "code line without punctuation\nx = 1\nA real sentence is here."
    assert C4Quality(filter_no_terminal_punct=False).filter_lines(text) == (text, 0)
    assert C4Quality(filter_no_terminal_punct=False, min_words_per_line=4).filter_lines(text) == (
        "code line without punctuation\nA real sentence is here.",
        1,
    )
    assert C4Quality(end_punctuation=(".", ":")).filter_lines("The heading here:\nbody text here") == (
        "The heading here:",
        1,
    )
    unchanged = "Nothing to remove in this line.\nOr in this one."
    kept, removed = C4Quality().filter_lines(unchanged)
    assert kept is unchanged and removed == 0


def test_c4_document_rules():
    sentences = "One is here. Two is here. Three is here. Four is here. Five is here."
    assert C4Quality().check(stats(sentences)) is None  # exactly 5 sentences
    assert C4Quality().check(stats("One is here. Two is here. Three is here. Four is here.")) == "sentences<5"
    assert C4Quality().check(stats(sentences + " Lorem Ipsum dolor sit amet.")) == "lorem_ipsum"
    assert C4Quality().check(stats(sentences + " Use {braces} here.")) == "curly_bracket"
    assert C4Quality(filter_curly_bracket=False).check(stats(sentences + " Use {braces} here.")) is None


def test_c4_curly_bracket_only_on_surviving_lines():
    text = "int main() {\n" + "\n".join(f"Sentence number {w} is fine." for w in filler(5)) + "\n}"
    kept, removed = C4Quality().filter_lines(text)
    assert removed == 2 and "{" not in kept
    assert C4Quality().check(stats(kept)) is None


# ----- FineWebQuality ---------------------------------------------------------------------------------


def test_fineweb_published_defaults():
    f = FineWebQuality()
    assert (f.line_punct_thr, f.short_line_thr, f.short_line_length) == (0.12, 0.67, 30)
    assert (f.char_duplicates_ratio, f.new_line_ratio) == (0.01, 0.3)


def long_lines(n: int, start: int = 0) -> list[str]:
    """Distinct lines of 8 words (47 chars), no terminal punctuation."""
    return [" ".join(filler(8, start=start + 8 * i)) for i in range(n)]


def test_fineweb_line_punct_edge():
    rule = permissive_fineweb(line_punct_thr=0.12)
    lines = long_lines(25)
    at = [line + "." if i < 3 else line for i, line in enumerate(lines)]  # 3 / 25 = 0.12
    assert rule.check(stats("\n".join(at))) is None
    past = [line + "!" if i < 2 else line for i, line in enumerate(lines)]  # 2 / 25
    assert rule.check(stats("\n".join(past))) == "line_punct_ratio<0.12"


def test_fineweb_short_line_edge():
    rule = permissive_fineweb(short_line_thr=0.67)
    short = [" ".join(filler(5, start=1000 + 5 * i)) for i in range(68)]  # 29 chars each
    assert all(len(s) <= 30 for s in short)
    assert rule.check(stats("\n".join(short[:67] + long_lines(33)))) is None  # 67 / 100
    assert rule.check(stats("\n".join(short[:68] + long_lines(32)))) == "short_line_ratio>0.67"


def test_fineweb_short_line_length_is_inclusive():
    rule = permissive_fineweb(short_line_thr=0.0)
    assert rule.check(stats("x" * 31)) is None
    assert rule.check(stats("x" * 30)) == "short_line_ratio>0"


def test_fineweb_char_duplicates_edge():
    rule = permissive_fineweb(char_duplicates_ratio=0.01)
    dup = "z" * 10
    at = [dup, dup, "a" * 490, "b" * 490]  # 10 / 1000 line chars
    assert rule.check(stats("\n".join(at))) is None
    past = [dup, dup, "a" * 490, "b" * 489]  # 10 / 999
    assert rule.check(stats("\n".join(past))) == "char_dup_ratio>0.01"


def test_fineweb_newline_ratio_edge():
    rule = permissive_fineweb(new_line_ratio=0.3)
    words = filler(100)

    def joined(n_newlines: int, sep: str = "\n") -> str:  # the first gaps between the 100 words break lines
        return " ".join(words[:1]) + "".join(
            (sep if i < n_newlines // len(sep) else " ") + w for i, w in enumerate(words[1:])
        )

    at = stats(joined(30))
    assert (at.n_newlines, at.n_words) == (30, 100)
    assert rule.check(at) is None  # 30 / 100
    assert rule.check(stats(joined(31))) == "newline_word_ratio>0.3"
    blank = stats(joined(32, sep="\n\n"))  # blank lines count: 16 paragraph breaks are 32 newlines
    assert blank.n_newlines == 32
    assert rule.check(blank) == "newline_word_ratio>0.3"


def test_fineweb_keeps_prose_and_rejects_empty():
    assert FineWebQuality().check(stats(PROSE)) is None
    assert FineWebQuality().check(stats("")) == "no_lines"


# ----- quality_score ---------------------------------------------------------------------------------


def test_quality_score_bounds():
    for text in [
        "",
        "   ",
        "word",
        "!!! ??? ...",
        "1 2 3 4",
        PROSE,
        BOILERPLATE,
        "a " * 500,
        "x" * 5000,
        "日本語 テキスト。",
    ]:
        q = quality_score(stats(text))
        assert 0.0 <= q <= 1.0, text


def test_quality_score_exact_components():
    # 20 distinct words, one sentence: sentence 1.0, unique 1.0, alpha = 100 letters / 101 non-space
    words = filler(20)
    text = " ".join(words) + "."
    assert quality_score(stats(text)) == pytest.approx((1.0 + 1.0 + 100 / 101) / 3)
    # 45 words per sentence: (60 - 45) / 30 = 0.5; 5 words per sentence: 5 / 10 = 0.5
    long_sentence = " ".join(filler(45)) + "."
    assert quality_score(stats(long_sentence)) == pytest.approx((0.5 + 1.0 + 225 / 226) / 3)
    short_sentence = " ".join(filler(5)) + "."
    assert quality_score(stats(short_sentence)) == pytest.approx((0.5 + 1.0 + 25 / 26) / 3)
    assert quality_score(stats(" ".join(filler(60)) + ".")) == pytest.approx((0.0 + 1.0 + 300 / 301) / 3)
    assert quality_score(stats("")) == 0.0


def test_quality_score_orders_prose_above_boilerplate():
    assert quality_score(stats(PROSE)) > 0.8
    assert quality_score(stats(BOILERPLATE)) < 0.5
    assert quality_score(stats(PROSE)) > quality_score(stats(BOILERPLATE))


# ----- profiles --------------------------------------------------------------------------------------


def test_published_profile_uses_class_defaults():
    assert Profile(name="published") == PUBLISHED
    assert PROFILES == {"published": PUBLISHED, "fineweb": FINEWEB, "documentation": DOCUMENTATION}
    assert PUBLISHED.order == DEFAULT_ORDER
    assert list(PUBLISHED.rules) == list(DEFAULT_ORDER)
    for name, rule in PUBLISHED.rules.items():
        assert rule.name == name and getattr(PUBLISHED, name) is rule


def _changed_fields(a: object, b: object) -> set[str]:
    return {f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}


def test_documentation_profile_deviations_are_the_documented_ones():
    assert DOCUMENTATION.name == "documentation" and DOCUMENTATION.keep_indentation is True
    assert _changed_fields(DOCUMENTATION.length_bounds, PUBLISHED.length_bounds) == set()
    assert _changed_fields(DOCUMENTATION.c4_quality, PUBLISHED.c4_quality) == {
        "filter_no_terminal_punct",
        "min_words_per_line",
        "remove_citations",
        "filter_curly_bracket",
        "filter_javascript",
    }
    assert _changed_fields(DOCUMENTATION.gopher_repetition, PUBLISHED.gopher_repetition) == {
        "dup_para_frac",
        "dup_para_char_frac",
        "dup_line_frac",
        "dup_line_char_frac",
        "dup_n_grams",
    }
    assert _changed_fields(DOCUMENTATION.gopher_quality, PUBLISHED.gopher_quality) == {"max_non_alpha_words_ratio"}
    assert _changed_fields(DOCUMENTATION.fineweb_quality, PUBLISHED.fineweb_quality) == {
        "line_punct_thr",
        "short_line_thr",
        "char_duplicates_ratio",
        "new_line_ratio",
    }
    # every deviation relaxes the published value
    assert DOCUMENTATION.gopher_quality.max_non_alpha_words_ratio < 0.8
    assert DOCUMENTATION.fineweb_quality.line_punct_thr < 0.12
    assert DOCUMENTATION.fineweb_quality.short_line_thr > 0.67
    assert all(
        d[1] > p[1]
        for d, p in zip(DOCUMENTATION.gopher_repetition.dup_n_grams, PUBLISHED.gopher_repetition.dup_n_grams)
    )


def test_documentation_deviations_carry_a_reason_comment():
    import inspect

    import crawl2serve.assets.corpus.thresholds as thresholds

    source = inspect.getsource(thresholds)
    block = source[source.index("DOCUMENTATION = Profile(") : source.index("PROFILES:")]
    for field in ["keep_indentation", "filter_no_terminal_punct", "min_words_per_line", "remove_citations",
                  "filter_curly_bracket", "filter_javascript", "dup_para_frac", "dup_para_char_frac", "dup_line_frac",
                  "dup_line_char_frac", "max_non_alpha_words_ratio", "line_punct_thr", "short_line_thr",
                  "char_duplicates_ratio", "new_line_ratio"]:  # fmt: skip
        line = next(ln for ln in block.splitlines() if ln.strip().startswith(f"{field}="))
        assert "#" in line, field
    assert "# pydoc lists every class's inherited members" in block  # the dup_n_grams reason


def test_profile_with_overrides_applies_and_coerces():
    p = profile_with_overrides("published", {"gopher_quality.min_doc_words": 20, "fineweb_quality.new_line_ratio": 1})
    assert p.gopher_quality.min_doc_words == 20
    assert p.fineweb_quality.new_line_ratio == 1.0 and isinstance(p.fineweb_quality.new_line_ratio, float)
    assert PUBLISHED.gopher_quality.min_doc_words == 50  # the named profile is untouched
    assert p.c4_quality == PUBLISHED.c4_quality
    q = profile_with_overrides("documentation", {"c4_quality.min_num_sentences": 3.0, "keep_indentation": False})
    assert q.c4_quality.min_num_sentences == 3 and isinstance(q.c4_quality.min_num_sentences, int)
    assert q.keep_indentation is False and q.c4_quality.filter_curly_bracket is False
    r = profile_with_overrides("published", {"gopher_repetition.top_n_grams": [[2, 0.3]]})
    assert r.gopher_repetition.top_n_grams == ((2, 0.3),)
    assert profile_with_overrides("published", {}) is PUBLISHED


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gopher_quality.min_words": 20}, "gopher_quality.min_words"),
        ({"no_such_rule.min_doc_words": 1}, "no_such_rule.min_doc_words"),
        ({"min_doc_words": 1}, "min_doc_words"),
        ({"gopher_quality.name": "x"}, "gopher_quality.name"),
        ({"gopher_quality.min_doc_words": 2.5}, "gopher_quality.min_doc_words"),
        ({"c4_quality.filter_javascript": 1}, "c4_quality.filter_javascript"),
        ({"fineweb_quality.line_punct_thr": "high"}, "fineweb_quality.line_punct_thr"),
    ],
)
def test_profile_with_overrides_rejects_bad_keys_and_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        profile_with_overrides("published", overrides)


def test_profile_with_overrides_unknown_profile():
    with pytest.raises(ValueError, match="'nope'"):
        profile_with_overrides("nope", {})


# ----- clean_document -------------------------------------------------------------------------------


def test_clean_document_keeps_prose_and_scrubs_pii_last():
    raw = PROSE + "\n\nWrite to the harbor office at info@harbor-museum.org or call +1 (415) 723-2671 for tours."
    res = clean_document(raw, PUBLISHED)
    assert isinstance(res, CleanResult)
    assert res.dropped_by is None and res.reason is None
    assert res.flags == {name: True for name in DEFAULT_ORDER}
    assert res.pii == {"email": 1, "ip_address": 0, "phone": 1}
    assert "<EMAIL>" in res.text and "<PHONE>" in res.text and "@" not in res.text
    assert res.text.startswith("The river begins high in the mountains")
    assert res.quality == pytest.approx(quality_score(stats(res.text)))
    assert res.lines_removed == 0


def test_clean_document_first_failing_rule_drops_and_stops():
    short = clean_document("Too short to keep.", PUBLISHED)
    assert (short.text, short.dropped_by, short.reason) == (None, "length_bounds", "chars<199")
    assert short.flags == {"length_bounds": False}
    assert short.pii == {}

    # fails C4 (lorem ipsum) and would also fail Gopher repetition (the prose twice): C4 reports,
    # and the later rules are not evaluated
    lorem = "\n\n".join([PROSE, PROSE, "Lorem ipsum dolor sit amet, consectetur adipiscing elit."])
    assert GopherRepetition().check(stats(normalize_text(lorem))) is not None
    res = clean_document(lorem, PUBLISHED)
    assert (res.text, res.dropped_by, res.reason) == (None, "c4_quality", "lorem_ipsum")
    assert res.flags == {"length_bounds": True, "c4_quality": False}

    repeated = "\n\n".join([PROSE, PROSE])
    res = clean_document(repeated, PUBLISHED)
    assert res.dropped_by == "gopher_repetition" and res.reason == "dup_para_frac>0.3"
    assert res.flags == {"length_bounds": True, "c4_quality": True, "gopher_repetition": False}
    assert res.quality == pytest.approx(quality_score(stats(normalize_text(repeated))))


def test_clean_document_reaches_later_rules():
    # Gopher quality: no stop words at all, everything else fine
    no_stop = "\n".join(" ".join(filler(9, start=9 * i)).capitalize() + "." for i in range(8))
    res = clean_document(no_stop, PUBLISHED)
    assert (res.dropped_by, res.reason) == ("gopher_quality", "too_few_stop_words")
    assert res.flags == {"length_bounds": True, "c4_quality": True, "gopher_repetition": True, "gopher_quality": False}
    # FineWeb: one line repeated once (a 1.7% character duplicate) passes every earlier rule
    line = "A short closing line repeats."
    text = PROSE + "\n" + line + "\n" + line
    res = clean_document(text, PUBLISHED)
    assert (res.dropped_by, res.reason) == ("fineweb_quality", "char_dup_ratio>0.01")
    assert all(res.flags[r] for r in DEFAULT_ORDER[:-1]) and res.flags["fineweb_quality"] is False


def test_clean_document_c4_line_removal_feeds_later_rules():
    raw = PROSE + "\n\nSkip to main content\nShare this page"
    res = clean_document(raw, PUBLISHED)
    assert res.dropped_by is None and res.lines_removed == 2
    assert "Skip to main content" not in res.text
    assert res.text == normalize_text(PROSE)


PYDOC_PAGE = """json index

Module Reference

JSON (JavaScript Object Notation) is a subset of JavaScript syntax used as a lightweight data interchange format.
The json module exposes an API familiar to users of the standard library marshal and pickle modules.

Encoding basic Python object hierarchies:

    >>> import json
    >>> json.dumps(['foo', {'bar': ('baz', None, 1.0, 2)}])
    '["foo", {"bar": ["baz", null, 1.0, 2]}]'
    >>> print(json.dumps({"c": 0, "b": 0, "a": 0}, sort_keys=True))
    {"a": 0, "b": 0, "c": 0}

Functions

dump(obj, fp, *, skipkeys=False, ensure_ascii=True, indent=None)
    Serialize obj as a JSON formatted stream to fp (a file-like object).
    If skipkeys is true then dict keys that are not basic types will be skipped.
dumps(obj, *, skipkeys=False, ensure_ascii=True, indent=None)
    Serialize obj to a JSON formatted string.
    If indent is a non-negative integer, then JSON array elements and object members will be pretty-printed.
load(fp, *, cls=None, object_hook=None)
    Deserialize fp to a Python object; the object_hook is called with every decoded object.
loads(s, *, cls=None, object_hook=None)
    Deserialize s (a str, bytes or bytearray instance containing a JSON document) to a Python object.

Data

__all__ = ['dump', 'dumps', 'load', 'loads', 'JSONDecoder', 'JSONDecodeError', 'JSONEncoder']
"""


def test_documentation_profile_keeps_a_reference_page_that_published_rejects():
    published = clean_document(PYDOC_PAGE, PUBLISHED)
    assert published.dropped_by is not None
    doc = clean_document(PYDOC_PAGE, DOCUMENTATION)
    assert doc.dropped_by is None, doc.reason
    assert doc.lines_removed == 0
    assert "JSON (JavaScript Object Notation)" in doc.text  # a subject here, not a banner
    assert "    >>> import json" in doc.text  # indentation kept
    assert "{'bar': ('baz', None, 1.0, 2)}" in doc.text  # braces and code kept
    assert doc.flags == {name: True for name in DEFAULT_ORDER}


def test_clean_document_is_idempotent_on_its_own_output():
    for profile, raw in ((PUBLISHED, PROSE + "\n\nno punctuation line"), (DOCUMENTATION, PYDOC_PAGE)):
        first = clean_document(raw, profile)
        second = clean_document(first.text, profile)
        assert second.text == first.text and second.lines_removed == 0
        assert second.quality == pytest.approx(first.quality)
