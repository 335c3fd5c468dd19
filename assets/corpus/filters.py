"""Corpus text rules: normalization, PII scrubbing, Gopher / C4 / FineWeb quality rules, quality score.

Framework-free. Every rule is a frozen dataclass whose thresholds are named fields carrying the
published defaults (datatrove ``src/datatrove/pipeline/filters/``: Gopher quality and repetition,
C4, FineWeb), a ``name`` class attribute, and ``check(stats) -> str | None``: ``None`` keeps the
document, a short reason string drops it. Rules read one shared :class:`TextStats`, so the text is
tokenized once, not once per rule.

Measures. Each rule has a ``measure`` field: ``"crawl2serve"`` (the default) measures as the docstrings
describe (regex ``\\w+`` words, stripped non-empty lines, shares of word characters); ``"datatrove"``
measures exactly as datatrove 0.10.1's filter of the same name does (its English word tokens from
:mod:`assets.corpus.en_words`, its line splitting, its denominators), so that the ``fineweb`` profile
(:mod:`assets.corpus.thresholds`) takes the decisions datatrove's FineWeb pipeline takes. Each rule's
docstring lists what ``"datatrove"`` changes. One deliberate exception, in every measure: a
whitespace-only line is blank, never a line (datatrove counts such lines, which trafilatura emits, as lines
and as duplicates of each other; normalization removes them before any rule runs anyway).

Comparisons. Each ratio is computed as one division of two integers, so a ratio equal to the
threshold as a decimal fraction (for example 8/10 against 0.8) compares equal, never one float ulp
off. Every bound is INCLUSIVE: a ``min_*`` threshold keeps values ``>=`` it, a ``max_*`` threshold
keeps values ``<=`` it; the drop happens strictly past the threshold. To switch a rule off, give it
a permissive value (0 for a minimum, ``float("inf")`` for a maximum).
"""

from __future__ import annotations

import re
import typing
import unicodedata
from dataclasses import dataclass
from typing import ClassVar, Literal

from crawl2serve.assets.corpus.en_words import sentence_count, word_tokens
from crawl2serve.assets.corpus.pii import PII_PLACEHOLDERS, scrub_pii
from crawl2serve.assets.corpus.text_stats import STOP_WORDS, TextStats
from crawl2serve.assets.corpus.words import has_no_space, line_word_count, longest_word, split_no_space_tokens

__all__ = [
    "MEASURES",
    "C4Quality",
    "FineWebQuality",
    "GopherQuality",
    "GopherRepetition",
    "LengthBounds",
    "PII_PLACEHOLDERS",
    "RULES",
    "Rule",
    "normalize_text",
    "quality_score",
    "scrub_pii",
]


def _g(x: float) -> str:
    return f"{x:g}"


Measure = Literal["crawl2serve", "datatrove"]
MEASURES: tuple[str, ...] = ("crawl2serve", "datatrove")
_DT_BULLETS = ("•", "-")  # datatrove's GopherQualityFilter counts these bullets only
_DT_CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")  # datatrove: case-sensitive
_DT_PARAGRAPH_SPLIT = re.compile(r"\n(?:[ \t]*\n)+")  # \n{2,}, whitespace-only lines counting as blank
_DT_LINE_SPLIT = re.compile(r"\n+")


def _dt_sentence_count(line: str) -> int:
    """spaCy's sentencizer rule over the line's tokens, runs of Chinese, Japanese or Thai split into ICU
    words first (their sentence marks 。！？ sit inside a whitespace chunk)."""
    if line.isascii() or not has_no_space(line):
        return sentence_count(line)
    return sentence_count(line, split_no_space_tokens(word_tokens(line)))


def _non_blank(lines: list[str]) -> list[str]:
    """The lines that hold a non-space character, unstripped (whitespace-only lines are blank)."""
    return [line for line in lines if line.strip()]


def _dup_count_chars(items: list[str]) -> tuple[int, int]:
    """(number, total length) of the items equal to an earlier item."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


# ----- normalization -----------------------------------------------------------------------------
def _special_chars() -> dict[str, str]:
    """Character -> replacement for everything normalize_text rewrites character by character."""
    table: dict[str, str] = {}
    for cp in range(0x3001):  # every Unicode whitespace and control character lies below U+3001
        ch = chr(cp)
        if ch in "\n ":
            continue
        if ch.isspace():
            table[ch] = " "
        elif unicodedata.category(ch) == "Cc":
            table[ch] = ""
    for ch in "\x85\u2028\u2029":  # NEXT LINE, LINE SEPARATOR, PARAGRAPH SEPARATOR break lines
        table[ch] = "\n"
    for ch in "\u200b\u2060\ufeff\u00ad":  # zero-width space, word joiner, BOM, soft hyphen
        table[ch] = ""
    return table


def _char_class(replacement: str, extra: str = "") -> re.Pattern[str]:
    """A regex matching every character that _SPECIAL maps to ``replacement`` (plus ``extra``)."""
    chars = "".join(re.escape(c) for c, r in sorted(_SPECIAL.items()) if r == replacement)
    return re.compile(f"[{chars}{extra}]")


_SPECIAL = _special_chars()
_TO_SPACE_RE = _char_class(" ")
_TO_NEWLINE_RE = _char_class("\n")
_TO_EMPTY_RE = _char_class("", extra="\ud800-\udfff")  # lone surrogates (undecodable bytes) go too
_PRINTABLE_ASCII = bytes(range(32, 127)) + b"\n"


def normalize_text(text: str, *, keep_indentation: bool = False) -> str:
    """Canonical text for every later stage.

    In order: ``\\r\\n`` and lone ``\\r`` become ``\\n``; ``\\t`` and every other Unicode
    whitespace character become a space (this includes the whitespace control characters ``\\v``,
    ``\\f`` and U+001C..U+001F), except the line breaks U+0085, U+2028 and U+2029, which become
    ``\\n``; the remaining control characters (Unicode category Cc, ``\\n`` aside), lone surrogates
    and the invisible U+200B, U+2060, U+FEFF (BOM) and U+00AD (soft hyphen) are removed; Unicode NFC
    normalization; runs of spaces collapse to one space; trailing spaces are stripped from every
    line; two or more consecutive blank lines (3+ newlines) become one blank line; the whole text is
    stripped. A line's leading spaces collapse like any other run (to one space), as the spec says.

    ``keep_indentation=True`` leaves the leading spaces of each line alone (only runs after the
    first non-space character collapse) and strips only blank lines at both ends: Python code
    indentation is syntax. Tabs still become one space each.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\t" in text:
        text = text.replace("\t", " ")
    if "\xa0" in text:
        text = text.replace("\xa0", " ")
    # str.isprintable() is False for every character the table rewrites (Cc, Cf, Zs but " ", Zl,
    # Zp, surrogates), so printable text (newlines aside) skips the regex scans entirely. ASCII text
    # (an O(1) check) is tested faster through bytes: deleting the printable bytes leaves none.
    if text.isascii():
        special = bool(text.encode("ascii").translate(None, _PRINTABLE_ASCII))
    else:
        special = not text.replace("\n", "").isprintable()
    if special:
        text = _TO_EMPTY_RE.sub("", text)
        text = _TO_SPACE_RE.sub(" ", text)
        text = _TO_NEWLINE_RE.sub("\n", text)
    text = unicodedata.normalize("NFC", text)
    if "  " in text:
        if keep_indentation:
            lines = text.split("\n")
            for i, line in enumerate(lines):
                if "  " in line:
                    body = line.lstrip(" ")
                    if "  " in body:
                        indent = line[: len(line) - len(body)]
                        while "  " in body:
                            body = body.replace("    ", " ").replace("  ", " ")
                        lines[i] = indent + body
            text = "\n".join(lines)
        elif text.count("  ") > 64:  # many runs (extracted layout): one split/join pass
            text = " ".join(filter(None, text.split(" ")))
        else:  # a few runs (prose): replacing them is cheaper than splitting every word
            while "  " in text:
                text = text.replace("    ", " ").replace("  ", " ")
    if " \n" in text or text.endswith(" "):
        text = "\n".join(map(str.rstrip, text.split("\n")))  # only spaces are left to strip
    while "\n\n\n" in text:
        text = text.replace("\n\n\n\n", "\n\n").replace("\n\n\n", "\n\n")
    return text.strip("\n") if keep_indentation else text.strip()


# ----- rules -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LengthBounds:
    """Characters of the normalized text within ``[min_chars, max_chars]`` (both inclusive).

    Not a published rule: a cheap first gate. ``min_chars=199`` is exactly the shortest text that
    can pass :class:`GopherQuality` defaults (50 words of mean length >= 3 plus 49 separators), so
    it only front-runs drops the published rules would make anyway (lower it with
    ``min_doc_words``); ``max_chars`` bounds the work spent on one page.
    """

    name: ClassVar[str] = "length_bounds"
    min_chars: int = 199
    max_chars: int = 1_000_000

    def check(self, stats: TextStats) -> str | None:
        if stats.n_chars < self.min_chars:
            return f"chars<{self.min_chars}"
        if stats.n_chars > self.max_chars:
            return f"chars>{self.max_chars}"
        return None


@dataclass(frozen=True)
class GopherQuality:
    """Gopher (MassiveText) quality rules, datatrove ``GopherQualityFilter`` defaults.

    Measured on :class:`TextStats` (words = regex ``\\w+`` words; lines = non-empty lines). Keeps a
    document when, in this order (first failure is the reason):

    - ``min_doc_words <= words <= max_doc_words`` (``too_few_words`` / ``too_many_words``);
    - ``min_avg_word_length <= mean word length <= max_avg_word_length``;
    - ``"#"`` count / words ``<= max_symbol_word_ratio``, and likewise (``"..."`` + ``"…"``) / words;
    - bullet lines (starting with one of ``• ‣ ◦ ● ▪ ∙ - *``) / lines ``<= max_bullet_lines_ratio``;
    - lines ending in ``...`` or ``…`` / lines ``<= max_ellipsis_lines_ratio``;
    - whitespace tokens holding a letter / tokens ``>= max_non_alpha_words_ratio`` (datatrove's
      name, kept for familiarity: it is the minimum share of alphabetic words);
    - stop-word occurrences (``stop_words``: Gopher's the, be, to, of, and, that, have, with; another
      language's list from :mod:`assets.corpus.languages`; repeats count) ``>= min_stop_words``;
      ``stop_word_match="suffix"`` counts words ending with a stop word (Korean particles).

    ``measure="datatrove"`` (datatrove's ``GopherQualityFilter``): words are English tokens; the word
    count and mean length count the tokens holding a non-punctuation character, while the ``#`` and
    ellipsis ratios and the alphabetic share divide by all tokens (punctuation tokens count: a code line
    ``f(x) = 1`` is five words, two of them alphabetic); bullet lines start with ``•`` or ``-`` and, like
    ellipsis lines, are a share of all lines (``str.splitlines``, blank lines included); stop words are
    the distinct ones present, case-sensitive (Gopher's "at least two of" the words).
    """

    name: ClassVar[str] = "gopher_quality"
    measure: Measure = "crawl2serve"
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    max_non_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    stop_words: tuple[str, ...] = STOP_WORDS
    stop_word_match: Literal["word", "suffix"] = "word"

    def check(self, stats: TextStats) -> str | None:
        if self.measure == "datatrove":
            return self._check_datatrove(stats)
        n_words = stats.n_words
        if n_words < self.min_doc_words:
            return "too_few_words"
        if n_words > self.max_doc_words:
            return "too_many_words"
        if n_words == 0:
            return "no_words"
        mean = stats.mean_word_length
        if mean < self.min_avg_word_length:
            return f"mean_word_length<{_g(self.min_avg_word_length)}"
        if mean > self.max_avg_word_length:
            return f"mean_word_length>{_g(self.max_avg_word_length)}"
        if stats.n_hashes / n_words > self.max_symbol_word_ratio:
            return f"hash_word_ratio>{_g(self.max_symbol_word_ratio)}"
        if stats.n_ellipses / n_words > self.max_symbol_word_ratio:
            return f"ellipsis_word_ratio>{_g(self.max_symbol_word_ratio)}"
        n_lines = len(stats.non_empty_lines)
        if stats.n_bullet_lines / n_lines > self.max_bullet_lines_ratio:
            return f"bullet_lines_ratio>{_g(self.max_bullet_lines_ratio)}"
        if stats.n_ellipsis_lines / n_lines > self.max_ellipsis_lines_ratio:
            return f"ellipsis_lines_ratio>{_g(self.max_ellipsis_lines_ratio)}"
        if stats.alpha_token_ratio < self.max_non_alpha_words_ratio:
            return f"alpha_word_ratio<{_g(self.max_non_alpha_words_ratio)}"
        if stats.n_stop_words_of(self.stop_words, self.stop_word_match) < self.min_stop_words:
            return "too_few_stop_words"
        return None

    def _check_datatrove(self, stats: TextStats) -> str | None:
        n_words = stats.n_en_words
        if n_words < self.min_doc_words:
            return "too_few_words"
        if n_words > self.max_doc_words:
            return "too_many_words"
        n_tokens = stats.n_en_tokens
        if n_words == 0:
            return "no_words"
        mean = stats.mean_en_word_length
        if mean < self.min_avg_word_length:
            return f"mean_word_length<{_g(self.min_avg_word_length)}"
        if mean > self.max_avg_word_length:
            return f"mean_word_length>{_g(self.max_avg_word_length)}"
        if stats.n_hashes / n_tokens > self.max_symbol_word_ratio:
            return f"hash_word_ratio>{_g(self.max_symbol_word_ratio)}"
        if stats.n_ellipses / n_tokens > self.max_symbol_word_ratio:
            return f"ellipsis_word_ratio>{_g(self.max_symbol_word_ratio)}"
        lines = stats.text.splitlines()
        if sum(s.lstrip().startswith(_DT_BULLETS) for s in lines) / len(lines) > self.max_bullet_lines_ratio:
            return f"bullet_lines_ratio>{_g(self.max_bullet_lines_ratio)}"
        if sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > self.max_ellipsis_lines_ratio:
            return f"ellipsis_lines_ratio>{_g(self.max_ellipsis_lines_ratio)}"
        if stats.n_en_alpha_tokens / n_tokens < self.max_non_alpha_words_ratio:
            return f"alpha_word_ratio<{_g(self.max_non_alpha_words_ratio)}"
        if stats.n_en_stop_words_of(self.stop_words, self.stop_word_match) < self.min_stop_words:
            return "too_few_stop_words"
        return None


@dataclass(frozen=True)
class GopherRepetition:
    """Gopher repetition rules, datatrove ``GopherRepetitionFilter`` defaults.

    Drops a document when, in this order, any share is strictly above its threshold:

    - repeated paragraphs (blank-line separated; occurrences after the first) / paragraphs
      ``> dup_para_frac``; their characters / all paragraph characters ``> dup_para_char_frac``;
    - repeated non-empty lines / lines ``> dup_line_frac``; their characters / all line characters
      ``> dup_line_char_frac``;
    - for each ``(n, share)`` in ``top_n_grams``: occurrences x word characters of the most frequent
      word n-gram / all word characters ``> share``. Only an n-gram seen at least twice counts (a
      short document's single bigram is not repetition);
    - for each ``(n, share)`` in ``dup_n_grams``: word characters covered by repeated n-grams (every
      occurrence after the first; overlaps counted once) / all word characters ``> share``.

    Character shares count word characters only (whitespace and punctuation excluded) in both
    numerator and denominator; datatrove mixes the raw text length in. The n-gram shares never
    grow with ``n``, so once one is within the smallest remaining threshold the rest are skipped.

    ``measure="datatrove"`` (datatrove's ``GopherRepetitionFilter``): every character share divides by
    the length of the whole text; lines are the unstripped non-blank lines (``\\n+`` splits); n-grams are
    of English tokens, checked in the order given: the top n-gram scores ``len(" ".join(ngram)) x count``
    even when it occurs once, and repeated n-grams are counted by datatrove's greedy scan (an n-gram seen
    at an earlier visited position adds its characters, tokens joined with ``""``, and the scan jumps
    ``n`` tokens; see :meth:`TextStats.en_duplicate_ngram_chars`). An empty text is dropped (``empty``).
    """

    name: ClassVar[str] = "gopher_repetition"
    measure: Measure = "crawl2serve"
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = (
        (5, 0.15),
        (6, 0.14),
        (7, 0.13),
        (8, 0.12),
        (9, 0.11),
        (10, 0.10),
    )

    def check(self, stats: TextStats) -> str | None:
        if self.measure == "datatrove":
            return self._check_datatrove(stats)
        paragraphs = stats.paragraphs
        if paragraphs:
            n_dup, dup_chars = stats.paragraph_duplicates
            if n_dup / len(paragraphs) > self.dup_para_frac:
                return f"dup_para_frac>{_g(self.dup_para_frac)}"
            if dup_chars / stats.n_paragraph_chars > self.dup_para_char_frac:
                return f"dup_para_char_frac>{_g(self.dup_para_char_frac)}"
        lines = stats.non_empty_lines
        if lines:
            n_dup, dup_chars = stats.line_duplicates
            if n_dup / len(lines) > self.dup_line_frac:
                return f"dup_line_frac>{_g(self.dup_line_frac)}"
            if dup_chars / stats.n_line_chars > self.dup_line_char_frac:
                return f"dup_line_char_frac>{_g(self.dup_line_char_frac)}"
        total = stats.n_word_chars
        if total == 0:
            return None
        for n, share in sorted(self.top_n_grams):
            # the cheap bound (each n-gram occurs at most as often as its rarest word) settles
            # almost every document; only above it are the n-grams sorted and counted
            if stats.top_ngram_bound(n) / total <= share:
                continue
            count, chars = stats.top_ngram(n)
            if count >= 2 and count * chars / total > share:
                return f"top_{n}_gram>{_g(share)}"
        dup = sorted(self.dup_n_grams)
        for i, (n, share) in enumerate(dup):
            dup_share = stats.duplicate_ngram_chars(n) / total
            if dup_share > share:
                return f"dup_{n}_gram_chars>{_g(share)}"
            if i + 1 < len(dup) and dup_share <= min(s for _, s in dup[i + 1 :]):
                break  # larger n cannot exceed this share
        return None

    def _check_datatrove(self, stats: TextStats) -> str | None:
        text = stats.text
        if not text.strip():
            return "empty"
        size = len(text)
        paragraphs = _DT_PARAGRAPH_SPLIT.split(text.strip())
        n_dup, dup_chars = _dup_count_chars(paragraphs)
        if n_dup / len(paragraphs) > self.dup_para_frac:
            return f"dup_para_frac>{_g(self.dup_para_frac)}"
        if dup_chars / size > self.dup_para_char_frac:
            return f"dup_para_char_frac>{_g(self.dup_para_char_frac)}"
        lines = _non_blank(_DT_LINE_SPLIT.split(text))
        n_dup, dup_chars = _dup_count_chars(lines)
        if n_dup / len(lines) > self.dup_line_frac:
            return f"dup_line_frac>{_g(self.dup_line_frac)}"
        if dup_chars / size > self.dup_line_char_frac:
            return f"dup_line_char_frac>{_g(self.dup_line_char_frac)}"
        for n, share in self.top_n_grams:
            if stats.en_top_ngram_bound(n) / size <= share:
                continue  # the bound settles most documents without counting n-grams
            if stats.en_top_ngram_chars(n) / size > share:
                return f"top_{n}_gram>{_g(share)}"
        for n, share in self.dup_n_grams:
            if stats.en_duplicate_ngram_chars(n) / size > share:
                return f"dup_{n}_gram_chars>{_g(share)}"
        return None


@dataclass(frozen=True)
class C4Quality:
    """C4's clean-up: a line filter that removes lines, then document rules on what is kept.

    API, in two steps (``clean_document`` calls both):

    1. ``filter_lines(text) -> (kept_text, n_lines_removed)`` removes a line (C4 order) when: it
       holds a whitespace token longer than ``max_word_length``; (after deleting wiki citations
       ``[1]``, ``[edit]``, ``[citation needed]`` if ``remove_citations``) it does not end in one of
       ``end_punctuation`` or ends in ``...`` (if ``filter_no_terminal_punct``); it has fewer than
       ``min_words_per_line`` whitespace tokens; it contains ``javascript`` (case-insensitive, if
       ``filter_javascript``); it contains a policy phrase (if ``filter_policy``). Blank lines are
       kept as paragraph separators (C4 joined lines and lost paragraphs; Gopher's paragraph rules
       run after this one here) and are not counted as removed; kept lines keep their indentation.
    2. ``check(stats)`` on the kept text's :class:`TextStats` drops the document when it contains
       ``lorem ipsum`` (case-insensitive, ``filter_lorem_ipsum``), contains ``{``
       (``filter_curly_bracket``), or has fewer than ``min_num_sentences`` sentences.

    As in C4, the two document rules look only at lines that survived the line rules, so a code
    line with ``{`` that lacks terminal punctuation is removed rather than dropping the page.
    :meth:`apply` runs both steps.

    ``measure="datatrove"`` (datatrove's ``C4QualityFilter``, which follows TFDS's C4 code): one pass over
    the stripped lines (``str.splitlines``) in C4's order: long word, citations (case-sensitive), terminal
    punctuation, fewer than ``min_words_per_line`` whitespace tokens (counted before the citations were
    deleted), ``lorem ipsum`` (drops the document), ``javascript``, ``{`` (drops the document), policy
    phrases; sentences are counted per kept line by spaCy's sentencizer rule
    (:func:`assets.corpus.en_words.sentence_count`); the kept lines are joined by single newlines (blank
    lines and indentation are gone, as in C4's output).

    Scripts written without spaces (Chinese, Japanese, Thai): a whitespace token of such text counts as
    its ICU words (:mod:`assets.corpus.words`) for ``min_words_per_line`` and ``max_word_length``, so a
    Chinese sentence is not a one-word line, nor a 1,000-character paragraph one overlong word.
    """

    name: ClassVar[str] = "c4_quality"
    measure: Measure = "crawl2serve"
    filter_no_terminal_punct: bool = True
    end_punctuation: tuple[str, ...] = (".", "!", "?", '"', "'")
    min_words_per_line: int = 3
    max_word_length: int = 1000
    remove_citations: bool = True
    filter_javascript: bool = True
    filter_policy: bool = True
    policy_phrases: tuple[str, ...] = (
        "terms of use",
        "privacy policy",
        "cookie policy",
        "uses cookies",
        "use of cookies",
        "use cookies",
    )
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    min_num_sentences: int = 5

    _CITATION_RE: ClassVar[re.Pattern[str]] = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)

    def filter_lines(self, text: str) -> tuple[str, int]:
        """Return the kept text (blank-line runs collapsed, stripped of blank edges) and the count of
        removed non-blank lines. Expects normalized text."""
        lowered = text.lower()
        javascript = self.filter_javascript and "javascript" in lowered
        policies = tuple(p for p in self.policy_phrases if p in lowered) if self.filter_policy else ()
        max_len = self.max_word_length
        long_lines = len(text) > max_len and max(map(len, text.split("\n"))) > max_len
        citations = self.remove_citations and "[" in text
        punct = self.end_punctuation if self.filter_no_terminal_punct else None
        min_words = self.min_words_per_line
        if not (long_lines or citations or punct is not None or min_words > 1 or javascript or policies):
            return text, 0  # no line rule can fire
        kept: list[str] = []
        removed = 0
        edited = False
        for line in text.split("\n"):
            s = line.strip()
            if not s:
                kept.append("")
                continue
            if long_lines and len(s) > max_len and max(map(len, s.split())) > max_len and longest_word(s) > max_len:
                removed += 1
                continue
            if citations and "[" in s:
                line, n_cited = self._CITATION_RE.subn("", line)
                if n_cited:
                    edited = True
                    line = line.rstrip()
                    s = line.strip()
            if (
                not s
                or (punct is not None and (not s.endswith(punct) or s.endswith("...")))
                or (
                    min_words > 1
                    and len(s.split(None, min_words - 1)) < min_words
                    and (s.isascii() or line_word_count(s, min_words) < min_words)
                )
            ):
                removed += 1
                continue
            if javascript or policies:
                low = s.lower()
                if (javascript and "javascript" in low) or any(p in low for p in policies):
                    removed += 1
                    continue
            kept.append(line)
        if not removed and not edited:
            return text, 0
        out = "\n".join(kept)
        while "\n\n\n" in out:
            out = out.replace("\n\n\n\n", "\n\n").replace("\n\n\n", "\n\n")
        return out.strip("\n"), removed

    def check(self, stats: TextStats) -> str | None:
        """The document rules on a text the line filter already kept."""
        if self.filter_lorem_ipsum and "lorem ipsum" in stats.lower:
            return "lorem_ipsum"
        if self.filter_curly_bracket and "{" in stats.text:
            return "curly_bracket"
        if self.measure == "datatrove":
            n_sentences = sum(_dt_sentence_count(line) for line in stats.text.splitlines())
        else:
            n_sentences = stats.sentence_count
        if n_sentences < self.min_num_sentences:
            return f"sentences<{self.min_num_sentences}"
        return None

    def apply(self, stats: TextStats) -> tuple[TextStats, int, str | None]:
        """Both steps on ``stats.text``: (statistics of the kept text, lines removed, drop reason or None)."""
        if self.measure == "datatrove":
            return self._apply_datatrove(stats.text)
        kept, removed = self.filter_lines(stats.text)
        kept_stats = stats if kept is stats.text else TextStats(kept)
        return kept_stats, removed, self.check(kept_stats)

    def _apply_datatrove(self, text: str) -> tuple[TextStats, int, str | None]:
        punct = self.end_punctuation if self.filter_no_terminal_punct else None
        policies = self.policy_phrases if self.filter_policy else ()
        kept: list[str] = []
        removed = 0
        n_sentences = 0
        for line in text.splitlines():
            line = line.strip()
            words = line.split()
            if any(len(w) > self.max_word_length for w in words) and longest_word(line) > self.max_word_length:
                removed += 1
                continue
            if self.remove_citations and "[" in line:
                line = _DT_CITATION_RE.sub("", line)
            if punct is not None and (not line.endswith(punct) or line.endswith("...")):
                removed += 1
                continue
            if len(words) < self.min_words_per_line and (
                line.isascii() or line_word_count(line, self.min_words_per_line) < self.min_words_per_line
            ):
                removed += bool(words)  # blank lines are not counted as removed
                continue
            low = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in low:
                return TextStats(text), removed, "lorem_ipsum"
            if self.filter_javascript and "javascript" in low:
                removed += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                return TextStats(text), removed, "curly_bracket"
            if policies and any(p in low for p in policies):
                removed += 1
                continue
            if n_sentences < self.min_num_sentences:
                n_sentences += _dt_sentence_count(line)
            kept.append(line)
        kept_stats = TextStats("\n".join(kept).strip())
        if n_sentences < self.min_num_sentences:
            return kept_stats, removed, f"sentences<{self.min_num_sentences}"
        return kept_stats, removed, None


@dataclass(frozen=True)
class FineWebQuality:
    """FineWeb's quality rules, datatrove ``FineWebQualityFilter`` defaults.

    On the stripped non-empty lines (none: ``no_lines``), in this order:

    - lines ending in one of ``line_end_chars`` / lines ``>= line_punct_thr``;
    - lines of at most ``short_line_length`` characters / lines ``<= short_line_thr``;
    - characters of lines repeating an earlier line / all line characters
      ``<= char_duplicates_ratio``;
    - newlines (blank lines included) / words ``<= new_line_ratio``.

    ``measure="datatrove"`` (datatrove's ``FineWebQualityFilter``): lines are not stripped (a leading
    space counts towards a line's length and its identity); duplicate-line characters divide by the
    characters of the text that are not newlines; the newline ratio divides by English tokens. Its
    line-end characters are ``assets.corpus.en_words.DATATROVE_TERMINALS`` (the ``fineweb`` profile sets
    them: no quotes, 159 sentence terminals).
    """

    name: ClassVar[str] = "fineweb_quality"
    measure: Measure = "crawl2serve"
    line_punct_thr: float = 0.12
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    line_end_chars: tuple[str, ...] = (".", "!", "?", '"', "'", "”", "’", "。", "！", "？")

    def check(self, stats: TextStats) -> str | None:
        if self.measure == "datatrove":
            return self._check_datatrove(stats)
        lines = stats.non_empty_lines
        if not lines:
            return "no_lines"
        n = len(lines)
        if stats.n_lines_ending_with(self.line_end_chars) / n < self.line_punct_thr:
            return f"line_punct_ratio<{_g(self.line_punct_thr)}"
        if stats.n_short_lines(self.short_line_length) / n > self.short_line_thr:
            return f"short_line_ratio>{_g(self.short_line_thr)}"
        if stats.line_duplicates[1] / stats.n_line_chars > self.char_duplicates_ratio:
            return f"char_dup_ratio>{_g(self.char_duplicates_ratio)}"
        if stats.n_words == 0:
            return "no_words"
        if stats.n_newlines / stats.n_words > self.new_line_ratio:
            return f"newline_word_ratio>{_g(self.new_line_ratio)}"
        return None

    def _check_datatrove(self, stats: TextStats) -> str | None:
        text = stats.text
        lines = _non_blank(text.split("\n"))
        if not lines:
            return "no_lines"
        n = len(lines)
        if sum(line.endswith(self.line_end_chars) for line in lines) / n < self.line_punct_thr:
            return f"line_punct_ratio<{_g(self.line_punct_thr)}"
        if sum(len(line) <= self.short_line_length for line in lines) / n > self.short_line_thr:
            return f"short_line_ratio>{_g(self.short_line_thr)}"
        if _dup_count_chars(lines)[1] / (len(text) - stats.n_newlines) > self.char_duplicates_ratio:
            return f"char_dup_ratio>{_g(self.char_duplicates_ratio)}"
        if stats.n_newlines / stats.n_en_tokens > self.new_line_ratio:
            return f"newline_word_ratio>{_g(self.new_line_ratio)}"
        return None


#: Every rule, in the default order (profiles ``published`` and ``documentation``): the one list of the corpus
#: rules, as the type of "a rule". :data:`RULES` (the classes), the rule names (``thresholds.RULE_TYPES``,
#: ``DEFAULT_ORDER``), the ``known_rules`` check and the launchpad's override classes derive from it;
#: :class:`~assets.corpus.thresholds.Profile`'s fields and the docs' rule orders are checked against it (at
#: import, and tests/corpus/test_rule_list.py).
Rule = LengthBounds | C4Quality | GopherRepetition | GopherQuality | FineWebQuality
RULES: tuple[type[Rule], ...] = typing.get_args(Rule)


# ----- quality score ---------------------------------------------------------------------------
def quality_score(stats: TextStats) -> float:
    """A document quality score in [0, 1]: the mean of three sub-scores, each in [0, 1].

    - sentence length: ``m`` = words / sentences; 1.0 for ``10 <= m <= 30``, ``m / 10`` below 10,
      ``(60 - m) / 30`` between 30 and 60, 0.0 from 60 up (and 0.0 without words);
    - unique-word ratio: distinct lowercased words / words (0.0 without words);
    - alphabetic ratio: alphabetic characters / non-whitespace characters (0.0 for blank text).

    Words and sentences are as defined in :mod:`assets.corpus.text_stats`.
    """
    n_words = stats.n_words
    if n_words == 0:
        sentence, unique = 0.0, 0.0
    else:
        m = n_words / max(stats.sentence_count, 1)
        if m < 10:
            sentence = m / 10
        elif m <= 30:
            sentence = 1.0
        elif m < 60:
            sentence = (60 - m) / 30
        else:
            sentence = 0.0
        unique = stats.n_unique_words / n_words
    alpha = stats.n_alpha_chars / stats.n_nonspace_chars if stats.n_nonspace_chars else 0.0
    return (sentence + unique + alpha) / 3
