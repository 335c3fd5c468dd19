"""Everything the corpus quality rules measure, computed once per document (framework-free).

datatrove's filters each re-tokenize the text; here one :class:`TextStats` is built per document
and every rule reads from it. Values are ``functools.cached_property`` (or per-``n`` caches), so a
value no rule reaches is never computed.

Definitions (the rules in :mod:`assets.corpus.filters` rely on them):

- **lines**: ``text.split("\\n")``; **non-empty lines**: those lines, stripped, that are not empty
  (line rules compare and measure the stripped line).
- **paragraphs**: blocks separated by one or more blank lines.
- **tokens**: whitespace-separated tokens (``str.split()``); used only for the alphabetic-word share
  (Gopher: "words that contain at least one alphabetic character"), where a code token such as
  ``=``, ``->`` or ``42`` must count as a word without letters.
- **words**: the regex word tokenizer ``\\w+`` on the lowercased text (maximal runs of Unicode
  letters, digits, underscore and combining marks; ``"don't"`` gives ``don``, ``t``). A run holding
  characters of a script written without spaces (Chinese, Japanese, Thai: :mod:`assets.corpus.words`)
  is split again at ICU's dictionary word boundaries (``我们的系统`` gives ``我们``, ``的``, ``系统``).
  Word count, mean word length, stop words, unique words and word n-grams all use these words. Words
  are represented by 64-bit hashes computed with numpy over the code points, never as Python strings.
- **sentences**: a sentence end is a run of ``. ! ? …`` (and ``。！？ ؟ ۔ । ॥``) followed by up to two
  closing characters (``" ' ” ’ ) ]``) and then whitespace or the end of the text; ``。！？`` end a
  sentence without whitespace after them (Chinese and Japanese write none); a non-empty line that does
  not end in a sentence end adds one unterminated sentence. Abbreviations (``e.g. x``) over-count;
  decimals (``3.14``) and dotted names (``os.path``) do not.

- **English tokens** (``en_*``, datatrove's measures; read by rules with ``measure="datatrove"``): the
  tokens of :func:`assets.corpus.en_words.word_tokens` (spaCy's English rules: punctuation tokens count,
  contractions split, case kept). A **word token** holds a character outside datatrove's punctuation set;
  n-gram character counts are those of the tokens joined as datatrove joins them (``" "`` for the top
  n-gram, ``""`` for repeated n-grams).

The statistics expect normalized text (:func:`assets.corpus.filters.normalize_text`): no ``\\r``,
no trailing spaces. Other text is measured without error, with line-end facts approximate.
Code points above U+FFFF count as symbols (neither letters, word characters nor spaces).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from functools import cached_property, lru_cache
from itertools import repeat

import numpy as np

from crawl2serve.assets.corpus.en_words import (
    DT_PUNCTUATION,
    STOP_WORD_SET,
    chunk_facts,
    token_facts,
    tokens_of_chunk,
    word_tokens,
)
from crawl2serve.assets.corpus.words import (
    count_suffix_stop_words,
    has_no_space,
    split_no_space_tokens,
    split_no_space_words,
)

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher's English stop words
BULLET_PREFIXES = ("•", "‣", "◦", "●", "▪", "∙", "-", "*")
ELLIPSES = ("...", "…")

_SPACE, _LETTER, _WORD, _NEWLINE, _TERM, _CLOSER, _FULLWIDTH_TERM = 1, 2, 4, 8, 16, 32, 64
_ASTRAL = 0x10000  # every code point above the BMP shares this table slot (class 0: a symbol)
_SENTENCE_TERMINALS = ".!?…。！？؟۔।॥"
_FULLWIDTH_TERMINALS = "。！？"  # Chinese and Japanese put no space after a sentence
_CLOSERS = "\"'”’)]"
_PARAGRAPH_SPLIT = re.compile(r"\n(?:[ \t]*\n)+")

_P = 0x9E3779B97F4A7C15  # odd: invertible modulo 2**64
_P_INV = pow(_P, -1, 1 << 64)
_Q = 0xC2B2AE3D27D4EB4F  # n-gram combiner (odd)


def _build_tables() -> tuple[np.ndarray, np.ndarray]:
    classes = np.zeros(_ASTRAL + 1, dtype=np.uint8)
    lower = np.arange(_ASTRAL + 1, dtype=np.uint64)
    for cp in range(_ASTRAL):
        ch = chr(cp)
        c = 0
        if ch.isspace():
            c |= _SPACE
        if ch.isalpha():
            c |= _LETTER
        if ch.isalnum() or ch == "_" or unicodedata.category(ch)[0] == "M" or ch in "\u200c\u200d":
            c |= _WORD  # combining marks (Devanagari, Thai vowel signs) and ZWNJ/ZWJ (Persian) belong to their word
        lo = ch.lower()
        if len(lo) == 1:
            lower[cp] = ord(lo)
        classes[cp] = c
    classes[ord("\n")] |= _NEWLINE
    for ch in _SENTENCE_TERMINALS:
        classes[ord(ch)] |= _TERM
    for ch in _FULLWIDTH_TERMINALS:
        classes[ord(ch)] |= _FULLWIDTH_TERM
    for ch in _CLOSERS:
        classes[ord(ch)] |= _CLOSER
    return classes, lower


_CLASSES, _LOWER = _build_tables()
_DT_PUNCT = np.zeros(_ASTRAL, dtype=bool)  # BMP characters in datatrove's punctuation set
_DT_PUNCT[[ord(c) for c in DT_PUNCTUATION if ord(c) < _ASTRAL]] = True
# (P**i, P**-i) mod 2**64 for i < size; replaced whole (one assignment) when a longer text needs more.
_POWERS: tuple[np.ndarray, np.ndarray] = (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64))


def _power_table(base: int, size: int) -> np.ndarray:
    return np.cumprod(np.r_[np.uint64(1), np.full(size - 1, base, dtype=np.uint64)], dtype=np.uint64)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    global _POWERS
    powers = _POWERS
    if powers[0].size < n:
        size = max(n, 2 * powers[0].size, 1 << 16)
        powers = _POWERS = (_power_table(_P, size), _power_table(_P_INV, size))
    return powers


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads polynomial hashes over all 64 bits."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _run_bounds(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start index, length) of each run of equal values in a sorted, non-empty array."""
    new = np.empty(ordered.size, dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return starts, np.diff(starts, append=ordered.size)


def _runs(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, occurrences) of a sorted array."""
    if ordered.size == 0:
        return ordered, np.zeros(0, dtype=np.intp)
    starts, counts = _run_bounds(ordered)
    return ordered[starts], counts


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number, total length) of the items that repeat an earlier item."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


class TextStats:
    """Lazily computed measurements of one document's text; see the module docstring for definitions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.n_chars = len(text)
        self._ngram_hashes: dict[int, np.ndarray] = {}
        self._top_ngram: dict[int, tuple[int, int]] = {}
        self._runs_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._dup_ngram_chars: dict[int, int] = {}
        self._lines_ending: dict[tuple[str, ...], int] = {}

    # ----- characters --------------------------------------------------------------------------
    @cached_property
    def lower(self) -> str:
        """The lowercased text (for case-insensitive phrase checks)."""
        return self.text.lower()

    @cached_property
    def _codepoints(self) -> np.ndarray:
        return np.frombuffer(self.text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)

    @cached_property
    def _classes(self) -> np.ndarray:
        return _CLASSES.take(self._codepoints, mode="clip")  # code points > U+FFFF: the symbol slot

    @cached_property
    def _space(self) -> np.ndarray:
        return (self._classes & _SPACE).astype(bool)

    @cached_property
    def n_alpha_chars(self) -> int:
        """Alphabetic characters (``str.isalpha``)."""
        return int(np.count_nonzero(self._classes & _LETTER))

    @cached_property
    def n_nonspace_chars(self) -> int:
        return self.n_chars - int(np.count_nonzero(self._space))

    @cached_property
    def n_hashes(self) -> int:
        """Occurrences of ``#``."""
        return self.text.count("#")

    @cached_property
    def n_ellipses(self) -> int:
        """Occurrences of ``...`` (non-overlapping) plus ``…``."""
        return self.text.count("...") + self.text.count("…")

    @cached_property
    def n_newlines(self) -> int:
        return self.text.count("\n")

    # ----- whitespace tokens -------------------------------------------------------------------
    @cached_property
    def _token_starts(self) -> np.ndarray:
        nonspace = ~self._space
        starts = nonspace.copy()
        starts[1:] &= self._space[:-1]
        return starts

    @cached_property
    def n_tokens(self) -> int:
        """Whitespace-separated tokens."""
        return int(np.count_nonzero(self._token_starts))

    @cached_property
    def n_alpha_tokens(self) -> int:
        """Whitespace tokens holding at least one alphabetic character."""
        if self.n_tokens == 0:
            return 0
        letters = (self._classes & _LETTER).astype(bool)
        return int(np.count_nonzero(np.logical_or.reduceat(letters, np.flatnonzero(self._token_starts))))

    @cached_property
    def alpha_token_ratio(self) -> float:
        """Share of whitespace tokens with an alphabetic character (0.0 when there are none)."""
        return self.n_alpha_tokens / self.n_tokens if self.n_tokens else 0.0

    # ----- words (regex tokenizer \w+, lowercased, as hashes) ----------------------------------
    @cached_property
    def _word_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) code-point offsets of every word: runs of word characters, those holding
        characters of a script written without spaces (Han, kana, Thai...) split at ICU's word
        boundaries (:func:`assets.corpus.words.split_no_space_words`)."""
        padded = np.zeros(self._classes.size + 2, dtype=bool)
        np.not_equal(self._classes & _WORD, 0, out=padded[1:-1])
        change = np.flatnonzero(padded[1:] != padded[:-1])  # alternating word starts and ends
        if self.text.isascii():
            return change[0::2], change[1::2]
        return split_no_space_words(self.text, self._codepoints, change[0::2], change[1::2])

    @cached_property
    def n_words(self) -> int:
        return int(self._word_bounds[0].size)

    @cached_property
    def word_lengths(self) -> np.ndarray:
        starts, ends = self._word_bounds
        return ends - starts

    @cached_property
    def n_word_chars(self) -> int:
        """Characters inside words (the denominator of the n-gram repetition shares)."""
        return int(self.word_lengths.sum())

    @cached_property
    def mean_word_length(self) -> float:
        """Mean characters per word (0.0 without words)."""
        return self.n_word_chars / self.n_words if self.n_words else 0.0

    @cached_property
    def word_hashes(self) -> np.ndarray:
        """One uint64 per word, equal for equal lowercased words.

        A polynomial hash of the lowercased code points modulo 2**64 (prefix sums scaled by P**-i,
        so every word costs O(1) after one pass), then the splitmix64 finalizer. Two distinct words
        collide with probability about 2**-64; a collision could only merge two words' counts.
        """
        starts, ends = self._word_bounds
        if starts.size == 0:
            return np.zeros(0, dtype=np.uint64)
        n = self._codepoints.size
        pow_, pow_inv = _powers(n + 1)
        lowered = _LOWER.take(self._codepoints, mode="clip")
        prefix = np.empty(n + 1, dtype=np.uint64)
        prefix[0] = 0
        np.cumsum(lowered * pow_inv[:n], out=prefix[1:])
        # sum_{k} cp[s+k] * P^-k: the same value wherever the word occurs.
        h = (prefix[ends] - prefix[starts]) * pow_[starts]
        return _mix(h + (ends - starts).astype(np.uint64))

    @cached_property
    def _word_order(self) -> np.ndarray:
        return np.argsort(self.word_hashes, kind="stable")

    @cached_property
    def _word_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct word hashes, occurrences of each)."""
        return _runs(self.word_hashes[self._word_order])

    @cached_property
    def word_counts_at(self) -> np.ndarray:
        """Per word position: occurrences of that word in the document."""
        counts = self._word_counts[1]
        at = np.empty(self.n_words, dtype=np.intp)
        at[self._word_order] = np.repeat(counts, counts)
        return at

    @cached_property
    def repeated_words(self) -> np.ndarray:
        """Per word position: does that word occur more than once?"""
        return self.word_counts_at >= 2

    @cached_property
    def n_unique_words(self) -> int:
        return int(self._word_counts[0].size)

    @cached_property
    def n_stop_words(self) -> int:
        """Occurrences of Gopher's stop words (every occurrence counts)."""
        return self.n_stop_words_of(STOP_WORDS)

    def n_stop_words_of(self, stop_words: tuple[str, ...], match: str = "word") -> int:
        """Occurrences of ``stop_words`` (every occurrence counts), each stop word taken as the words
        it makes (``l'`` is the word ``l``; one holding no word character is never found).
        ``match="suffix"``: words ending with a stop word (Korean particles), see
        :func:`assets.corpus.words.count_suffix_stop_words`."""
        if match == "suffix":
            return count_suffix_stop_words(self.words, frozenset(s.lower() for s in stop_words))
        uniq, counts = self._word_counts
        stop = _stop_hashes(stop_words)
        if uniq.size == 0 or stop.size == 0:
            return 0
        at = np.minimum(np.searchsorted(uniq, stop), uniq.size - 1)
        return int(counts[at][uniq[at] == stop].sum())

    @cached_property
    def words(self) -> list[str]:
        """The words as lowercased strings (for rules that compare word text, not hashes)."""
        starts, ends = self._word_bounds
        low = self.lower
        return [low[a:b] for a, b in zip(starts.tolist(), ends.tolist())]

    @cached_property
    def _word_char_prefix(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.word_lengths)))

    def window_chars(self, n: int) -> np.ndarray:
        """Word characters in each window of ``n`` consecutive words."""
        prefix = self._word_char_prefix
        return prefix[n:] - prefix[:-n]

    def ngram_hashes(self, n: int) -> np.ndarray:
        """One uint64 per word n-gram (``n_words - n + 1`` of them; empty when fewer words)."""
        h = self._ngram_hashes.get(n)
        if h is None:
            if n == 1:
                h = self.word_hashes
            elif self.n_words < n:
                h = np.zeros(0, dtype=np.uint64)
            else:
                h = self.ngram_hashes(n - 1)[:-1] * np.uint64(_Q) + self.word_hashes[n - 1 :]
            self._ngram_hashes[n] = h
        return h

    def _ngram_runs(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(stable argsort of the n-gram hashes, start of each run of equal hashes in that order,
        run lengths). Within a run, positions ascend: the run's first entry is the first occurrence."""
        cached = self._runs_cache.get(n)
        if cached is None:
            h = self.ngram_hashes(n)
            order = np.argsort(h, kind="stable")
            cached = (order, *_run_bounds(h[order]))
            self._runs_cache[n] = cached
        return cached

    def top_ngram(self, n: int) -> tuple[int, int]:
        """(occurrences, word chars) of the most frequent word n-gram; ties go to the longest.

        ``(0, 0)`` with fewer than ``n`` words.
        """
        cached = self._top_ngram.get(n)
        if cached is None:
            if self.n_words < n:
                cached = (0, 0)
            else:
                order, run_starts, counts = self._ngram_runs(n)
                top = int(counts.max())
                first_positions = order[run_starts[counts == top]]
                cached = (top, int(self.window_chars(n)[first_positions].max()))
            self._top_ngram[n] = cached
        return cached

    def top_ngram_bound(self, n: int) -> int:
        """An upper bound on occurrences x word chars of the most frequent n-gram, without sorting.

        An n-gram occurs at most as often as each of its words, so every window's
        (smallest word count) x (word chars) bounds that n-gram's product. 0 with fewer than ``n``
        words.
        """
        if self.n_words < n:
            return 0
        counts = self.word_counts_at
        m = self.n_words - n + 1
        smallest = counts[:m].copy()
        for k in range(1, n):
            np.minimum(smallest, counts[k : k + m], out=smallest)
        return int((smallest * self.window_chars(n)).max())

    def duplicate_ngram_chars(self, n: int) -> int:
        """Word chars covered by repeated word n-grams (every occurrence after the first).

        Overlapping occurrences are counted once (positions are marked, then the marked words'
        characters are summed), so the value never exceeds :attr:`n_word_chars` and never grows
        with ``n``.
        """
        cached = self._dup_ngram_chars.get(n)
        if cached is None:
            cached = 0
            m = self.n_words - n + 1
            if m > 1:
                # A repeated n-gram is made of repeated words: only windows of n repeated words
                # can repeat; they are few in prose, so only they are sorted.
                not_rep = np.zeros(self.n_words + 1, dtype=np.int32)
                np.cumsum(~self.repeated_words, out=not_rep[1:])
                cand = np.flatnonzero(not_rep[n : n + m] == not_rep[:m])
                repeat_starts = cand[:0]
                if cand.size > 1:
                    hc = self.ngram_hashes(n)[cand]
                    order = np.argsort(hc, kind="stable")  # equal hashes: earliest position first
                    ordered = hc[order]
                    repeat_starts = cand[order[1:][ordered[1:] == ordered[:-1]]]
                if repeat_starts.size:
                    cover = np.zeros(self.n_words + 1, dtype=np.int32)
                    cover[repeat_starts] += 1
                    cover[repeat_starts + n] -= 1
                    cached = int(self.word_lengths[np.cumsum(cover[:-1]) > 0].sum())
            self._dup_ngram_chars[n] = cached
        return cached

    # ----- sentences ---------------------------------------------------------------------------
    @cached_property
    def _sentence_ends(self) -> tuple[int, int]:
        """(sentence ends, sentence ends that close their line)."""
        c = self._classes
        n = c.size
        term = np.flatnonzero(c & _TERM)
        if term.size == 0:
            return 0, 0

        def at(pos: np.ndarray) -> np.ndarray:  # classes at pos; past the end: space and newline
            return np.where(pos < n, c[np.minimum(pos, n - 1)], _SPACE | _NEWLINE)

        closed = at(term + 1)  # class of the first character after the terminator and its closers
        is_closer = (closed & _CLOSER) != 0
        if is_closer.any():
            after2 = at(term + 2)
            second = is_closer & ((after2 & _CLOSER) != 0)
            closed = np.where(is_closer, np.where(second, at(term + 3), after2), closed)
        ends = (closed & _SPACE) != 0
        fullwidth = (c[term] & _FULLWIDTH_TERM) != 0
        if fullwidth.any():  # 。！？ end a sentence without a space after them (the last of a run)
            ends |= fullwidth & ((closed & _TERM) == 0)
        return int(np.count_nonzero(ends)), int(np.count_nonzero(closed & _NEWLINE))

    @cached_property
    def sentence_count(self) -> int:
        n_ends, n_line_ends = self._sentence_ends
        return n_ends + len(self.non_empty_lines) - n_line_ends

    # ----- lines and paragraphs ----------------------------------------------------------------
    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @cached_property
    def non_empty_lines(self) -> list[str]:
        """Stripped lines that are not empty."""
        return [s for s in map(str.strip, self.lines) if s]

    @cached_property
    def n_line_chars(self) -> int:
        """Characters in the stripped non-empty lines."""
        return sum(map(len, self.non_empty_lines))

    @cached_property
    def _first_chars(self) -> str:
        """The first character of every non-empty line, in order."""
        return "".join([s[0] for s in self.non_empty_lines])

    @cached_property
    def _last_chars(self) -> str:
        """The last character of every non-empty line, in order."""
        return "".join([s[-1] for s in self.non_empty_lines])

    @cached_property
    def _sorted_line_lengths(self) -> list[int]:
        return sorted(map(len, self.non_empty_lines))

    @cached_property
    def n_bullet_lines(self) -> int:
        """Non-empty lines starting with a bullet (``BULLET_PREFIXES``)."""
        return sum(map(self._first_chars.count, BULLET_PREFIXES))

    @cached_property
    def n_ellipsis_lines(self) -> int:
        """Non-empty lines ending in ``...`` or ``…``."""
        return self.n_lines_ending_with(ELLIPSES)

    def n_lines_ending_with(self, endings: tuple[str, ...]) -> int:
        """Non-empty lines ending with one of ``endings`` (overlapping endings count a line once)."""
        n = self._lines_ending.get(endings)
        if n is None:
            if all(len(e) == 1 for e in endings):
                n = sum(map(self._last_chars.count, set(endings)))
            else:
                n = sum(map(str.endswith, self.non_empty_lines, repeat(endings)))
            self._lines_ending[endings] = n
        return n

    def n_short_lines(self, max_length: int) -> int:
        """Non-empty lines of at most ``max_length`` characters (stripped)."""
        return bisect_right(self._sorted_line_lengths, max_length)

    @cached_property
    def line_duplicates(self) -> tuple[int, int]:
        """(number, chars) of non-empty lines repeating an earlier line."""
        return _duplicates(self.non_empty_lines)

    @cached_property
    def paragraphs(self) -> list[str]:
        """Non-empty blocks separated by blank lines (whitespace-only lines count as blank)."""
        text = self.text.strip()
        if "\n\n\n" in text or " \n" in text or "\t" in text or "\r" in text:
            parts = _PARAGRAPH_SPLIT.split(text)
        else:  # normalized text: blank lines are exactly "\n\n"
            parts = text.split("\n\n")
        return [p for p in parts if p]

    @cached_property
    def n_paragraph_chars(self) -> int:
        return sum(map(len, self.paragraphs))

    @cached_property
    def paragraph_duplicates(self) -> tuple[int, int]:
        """(number, chars) of paragraphs repeating an earlier paragraph."""
        return _duplicates(self.paragraphs)

    # ----- datatrove 0.10.1's measures over English tokens -------------------------------------------
    @cached_property
    def en_tokens(self) -> list[str]:
        """datatrove's English word tokens (whitespace dropped); a token holding Chinese, Japanese or Thai
        is replaced by its ICU words (:func:`assets.corpus.words.split_no_space_tokens`)."""
        tokens = word_tokens(self.text)
        return tokens if self.text.isascii() else split_no_space_tokens(tokens)

    @cached_property
    def _en_spans(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(start offset of every token in ``"".join(tokens)`` plus the total length, per-token hashes,
        prefix sums of the scaled code points of the joined tokens, those code points)."""
        tokens = self.en_tokens
        starts = np.zeros(len(tokens) + 1, dtype=np.int64)
        if tokens:
            np.cumsum(np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)), out=starts[1:])
        cp = np.frombuffer("".join(tokens).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        pow_, pow_inv = _powers(cp.size + 1)
        prefix = np.zeros(cp.size + 1, dtype=np.uint64)
        np.cumsum(cp.astype(np.uint64) * pow_inv[: cp.size], out=prefix[1:])
        return starts, self._span_hash(prefix, starts[:-1], starts[1:]), prefix, cp

    @staticmethod
    def _span_hash(prefix: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Hash of the joined-token characters [a, b): equal for equal strings (with their length)."""
        return _mix((prefix[b] - prefix[a]) * _POWERS[0][a] + (b - a).astype(np.uint64))

    @cached_property
    def _en_facts(self) -> tuple[int, int, int, int]:
        """(tokens, word tokens, characters of word tokens, tokens holding a letter)."""
        starts, _, _, cp = self._en_spans
        n = starts.size - 1
        if n == 0:
            return 0, 0, 0, 0
        if int(cp.max()) >= _ASTRAL:  # astral characters: per chunk, in Python
            if self._no_space:
                return token_facts(self.en_tokens)
            facts = [chunk_facts(c) for c in self.text.split()]
            return tuple(sum(f[i] for f in facts) for i in range(4))  # type: ignore[return-value]
        first = starts[:-1]
        word = np.logical_or.reduceat(~_DT_PUNCT.take(cp), first)
        alpha = np.logical_or.reduceat((_CLASSES.take(cp) & _LETTER).astype(bool), first)
        lengths = np.diff(starts)
        return n, int(word.sum()), int(lengths[word].sum()), int(alpha.sum())

    @property
    def n_en_tokens(self) -> int:
        if "_en_spans" in self.__dict__ or "en_tokens" in self.__dict__ or self._no_space:
            return len(self.en_tokens)
        return sum(map(len, map(tokens_of_chunk, self.text.split())))  # counting only: no token list

    @property
    def n_en_words(self) -> int:
        """Tokens holding a character outside datatrove's punctuation set (Gopher's word count)."""
        return self._en_facts[1]

    @property
    def mean_en_word_length(self) -> float:
        """Mean characters per word token (0.0 without any)."""
        return self._en_facts[2] / self._en_facts[1] if self._en_facts[1] else 0.0

    @property
    def n_en_alpha_tokens(self) -> int:
        """Tokens holding an alphabetic character (``str.isalpha``)."""
        return self._en_facts[3]

    @cached_property
    def en_stop_words(self) -> frozenset[str]:
        """The distinct Gopher stop words among the tokens, case-sensitive (``The`` is not ``the``)."""
        return STOP_WORD_SET.intersection(self.en_tokens)

    def n_en_stop_words_of(self, stop_words: tuple[str, ...], match: str = "word") -> int:
        """The number of distinct ``stop_words`` among the tokens, case-sensitive (datatrove's rule);
        ``match="suffix"``: distinct stop words that end a token (Korean particles)."""
        if match == "suffix":
            return count_suffix_stop_words(self.en_tokens, frozenset(stop_words), distinct=True)
        if stop_words == STOP_WORDS:
            return len(self.en_stop_words)
        return len(frozenset(stop_words).intersection(self.en_tokens))

    @cached_property
    def _no_space(self) -> bool:
        """Does the text hold characters of a script written without spaces?"""
        return not self.text.isascii() and has_no_space(self.text)

    @cached_property
    def _en_token_counts(self) -> np.ndarray:
        """Per token position: occurrences of that token in the document."""
        _, token_hash, _, _ = self._en_spans
        order = np.argsort(token_hash, kind="stable")
        if order.size == 0:
            return np.zeros(0, dtype=np.intp)
        _, counts = _run_bounds(token_hash[order])
        at = np.empty(order.size, dtype=np.intp)
        at[order] = np.repeat(counts, counts)
        return at

    def _en_window_chars(self, n: int) -> np.ndarray:
        """Characters of every window of ``n`` tokens, joined without separators."""
        starts = self._en_spans[0]
        return starts[n:] - starts[:-n]

    def en_top_ngram_bound(self, n: int) -> int:
        """An upper bound on :meth:`en_top_ngram_chars` without counting n-grams: an n-gram occurs at most as
        often as its rarest token (0 with fewer than ``n`` tokens)."""
        m = len(self.en_tokens) - n + 1
        if m <= 0:
            return 0
        counts = self._en_token_counts
        smallest = counts[:m].copy()
        for k in range(1, n):
            np.minimum(smallest, counts[k : k + m], out=smallest)
        return int((smallest * (self._en_window_chars(n) + (n - 1))).max())

    def en_top_ngram_chars(self, n: int) -> int:
        """datatrove's top n-gram measure: ``len(" ".join(top)) * count`` for the most frequent token
        n-gram (ties: the one seen first); 0 with fewer than ``n`` tokens. A single occurrence counts."""
        cached = self._top_ngram.get(-n)
        if cached is None:
            starts, token_hash, _, _ = self._en_spans
            m = len(self.en_tokens) - n + 1
            if m <= 0:
                cached = (0, 0)
            else:
                h = token_hash[:m].copy()
                for k in range(1, n):
                    h = h * np.uint64(_Q) + token_hash[k : k + m]
                order = np.argsort(h, kind="stable")
                run_starts, counts = _run_bounds(h[order])
                top = int(counts.max())
                first = int(order[run_starts[counts == top]].min())  # each run lists positions ascending
                cached = (top, int(starts[first + n] - starts[first]) + n - 1)
            self._top_ngram[-n] = cached
        return cached[0] * cached[1]

    def en_duplicate_ngram_chars(self, n: int) -> int:
        """datatrove's repeated n-gram measure: scanning token positions left to right, an n-gram (its
        tokens joined with ``""``) seen before at a visited position adds its characters and the scan jumps
        ``n`` tokens ahead (the skipped positions are never recorded); otherwise it is recorded and the scan
        moves one token."""
        cached = self._dup_ngram_chars.get(-n)
        if cached is None:
            cached = 0
            starts, _, prefix, _ = self._en_spans
            m = len(self.en_tokens) - n + 1
            if m > 1:
                # An n-gram that occurs twice has only repeated tokens (equal strings of the same tokens;
                # datatrove's "" join could also equate different splits of one string, which no tokenizer
                # run produces for two windows of equal text), so only such windows are hashed and sorted.
                not_rep = np.zeros(len(self.en_tokens) + 1, dtype=np.int32)
                np.cumsum(self._en_token_counts < 2, out=not_rep[1:])
                cand = np.flatnonzero(not_rep[n : n + m] == not_rep[:m])
                if cand.size > 1:
                    h = self._span_hash(prefix, starts[cand], starts[cand + n])
                    order = np.argsort(h, kind="stable")
                    ordered = h[order]
                    same = ordered[1:] == ordered[:-1]
                    repeated = np.zeros(cand.size, dtype=bool)
                    repeated[order[1:][same]] = True
                    repeated[order[:-1][same]] = True
                    # Positions whose n-gram occurs once are recorded and passed, changing nothing later.
                    pos = cand[repeated]
                    if pos.size:
                        hv = h[repeated].tolist()
                        chars = (starts[pos + n] - starts[pos]).tolist()
                        seen: set[int] = set()
                        nxt = 0
                        for p, v, c in zip(pos.tolist(), hv, chars):
                            if p < nxt:
                                continue
                            if v in seen:
                                cached += c
                                nxt = p + n
                            else:
                                seen.add(v)
                                nxt = p + 1
            self._dup_ngram_chars[-n] = cached
        return cached


@lru_cache(maxsize=256)
def _stop_hashes(stop_words: tuple[str, ...]) -> np.ndarray:
    """Sorted distinct hashes of the stop words that make exactly one word each."""
    hashes = [TextStats(w).word_hashes for w in stop_words]
    return np.unique(np.array([h[0] for h in hashes if h.size == 1], dtype=np.uint64))
