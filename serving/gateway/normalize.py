"""Normalization of prompts before the injection rules match them: undo the cheap disguises.

An attacker who knows that a filter looks for "ignore previous instructions" writes it in fullwidth
letters, with Cyrillic look-alikes, with zero-width spaces inside the words, in leetspeak, spaced out
letter by letter, or base64/hex/URL-encoded. :func:`views` turns one prompt into the few texts the
rules should see:

1. :func:`normalize` (always): invisible characters removed (:data:`INVISIBLE`), NFKC (fullwidth and
   mathematical letters become ASCII, ligatures are split), Cyrillic/Greek/other look-alikes mapped
   to Latin inside words that are not genuinely in that script (:func:`map_confusables`), runs of
   spaces and tabs collapsed.
2. :func:`deobfuscate` (only when it changes something): the first view with markdown emphasis
   removed, spaced-out words joined ("i g n o r e", "i.g.n.o.r.e") and leetspeak digits read as
   letters in words that mix both ("1gn0r3" -> "ignore"). A second view and not the first, because
   it garbles honest text ("h264", "U.S.A.").
3. :func:`decoded_runs` (only when there are any): base64 runs, hex runs (contiguous, ``\\x``-escaped
   or space-separated bytes), URL-encoding, ASCII smuggled in Unicode tag characters, and ROT13 when
   the prompt says "rot13"; a decoding is kept only when it is printable text. Bounded: at most
   :data:`MAX_DECODED_RUNS` runs, each from at most :data:`MAX_RUN_CHARS` characters, two levels
   deep (base64 of base64), so a 32,000-character prompt costs milliseconds.

None of this is sent to the model; it only feeds the matcher. Every regex here is linear in the
length of the text (no nested quantifiers over overlapping classes; word-start lookbehinds keep the
run regexes from restarting inside a run).
"""

from __future__ import annotations

import binascii
import codecs
import re
import unicodedata
import urllib.parse

MAX_DECODED_RUNS = 16
MAX_RUN_CHARS = 4096
MAX_DEPTH = 2
MAX_ATTEMPTS = 256
MAX_LEET_TOKEN = 24

# -- invisible characters -------------------------------------------------------------------------

_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x0640, 0x0640),  # Arabic tatweel (stretches a word: "تـــجاهل")
    (0x064B, 0x065F),  # Arabic harakat (optional vowel marks)
    (0x0670, 0x0670),  # Arabic superscript alef
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels (invisible)
    (0x180B, 0x180F),  # Mongolian free variation selectors and vowel separator
    (0x200B, 0x200F),  # zero-width space, ZWNJ, ZWJ, LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x2064),  # word joiner, invisible operators
    (0x2066, 0x206F),  # bidi isolates, deprecated format characters
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space / BOM
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF9, 0xFFFB),  # interlinear annotation controls
    (0x1D173, 0x1D17A),  # musical symbol format controls
    (0xE0000, 0xE007F),  # tag characters (also decoded: see decoded_runs)
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
INVISIBLE: frozenset[int] = frozenset(c for lo, hi in _INVISIBLE_RANGES for c in range(lo, hi + 1))
_STRIP_INVISIBLE = dict.fromkeys(INVISIBLE)
_HAS_INVISIBLE = re.compile(
    "[" + "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in _INVISIBLE_RANGES) + "]"
)


def strip_invisible(text: str) -> str:
    """Remove zero-width, bidi-control, soft-hyphen, variation-selector and tag characters."""
    return text.translate(_STRIP_INVISIBLE) if _HAS_INVISIBLE.search(text) else text


# -- look-alike letters -----------------------------------------------------------------------------

# Letters of other scripts that render like a Latin letter in common fonts (a compact subset of the
# Unicode confusables data, UTS #39, for the scripts seen in attacks: Cyrillic, Greek, Armenian,
# Cherokee, IPA and Latin small capitals). NFKC runs first, so fullwidth, mathematical and circled
# letters need no entry.
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a",
    "е": "e",
    "ё": "e",
    "о": "o",
    "р": "p",
    "с": "c",
    "у": "y",
    "х": "x",
    "ѕ": "s",
    "і": "i",
    "ї": "i",
    "ј": "j",
    "ԁ": "d",
    "һ": "h",
    "ԛ": "q",
    "ԝ": "w",
    "ӏ": "l",
    "ү": "y",
    "А": "A",
    "В": "B",
    "Е": "E",
    "Ё": "E",
    "К": "K",
    "М": "M",
    "Н": "H",
    "О": "O",
    "Р": "P",
    "С": "C",
    "Т": "T",
    "У": "Y",
    "Х": "X",
    "Ѕ": "S",
    "І": "I",
    "Ї": "I",
    "Ј": "J",
    "Ԁ": "D",
    "Һ": "H",
    "Ԛ": "Q",
    "Ԝ": "W",
    "Ӏ": "I",
    "Ү": "Y",
    # Greek
    "α": "a",
    "ο": "o",
    "ρ": "p",
    "ι": "i",
    "κ": "k",
    "ν": "v",
    "υ": "u",
    "χ": "x",
    "ϲ": "c",
    "ϳ": "j",
    "ό": "o",
    "ί": "i",
    "Α": "A",
    "Β": "B",
    "Ε": "E",
    "Ζ": "Z",
    "Η": "H",
    "Ι": "I",
    "Κ": "K",
    "Μ": "M",
    "Ν": "N",
    "Ο": "O",
    "Ρ": "P",
    "Τ": "T",
    "Υ": "Y",
    "Χ": "X",
    "Ϲ": "C",
    # Armenian
    "օ": "o",
    "ս": "u",
    "հ": "h",
    "ո": "n",
    "ց": "g",
    "զ": "q",
    "Տ": "S",
    "Օ": "O",
    # Latin letters outside ASCII that NFKC keeps: dotless and dotted i, IPA, small capitals
    "ı": "i",
    "İ": "I",
    "ȷ": "j",
    "ɑ": "a",
    "ɡ": "g",
    "ɩ": "i",
    "ɪ": "i",
    "ʏ": "y",
    "ᴀ": "a",
    "ʙ": "b",
    "ᴄ": "c",
    "ᴅ": "d",
    "ᴇ": "e",
    "ɢ": "g",
    "ʜ": "h",
    "ᴊ": "j",
    "ᴋ": "k",
    "ʟ": "l",
    "ᴍ": "m",
    "ɴ": "n",
    "ᴏ": "o",
    "ᴘ": "p",
    "ʀ": "r",
    "ꜱ": "s",
    "ᴛ": "t",
    "ᴜ": "u",
    "ᴠ": "v",
    "ᴡ": "w",
    "ᴢ": "z",
    # Cherokee capitals
    "Ꭺ": "A",
    "Ᏼ": "B",
    "Ꮯ": "C",
    "Ꭼ": "E",
    "Ꮋ": "H",
    "Ꮶ": "K",
    "Ꮇ": "M",
    "Ꮲ": "P",
    "Ꮪ": "S",
    "Ꭲ": "T",
}
# Looser look-alikes (a lowercase Cyrillic т is a small capital T, п an n, г an r, н a small capital H,
# к a small capital K, м a small capital M, в a small capital B): mapped only inside a word that also
# holds Latin letters, never in a word of Cyrillic alone, which is real Russian far more often.
LOOSE_CONFUSABLES: dict[str, str] = {
    "т": "t",
    "п": "n",
    "г": "r",
    "н": "h",
    "к": "k",
    "м": "m",
    "в": "b",
    "ь": "b",
    "η": "n",
    "τ": "t",
    "ε": "e",
    "γ": "y",
    "ω": "w",
}
_CONFUSABLE_TABLE = str.maketrans(CONFUSABLES | LOOSE_CONFUSABLES)
_STRICT_TABLE = str.maketrans(CONFUSABLES)
_CONFUSABLE_CLASS = "[" + "".join(re.escape(c) for c in CONFUSABLES | LOOSE_CONFUSABLES) + "]"
_STRICT_CLASS = "[" + "".join(re.escape(c) for c in CONFUSABLES) + "]"
_HAS_CONFUSABLE = re.compile(_CONFUSABLE_CLASS)
_NOT_STRICT_LETTER = re.compile(r"[^a-zA-Z" + _STRICT_CLASS[1:-1] + "]")


# a word made only of letters outside ASCII (a Russian or Greek word, or a homoglyph word in disguise)
_FOREIGN_WORD = re.compile(r"(?<![^\W\d_])[^\W\d_a-zA-Z]+(?![^\W\d_])")


def map_confusables(text: str) -> str:
    """Map look-alike letters to Latin, except in words of another script that are not in disguise.

    A word that mixes Latin letters with look-alikes ("Ignоre" with a Cyrillic о) is mapped with every
    entry of both tables. A word without Latin letters is real Russian or Greek and is left alone, unless
    every one of its letters is a close look-alike (a Cyrillic "сору" meant to read "copy")."""
    if text.isascii() or not _HAS_CONFUSABLE.search(text):
        return text
    out, last = [], 0
    for m in _FOREIGN_WORD.finditer(text):
        word = m.group(0)
        out.append(text[last : m.start()].translate(_CONFUSABLE_TABLE))
        out.append(word.translate(_STRICT_TABLE) if len(word) >= 2 and not _NOT_STRICT_LETTER.search(word) else word)
        last = m.end()
    out.append(text[last:].translate(_CONFUSABLE_TABLE))
    return "".join(out)


# -- the main view ----------------------------------------------------------------------------------

_HSPACE = re.compile(r"[^\S\n]{2,}|[^\S \n]")  # a single space is left as it is: most of them


def collapse_whitespace(text: str) -> str:
    """Runs of horizontal whitespace become one space; newlines are kept (line-start rules use them)."""
    return _HSPACE.sub(" ", text)


def _prepare(text: str) -> str:
    text = strip_invisible(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        text = map_confusables(text)
    return text


def normalize(text: str) -> str:
    """Invisible characters removed, NFKC, look-alikes mapped, whitespace collapsed."""
    return collapse_whitespace(_prepare(text))


# -- the second view ---------------------------------------------------------------------------------

# one letter or digit, then the same separator between each of at least three of them: "i g n o r e",
# "i.g.n.o.r.e", "R-E-V-E-A-L"; the backreference keeps "a. b" or "x - y" out
_SPACED = re.compile(r"(?<![^\W_])([^\W_])([ .\-_*·•/|+~])(?:[^\W_]\2)+[^\W_](?![^\W_])")
# markdown emphasis at the edge of a word ("**ignore**", "_previous_"), not the "_" inside snake_case
_EMPHASIS = re.compile(r"(?<!\w)[*_`~]+|[*_`~]+(?!\w)")
LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "|": "l"}
_LEET_TABLE = str.maketrans(LEET)
_LEET_HINT = re.compile(r"[^\W\d_][013457@$|]|[013457@$|][^\W\d_]")
# a token (from its start: the lookbehind keeps the scan linear) with a leetspeak character in it
_LEET_TOKEN = re.compile(r"(?<![\w@$|])[\w@$|]*[013457@$|][\w@$|]*")
_LEET_CHAR = re.compile(r"[013457@$|]")
_LETTER = re.compile(r"[^\W\d_]")
_HEX_ONLY = re.compile(r"[0-9A-Fa-f]+")


def _unleet_token(m: re.Match[str]) -> str:
    token = m.group(0)
    # leetspeak words are short; a long token is an identifier, a hash or an encoded run
    if len(token) > MAX_LEET_TOKEN or not _LETTER.search(token) or (len(token) >= 8 and _HEX_ONLY.fullmatch(token)):
        return token
    return token.translate(_LEET_TABLE)


def collapse_spaced(text: str) -> str:
    """Join letters written one by one with the same separator: "i g n o r e" -> "ignore"."""
    return _SPACED.sub(lambda m: m.group(0).replace(m.group(2), ""), text)


def unleet(text: str) -> str:
    """Read leetspeak digits as letters in tokens that also hold letters ("pr3v10us" -> "previous")."""
    if not _LEET_CHAR.search(text) or not _LEET_HINT.search(text):
        return text
    return _LEET_TOKEN.sub(_unleet_token, text)


def _deobfuscate_prepared(text: str) -> str:
    if "*" in text or "_" in text or "`" in text or "~" in text:
        text = _EMPHASIS.sub("", text)
    return collapse_whitespace(unleet(collapse_spaced(text)))


def deobfuscate(text: str) -> str:
    """The second view: :func:`normalize` plus emphasis marks dropped, spaced-out words joined (before
    whitespace is collapsed, so that three spaces still separate the words of "i g n o r e   a l l")
    and leetspeak read as letters."""
    return _deobfuscate_prepared(_prepare(text))


# -- encoded runs ------------------------------------------------------------------------------------

_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_SPACED = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{2}(?:[ :,-][0-9A-Fa-f]{2}){7,}(?![0-9A-Fa-f])")
_HEX_ESCAPED = re.compile(r"(?:\\x[0-9A-Fa-f]{2}){4,}")
# a run of non-space characters with URL escapes in it: "Ignore%20all%20previous" (linear: the
# characters between two escapes can be split only one way)
_URL_RUN = re.compile(r"(?:[^\s%]*%[0-9A-Fa-f]{2})+[^\s%]*")
_TAGS = re.compile("[\U000e0020-\U000e007e]{4,}")
_ROT13_HINT = re.compile(r"\brot[\s-]?13\b|\bcaesar\b", re.IGNORECASE)
_B64_URLSAFE = str.maketrans("-_", "+/")
_WS_TO_SPACE = str.maketrans("\n\r\t", "   ")


def _printable_text(raw: bytes) -> str | None:
    """The bytes as UTF-8 text if they are printable text (a base64 of random bytes is not)."""
    if len(raw) < 4:
        return None
    text = raw.decode("utf-8", errors="replace")
    if text.count("\ufffd") > 1 or not text.translate(_WS_TO_SPACE).replace("\ufffd", "").isprintable():
        return None
    return text if _LETTER.search(text) else None


def _b64_candidate(run: str) -> bool:
    """Looks like base64 rather than a long word or identifier: both cases and a digit or + /."""
    return (
        not _HEX_ONLY.fullmatch(run)
        and any(c.isupper() for c in run)
        and any(c.islower() for c in run)
        and any(c.isdigit() or c in "+/" for c in run)
    )


def _decode_b64(run: str) -> str | None:
    run = run.rstrip("=").translate(_B64_URLSAFE)[:MAX_RUN_CHARS]
    run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
    try:
        raw = binascii.a2b_base64(run + "=" * (-len(run) % 4))
    except (binascii.Error, ValueError):
        return None
    return _printable_text(raw)


def _decode_hex(run: str) -> str | None:
    digits = re.sub(r"\\x|[ :,-]", "", run)[:MAX_RUN_CHARS]
    try:
        return _printable_text(bytes.fromhex(digits[: len(digits) - len(digits) % 2]))
    except ValueError:
        return None


def decoded_runs(
    text: str, normalized: str | None = None, max_runs: int = MAX_DECODED_RUNS, depth: int = MAX_DEPTH
) -> list[tuple[str, str]]:
    """(kind, decoded text) for the encoded runs of ``text`` that decode to printable text, bounded:
    at most ``max_runs`` decodings kept and ``MAX_ATTEMPTS`` tried, each from at most
    :data:`MAX_RUN_CHARS` characters, ``depth`` levels deep. ``normalized`` is ``normalize(text)`` when
    the caller has it (the runs are looked for there, so zero-width characters cannot split them)."""
    found: list[tuple[str, str]] = []
    budget = {"runs": max_runs, "attempts": MAX_ATTEMPTS}

    def add(kind: str, decoded: str | None, level: int) -> None:
        if decoded is None or budget["runs"] <= 0:
            return
        budget["runs"] -= 1
        found.append((kind, decoded))
        if level < depth:
            scan(normalize(decoded), level + 1)

    def runs(rx: re.Pattern[str], s: str):
        for m in rx.finditer(s):
            if budget["runs"] <= 0 or budget["attempts"] <= 0:
                return
            budget["attempts"] -= 1
            yield m.group(0)

    def scan(s: str, level: int) -> None:
        for rx in (_HEX_ESCAPED, _HEX_SPACED) if "\\x" in s else (_HEX_SPACED,):
            for run in runs(rx, s):
                add("hex", _decode_hex(run), level)
        for run in runs(_B64_RUN, s):  # also the contiguous hex runs (hex digits are base64 letters)
            digits = run[2:] if run[:2] in ("0x", "0X") else run
            if _HEX_ONLY.fullmatch(digits):
                add("hex", _decode_hex(digits), level)
            elif _b64_candidate(run):
                add("base64", _decode_b64(run), level)
        if "%" in s:
            for run in runs(_URL_RUN, s):
                if run.count("%") >= 3:
                    add("url", urllib.parse.unquote(run[:MAX_RUN_CHARS]), level)
        head = s[: 4 * MAX_RUN_CHARS]
        if level == 1 and budget["runs"] > 0 and _ROT13_HINT.search(head):
            add("rot13", codecs.encode(head, "rot13"), depth)  # not scanned again

    for run in runs(_TAGS, text):  # ASCII smuggled in invisible tag characters
        add("tags", "".join(chr(ord(c) - 0xE0000) for c in run[:MAX_RUN_CHARS]), 1)
    scan(normalize(text) if normalized is None else normalized, 1)
    return found


def _changed_lines(before: str, after: str) -> str:
    """The lines of ``after`` that differ from those of ``before``, with one line of context either side
    (the second view keeps the line count), so that a long prompt with one "h264" in it is not screened
    twice over."""
    if before.count("\n") != after.count("\n"):
        return after
    old, new = before.split("\n"), after.split("\n")
    changed = [i for i, (b, a) in enumerate(zip(old, new)) if a != b]
    if len(changed) * 3 >= len(new):
        return after
    keep = sorted({j for i in changed for j in (i - 1, i, i + 1) if 0 <= j < len(new)})
    return "\n".join(new[j] for j in keep)


def views(text: str) -> list[str]:
    """The texts the injection rules match: the normalized prompt first, then the lines that the second
    view changes, then the decoded runs (normalized, and their changed lines) if there are any."""
    prepared = _prepare(text)
    base = collapse_whitespace(prepared)
    out = [base]
    second = _deobfuscate_prepared(prepared)
    if second != base:
        out.append(_changed_lines(base, second))
    runs = decoded_runs(text, base)
    if runs:
        prepared = _prepare("\n".join(d for _, d in runs))
        decoded = collapse_whitespace(prepared)
        out.append(decoded)
        second = _deobfuscate_prepared(prepared)
        if second != decoded:
            out.append(_changed_lines(decoded, second))
    return out
