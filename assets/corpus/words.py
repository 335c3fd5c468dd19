"""Word segmentation for scripts written without spaces between words (framework-free).

The corpus rules count words with a regex rule (maximal runs of word characters, see
:mod:`assets.corpus.text_stats`). Chinese, Japanese and Thai put no space between words, so that rule
makes a whole clause one "word": a Chinese page of 3,000 words counts ~100, its mean "word" length is
~30 characters, and its stop words (的, 是, 在...) never stand alone. Here, every regex word holding a
character of such a script (:data:`NO_SPACE_SCRIPTS`: Han, Hiragana, Katakana, Thai, Lao, Khmer,
Myanmar) is split again at the word boundaries of ICU's word break iterator (Unicode UAX #29 plus
ICU's dictionary-based break engines: the CJ dictionary for Han and kana, Thai and Lao dictionaries),
through ``icu4py`` (ICU 78 with its data inside the wheel; nothing is downloaded). Words of other
scripts are left exactly as the regex rule makes them, so English and other space-separated text is
measured as before.

Measured (``bench/bench_words.py``, README) on real text, boundary F1 inside runs of the script against
dictionary segmenters too big to ship: 0.85 against jieba (Chinese), 0.93 against Janome (Japanese), 0.87
against PyThaiNLP's ``newmm`` (Thai); ICU runs at 10-14M characters/s. This ICU build segments Han, kana,
Thai and Lao; Khmer and Myanmar text comes back unsplit (no dictionaries for them), as whole runs, as before.

Korean is written with spaces between eojeol (a word with its particles attached) and is not split;
:func:`count_suffix_stop_words` matches FineWeb-2's Korean stop words (particles and endings) at the
end of eojeol instead.

Offsets are code points (Python string indices); ICU reports UTF-16 offsets, converted here.
"""

from __future__ import annotations

import numpy as np
from icu4py.breakers import WordBreaker

__all__ = [
    "NO_SPACE_SCRIPTS",
    "count_suffix_stop_words",
    "has_no_space",
    "icu_words",
    "is_no_space",
    "line_word_count",
    "longest_word",
    "split_no_space_tokens",
    "split_no_space_words",
]

# (first, last) code point of each block whose script writes no spaces between words.
NO_SPACE_SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "Han": (
        (0x2E80, 0x2FDF),
        (0x3005, 0x3007),
        (0x3021, 0x3029),
        (0x3038, 0x303B),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xF900, 0xFAFF),
        (0x20000, 0x323AF),
    ),
    "Hiragana": ((0x3040, 0x309F),),
    "Katakana": ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F)),
    "Thai": ((0x0E00, 0x0E7F),),
    "Lao": ((0x0E80, 0x0EFF),),
    "Khmer": ((0x1780, 0x17FF), (0x19E0, 0x19FF)),
    "Myanmar": ((0x1000, 0x109F), (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F)),
}
_BMP = 0x10000
_NO_SPACE = np.zeros(_BMP + 1, dtype=bool)  # slot _BMP: every astral code point (clipped)
for _ranges in NO_SPACE_SCRIPTS.values():
    for _lo, _hi in _ranges:
        if _lo < _BMP:
            _NO_SPACE[_lo : min(_hi, _BMP - 1) + 1] = True
_ASTRAL_RANGES = tuple(r for rs in NO_SPACE_SCRIPTS.values() for r in rs if r[0] >= _BMP)


def is_no_space(codepoints: np.ndarray) -> np.ndarray:
    """Per code point: does it belong to a script written without spaces (:data:`NO_SPACE_SCRIPTS`)?"""
    out = _NO_SPACE.take(codepoints, mode="clip")
    if out.size and codepoints.max() >= _BMP:
        astral = codepoints >= _BMP
        hit = np.zeros(codepoints.size, dtype=bool)
        for lo, hi in _ASTRAL_RANGES:
            hit |= (codepoints >= lo) & (codepoints <= hi)
        out = np.where(astral, hit, out)
    return out


def has_no_space(text: str) -> bool:
    """Does ``text`` hold a character of a script written without spaces?"""
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return bool(is_no_space(cp).any())


_has_no_space = has_no_space


def icu_boundaries(text: str, codepoints: np.ndarray | None = None) -> np.ndarray:
    """Code-point offsets of ICU's word boundaries in ``text`` (0 and ``len(text)`` included), sorted.

    The root locale: ICU picks its break engine by script, so the language makes no difference.
    """
    starts = [s for s, _ in WordBreaker(text, "").segments()]
    utf16 = np.array(starts + [len(text.encode("utf-16-le", "surrogatepass")) // 2], dtype=np.int64)
    if codepoints is None:
        codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if codepoints.size and codepoints.max() >= _BMP:  # astral characters take two UTF-16 units
        units = np.zeros(codepoints.size + 1, dtype=np.int64)
        np.cumsum(np.where(codepoints >= _BMP, 2, 1), out=units[1:])
        utf16 = np.searchsorted(units, utf16)
    return utf16


def split_no_space_words(
    text: str, codepoints: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Word bounds ``(starts, ends)`` with every word that holds a no-space-script character split at
    ICU's word boundaries inside it; other words are unchanged. Returns the inputs themselves when no
    word needs splitting."""
    if starts.size == 0:
        return starts, ends
    mask = is_no_space(codepoints)
    if not mask.any():
        return starts, ends
    prefix = np.zeros(mask.size + 1, dtype=np.int64)
    np.cumsum(mask, out=prefix[1:])
    flagged = prefix[ends] > prefix[starts]
    if not flagged.any():
        return starts, ends
    # ICU reads only the flagged words, one per line (a word's edges are boundaries anyway), so the
    # spaces, punctuation and Latin words between them cost nothing.
    ws, we = starts[flagged], ends[flagged]
    joined = "\n".join([text[a:b] for a, b in zip(ws.tolist(), we.tolist())])
    at = np.zeros(ws.size, dtype=np.int64)  # where each flagged word starts in ``joined``
    np.cumsum(we[:-1] - ws[:-1] + 1, out=at[1:])
    b = icu_boundaries(joined)
    word = np.searchsorted(at, b, side="right") - 1
    inner = (word >= 0) & (b > at[word]) & (b < at[word] + (we - ws)[word])
    cuts = ws[word[inner]] + (b[inner] - at[word[inner]])
    if cuts.size == 0:
        return starts, ends
    return np.sort(np.concatenate((starts, cuts))), np.sort(np.concatenate((ends, cuts)))


def icu_words(text: str) -> list[str]:
    """ICU's word segments of ``text`` that are not whitespace (punctuation segments included)."""
    return [w for w in WordBreaker(text, "") if not w.isspace()]


def line_word_count(line: str, at_least: int | None = None) -> int:
    """Words of one line: whitespace tokens, a token holding no-space-script characters counting as the
    ICU segments that hold a word character. With ``at_least``, counting may stop once it is reached."""
    tokens = line.split()
    if at_least is not None and len(tokens) >= at_least:
        return len(tokens)
    if not _has_no_space(line):
        return len(tokens)
    n = 0
    for token in tokens:
        if _has_no_space(token):
            n += sum(1 for w in WordBreaker(token, "") if any(c.isalnum() or c == "_" for c in w))
        else:
            n += 1
    return n


def split_no_space_tokens(tokens: list[str]) -> list[str]:
    """``tokens`` with each token holding no-space-script characters replaced by its ICU segments
    (whitespace dropped); other tokens are unchanged."""
    if not any(_has_no_space(t) for t in tokens):
        return tokens
    out: list[str] = []
    for t in tokens:
        if _has_no_space(t):
            out.extend(icu_words(t))
        else:
            out.append(t)
    return out


def count_suffix_stop_words(words: list[str], stop_words: frozenset[str], *, distinct: bool = False) -> int:
    """Stop words counted at the end of words (Korean eojeol: the particle or ending that a word ends
    with): every word ending with one of ``stop_words`` counts once (``distinct``: the number of
    different stop words found)."""
    if not stop_words:
        return 0
    lengths = sorted({len(s) for s in stop_words}, reverse=True)
    found: set[str] = set()
    n = 0
    for w in words:
        for k in lengths:
            if len(w) >= k and w[-k:] in stop_words:
                n += 1
                found.add(w[-k:])
                break
    return len(found) if distinct else n


def longest_word(line: str) -> int:
    """Characters of the longest word of a line: its longest whitespace token, a token holding
    no-space-script characters measured by its longest ICU segment."""
    longest = 0
    for token in line.split():
        if len(token) > longest:
            longest = max(longest, max(map(len, icu_words(token)), default=0) if _has_no_space(token) else len(token))
    return longest
