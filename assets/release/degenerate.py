"""Is a generation text or noise? :func:`degeneracy` names what makes an output degenerate (no framework).

An untrained model's greedy answers are the typical cases: ``',,,,,,,,,,,,,,,,'`` (punctuation only),
``'kikikikikikiki'`` (one short unit repeated), ``' 9 9 9 9 9'`` (one token repeated), and loops such as
``'the module and the module and the module and'`` (a repeated n-gram filling the output, few distinct
words). Each rule is a property of the text alone, so it works for any tokenizer and any model.
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["degeneracy", "distinct_n"]

WORD = re.compile(r"\w+")
MIN_WORDS_FOR_DISTINCT = 8  # distinct-n and n-gram rules need this many words to mean anything
MIN_DISTINCT_1 = 0.3  # unique words / words
MIN_DISTINCT_2 = 0.5  # unique word bigrams / bigrams
MAX_NGRAM_COVERAGE = 0.5  # words covered by the most frequent word 3-gram's occurrences
MIN_CHARS_FOR_PERIOD = 8
MIN_REPEATS = 3  # a unit must repeat at least this often to count as filling the output
PERIOD_AGREEMENT = 0.9  # share of characters equal to the character one period later
MAX_WHITESPACE_SHARE = 0.6  # prose holds ~15-20% whitespace, indented code rarely more than half


def distinct_n(words: list[str], n: int) -> float:
    """Distinct n-gram ratio: unique n-grams / n-grams of ``words`` (1.0 when there is no n-gram)."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def _repeating_unit(text: str) -> int | None:
    """The shortest period p (repeated at least :data:`MIN_REPEATS` times) such that at least
    :data:`PERIOD_AGREEMENT` of the characters equal the one p further on; ``None`` if there is none."""
    n = len(text)
    for period in range(1, n // MIN_REPEATS + 1):
        same = sum(a == b for a, b in zip(text, text[period:]))
        if same >= PERIOD_AGREEMENT * (n - period):
            return period
    return None


def degeneracy(text: str) -> list[str]:
    """The reasons ``text`` is degenerate; an empty list when it reads like text.

    Rules, in order (all that apply are named):

    * ``empty``: nothing but whitespace;
    * ``no_words``: no letter or digit at all (whitespace and punctuation only);
    * ``whitespace_filled``: at least 8 characters, more than 60% of them whitespace (`` the\n\n\n\n...``);
    * ``one_token_repeated``: three or more words, all the same;
    * ``repeating_unit``: the text (stripped, at least 8 characters) is one unit repeated at least three
      times (90% of characters equal the one a period later): ``kikiki``, ``, , , ``, a looping phrase;
    * ``low_distinct_1`` / ``low_distinct_2``: with 8+ words, unique words / words below 0.3, or unique
      bigrams / bigrams below 0.5;
    * ``repeated_ngram``: with 8+ words, the most frequent word 3-gram, repeated, covers half of the words.
    """
    stripped = text.strip()
    if not stripped:
        return ["empty"]
    reasons = []
    if not any(c.isalnum() for c in stripped):
        reasons.append("no_words")
    if len(text) >= MIN_CHARS_FOR_PERIOD and sum(c.isspace() for c in text) > MAX_WHITESPACE_SHARE * len(text):
        reasons.append("whitespace_filled")
    words = [w.lower() for w in WORD.findall(stripped)]
    if len(words) >= MIN_REPEATS and len(set(words)) == 1:
        reasons.append("one_token_repeated")
    if len(stripped) >= MIN_CHARS_FOR_PERIOD and _repeating_unit(stripped) is not None:
        reasons.append("repeating_unit")
    if len(words) >= MIN_WORDS_FOR_DISTINCT:
        if distinct_n(words, 1) < MIN_DISTINCT_1:
            reasons.append("low_distinct_1")
        if distinct_n(words, 2) < MIN_DISTINCT_2:
            reasons.append("low_distinct_2")
        trigrams = Counter(tuple(words[i : i + 3]) for i in range(len(words) - 2))
        top = trigrams.most_common(1)[0][1]
        if top > 1 and 3 * top >= MAX_NGRAM_COVERAGE * len(words):
            reasons.append("repeated_ngram")
    return reasons
