"""Regex surgery that makes many rules cheap to match on long texts, without changing what they match.

CPython's ``re`` scans a text fast (a C loop, like ``str.find``) only for a pattern that starts with a
literal string; a pattern that starts with ``\\b(?:ignore|disregard|...)`` is tried at every position,
which costs about a millisecond per pattern on a 32,000-character prompt. :func:`split_branches`
rewrites a pattern as a list of patterns, one per alternative of its leading alternation, each starting
with that alternative's literal word; a leading ``\\b`` or lookbehind moves behind the literal (``\\bdo``
becomes ``do(?<!\\wdo)``), so the union of the branches matches exactly where the pattern does.
:func:`pattern_anchors` gives the literal words that every match of a pattern starts with (a cheap
substring gate for a pattern that cannot be split).

Only what the rule table uses is understood: literals, escapes, classes, non-capturing groups,
alternation, quantifiers, ``\\b`` and fixed-width lookbehinds. Anything else leaves the pattern whole.
"""

from __future__ import annotations

_META = set("\\()[]{}?*+|.^$")


def _structure(source: str, start: int = 0):
    """``(index, character, depth)`` of each unescaped character of ``source`` from ``start`` that is outside a
    character class, with the group depth after it ("(" counts in, ")" counts out)."""
    depth, i, in_class = 0, start, False
    while i < len(source):
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        else:
            depth += (c == "(") - (c == ")")
            yield i, c, depth
        i += 1


def _split_top(source: str) -> list[str] | None:
    """``source`` split at its top-level "|" (None if its parentheses do not balance)."""
    parts, begin, depth = [], 0, 0
    for i, c, depth in _structure(source):
        if depth < 0:
            return None
        if c == "|" and depth == 0:
            parts.append(source[begin:i])
            begin = i + 1
    return parts + [source[begin:]] if depth == 0 else None


def _group_end(source: str, start: int) -> int | None:
    """Index just after the group whose "(" is at ``start``."""
    for i, c, depth in _structure(source, start):
        if c == ")" and depth == 0:
            return i + 1
    return None


def pattern_anchors(source: str) -> set[str] | None:
    """The literal strings one of which every match of ``source`` starts with, or None when there is no
    such set (the row is then always tried). Leading word boundaries and lookbehinds are skipped; only
    plain alternations, non-capturing groups and literal characters are read, anything else gives None."""
    alternatives = _split_top(source)
    if alternatives is None:
        return None
    if len(alternatives) > 1:
        out: set[str] = set()
        for alt in alternatives:
            heads = pattern_anchors(alt)
            if not heads:
                return None
            out |= heads
        return out
    while True:
        if source.startswith("\\b"):
            source = source[2:]
        elif source.startswith(("(?<!", "(?<=")):
            end = _group_end(source, 0)
            if end is None:
                return None
            source = source[end:]
        else:
            break
    if source.startswith("(?:"):
        end = _group_end(source, 0)
        if end is None or source[end : end + 1] in ("?", "*", "{"):
            return None
        return pattern_anchors(source[3 : end - 1])
    literal, i = [], 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            nxt = source[i + 1 : i + 2]
            if not nxt or nxt.isalnum():
                break
            step = 2
        elif c in _META:
            break
        else:
            nxt, step = c, 1
        quantifier = source[i + step : i + step + 1]
        if quantifier in ("?", "*", "{"):
            break
        literal.append(nxt)
        i += step
        if quantifier == "+":
            break
    return {"".join(literal)} if literal else None


def _leading_literal(source: str) -> tuple[str, str, str] | None:
    """(literal text, its source, the rest of the source) for the literal run ``source`` starts with; a
    character under a quantifier stays in the rest. None when there is no literal run."""
    literal, i = [], 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            nxt = source[i + 1 : i + 2]
            if not nxt or nxt.isalnum():
                break
            step = 2
        elif c in _META:
            break
        else:
            nxt, step = c, 1
        if source[i + step : i + step + 1] in ("?", "*", "{", "+"):
            break
        literal.append(nxt)
        i += step
    return ("".join(literal), source[:i], source[i:]) if literal else None


def split_branches(source: str) -> list[tuple[str, str, bool]] | None:
    """(branch, its leading literal, whether that literal starts a word) for patterns whose union matches
    where ``source`` does, each starting with its literal (:func:`branch_literal_source` gives it as
    written in the branch); None when the pattern does not have that shape (it is then used whole)."""
    alternatives = _split_top(source)
    if alternatives is None:
        return None
    if len(alternatives) > 1:
        out: list[tuple[str, str, bool]] = []
        for alt in alternatives:
            branches = split_branches(alt)
            if branches is None:
                return None
            out += branches
        return out
    asserts: list[str] = []  # what must hold just before the literal: "\\b" or a lookbehind
    while True:
        if source.startswith("\\b"):
            asserts.append("\\b")
            source = source[2:]
        elif source.startswith(("(?<!", "(?<=")):
            end = _group_end(source, 0)
            if end is None:
                return None
            asserts.append(source[:end])
            source = source[end:]
        else:
            break
    if source.startswith("(?:"):
        end = _group_end(source, 0)
        if end is None or source[end : end + 1] in ("?", "*", "{", "+"):
            return None
        inner = split_branches(source[3 : end - 1])
        if inner is None:
            return None
        tail = source[end:]
        # each inner branch is a sequence (no top-level "|"), so appending the tail keeps its meaning
        out = []
        for branch, _, _ in inner:
            branches = split_branches("".join(asserts) + branch + tail)
            if branches is None:
                return None
            out += branches
        return out
    lead = _leading_literal(source)
    if lead is None:
        return None
    text, lit_source, rest = lead
    word = text[0].isalnum() or text[0] == "_"
    behind, word_start = [], False
    for a in asserts:
        if a == "\\b":
            behind.append(f"(?<!\\w{lit_source})" if word else f"(?<=\\w{lit_source})")
            word_start = word_start or word
        else:  # (?<!P) before the literal L is (?<!PL) after it: P is fixed-width, so is PL
            behind.append(a[:4] + a[4:-1] + lit_source + ")")
    return [(lit_source + "".join(behind) + rest, text, word_start)]


def branch_literal_source(branch: str) -> str:
    """The source of the literal a branch from :func:`split_branches` starts with (escapes included)."""
    lead = _leading_literal(branch)
    return lead[1] if lead else ""
