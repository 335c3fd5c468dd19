"""English word tokens as datatrove 0.10.1 counts them, without spaCy (framework-free).

datatrove's English rules (Gopher quality and repetition, FineWeb's newline ratio, C4's sentence count)
take their words from ``spacy.blank("en")``'s tokenizer, whitespace tokens dropped: punctuation tokens
count as words (``"Hello, world!"`` is four words), contractions split (``don't`` -> ``do`` ``n't``) and
URLs stay whole. This module follows the algorithm spaCy documents ("How spaCy's tokenizer works",
spacy.io/usage/linguistic-features#how-tokenizer-works) with its English rules, written here from that
description and checked against spaCy 3.8 on real pages (``bench/bench_datatrove.py`` prints the
agreement):

1. split the text on whitespace (any ``str.isspace`` character); each chunk is tokenized alone;
2. a chunk that is a special case (a contraction, an abbreviation, an emoticon: :data:`SPECIAL`) becomes
   its listed pieces;
3. otherwise prefixes (opening punctuation, quotes, currency, symbols, ``§ % = — –``, ``+`` not before a
   digit, ellipses) and suffixes (closing punctuation, quotes, ellipses, ``'s``, dashes, ``%`` / units /
   currency / ``+`` after a digit, ``.`` after a lowercase letter, digit or punctuation, ``.`` after two
   capitals) are split off one at a time from both ends, stopping as soon as what remains is a special
   case;
4. what remains is one token when it is a URL, or a special case; else it is split at infixes: ellipses,
   symbols, ``+ - * ^`` between digits, ``.`` between a lowercase and an uppercase letter, ``,`` between
   letters, hyphens (``- – — -- --- —— ~``) after a letter or digit and before a letter, ``: < > = /``
   after a letter or digit and before a letter.

5. spaCy's last pass: special cases that the steps above split into several tokens (``last):`` gives
   ``last`` ``)`` ``:``) are merged back (``last`` ``):``), longest first, then leftmost, a candidate
   blocking any later one that shares its first or last token.

Not followed: spaCy runs step 5 over the whole text, so a special case spanning a single space (``: p``
spells ``:p``) is a candidate too; it is never merged, but it blocks its neighbours (``try: p.Parse`` keeps
``p`` ``.`` apart). Here each chunk is tokenized alone. Measured on the bench's 2,578 page texts: 2 texts
differ, by one token each. Letters are ``str.isalpha`` (spaCy lists scripts; modifier letters of cased
scripts are neither lower- nor uppercase in both). Chunks repeat (words), so each chunk's tokens are
cached. The special cases (contractions, abbreviations, emoticons) are the strings spaCy 3.8 keeps whole
or splits as listed, found by probing it with about 690,000 short strings and every chunk of the bench's
pages.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import chain

__all__ = [
    "DATATROVE_TERMINALS",
    "DT_PUNCTUATION",
    "SENTENCE_TERMINALS",
    "SPECIAL",
    "STOP_WORD_SET",
    "chunk_facts",
    "is_punct_token",
    "sentence_count",
    "token_facts",
    "tokens_of_chunk",
    "word_tokens",
]


def _ranges(pred) -> str:
    """A regex character-class body matching every BMP code point for which ``pred(ch)`` holds."""
    parts: list[str] = []
    start = None
    for cp in range(0x10000 + 1):
        ok = cp < 0x10000 and not (0xD800 <= cp <= 0xDFFF) and pred(chr(cp))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            end = cp - 1
            parts.append(re.escape(chr(start)) if start == end else f"{re.escape(chr(start))}-{re.escape(chr(end))}")
            start = None
    return "".join(parts)


def _uncased_letter(ch: str) -> bool:
    return ch.isalpha() and not ch.islower() and not ch.isupper()


_ALPHA = _ranges(str.isalpha)
# spaCy counts letters of scripts without case as both lowercase and uppercase.
# Modifier letters of cased scripts (superscript n, small capitals' modifiers) are neither: spaCy lists
# script ranges that leave them out.
_LOWER = _ranges(lambda c: (c.islower() and unicodedata.category(c) != "Lm") or _uncased_letter(c))
_UPPER = _ranges(lambda c: (c.isupper() and unicodedata.category(c) != "Lm") or _uncased_letter(c))
_ICONS = _ranges(lambda c: unicodedata.category(c) == "So")

# Punctuation that opens or closes a word (spaCy's English rules; ASCII, CJK, Devanagari, Arabic forms).
PUNCT_CHARS = ",:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY = ["US\\$", "C\\$", "A\\$", "\\$", "£", "€", "¥", "฿", "₽", "﷼", "₴", "[₠-₿]"]
_UNITS = [
    "km",
    "km²",
    "km³",
    "m",
    "m²",
    "m³",
    "dm",
    "dm²",
    "dm³",
    "cm",
    "cm²",
    "cm³",
    "mm",
    "mm²",
    "mm³",
    "ha",
    "µm",
    "nm",
    "yd",
    "in",
    "ft",
    "kg",
    "g",
    "mg",
    "µg",
    "t",
    "lb",
    "oz",
    "m/s",
    "km/h",
    "kmh",
    "mph",
    "hPa",
    "Pa",
    "mbar",
    "mb",
    "MB",
    "kb",
    "KB",
    "gb",
    "GB",
    "tb",
    "TB",
    "T",
    "G",
    "M",
    "K",
    "%",
]
_HYPHENS = ["---", "--", "——", "-", "–", "—", "~"]
_ELLIPSES = [r"\.\.+", "…"]


def _alternatives(items) -> str:
    return "|".join(items)


_PUNCT_ALTS = ["……", "…"] + [re.escape(c) for c in PUNCT_CHARS]
_QUOTE_ALTS = [re.escape(c) for c in _QUOTES]
_PREFIX_RE = re.compile(
    "^(?:"
    + _alternatives(
        ["§", "%", "=", "—", "–", r"\+(?![0-9])"] + _PUNCT_ALTS + _ELLIPSES + _QUOTE_ALTS + _CURRENCY + [f"[{_ICONS}]"]
    )
    + ")"
)
# "." closes a word after a digit, a lowercase letter, % ² - +, a punctuation or quote character (and, as
# spaCy's class is written, "|" "(" "?" ":" ")").
_DOT_AFTER = "0-9" + _LOWER + re.escape("%²-+" + PUNCT_CHARS + "…|()?:" + _QUOTES)
_SUFFIX_RE = re.compile(
    "(?:"
    + _alternatives(
        _PUNCT_ALTS
        + _ELLIPSES
        + _QUOTE_ALTS
        + [f"[{_ICONS}]", "'s", "'S", "’s", "’S", "—", "–"]
        + [
            r"(?<=[0-9])\+",
            r"(?<=°[FfCcKk])\.",
            "(?<=[0-9])(?:" + _alternatives(_CURRENCY) + ")",
            "(?<=[0-9])(?:" + _alternatives(re.escape(u) for u in _UNITS) + ")",
            f"(?<=[{_DOT_AFTER}])\\.",
            f"(?<=[{_UPPER}][{_UPPER}])\\.",
        ]
    )
    + ")$"
)
_INFIX_RE = re.compile(
    _alternatives(
        _ELLIPSES
        + [
            f"[{_ICONS}]",
            r"(?<=[0-9])[+\-*^](?=[0-9-])",
            f"(?<=[{_LOWER}{re.escape(_QUOTES)}])\\.(?=[{_UPPER}{re.escape(_QUOTES)}])",
            f"(?<=[{_ALPHA}]),(?=[{_ALPHA}])",
            f"(?<=[{_ALPHA}0-9])(?:" + _alternatives(_HYPHENS) + f")(?=[{_ALPHA}])",
            f"(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])",
        ]
    )
)
# A URL (spaCy's URL rule): an optional scheme (``xx://``), an optional ``user[:pass]@``, a host, an
# optional port, an optional path/query/fragment. The host is a public IPv4 address (first octet 1-223,
# last 1-254; the private and loopback ranges 10/8, 127/8, 169.254/16, 172.16/12, 192.168/16 are not
# URLs) or dotted labels ending in a top-level label of 2-63 lowercase letters (so ``os.path`` is one,
# ``argparse.ArgumentParser`` is not and splits at its ``.`` infix). Case-sensitive.
_LABEL = "[A-Za-z0-9\u00a1-\uffff](?:[A-Za-z0-9\u00a1-\uffff_-]{0,62}[A-Za-z0-9\u00a1-\uffff])?"
_OCTET = "(?:1?[0-9]{1,2}|2[0-4][0-9]|25[0-5])"
_PUBLIC_IPV4 = (
    "(?!(?:10|127)(?:\\.[0-9]{1,3}){3})(?!(?:169\\.254|192\\.168)(?:\\.[0-9]{1,3}){2})"
    "(?!172\\.(?:1[6-9]|2[0-9]|3[01])(?:\\.[0-9]{1,3}){2})"
    f"(?:[1-9][0-9]?|1[0-9][0-9]|2[01][0-9]|22[0-3])(?:\\.{_OCTET}){{2}}"
    "\\.(?:[1-9][0-9]?|1[0-9][0-9]|2[0-4][0-9]|25[0-4])"
)
_URL_RE = re.compile(
    "(?:[\\w+\\-.]{2,}://)?(?:\\S+(?::\\S*)?@)?"
    f"(?:{_PUBLIC_IPV4}|(?:{_LABEL}\\.)+[{_LOWER}]{{2,63}})"
    "(?::[0-9]{2,5})?(?:[/?#]\\S*)?"
)


_NEGATED_VERBS = (
    "is",
    "are",
    "was",
    "were",
    "do",
    "does",
    "did",
    "have",
    "has",
    "had",
    "could",
    "should",
    "would",
    "might",
    "must",
    "need",
    "may",
    "ought",
    "dare",
)
# pronoun -> the clitics it takes ('s is a suffix rule, so not listed); forms without the apostrophe
# are special cases too, except those that are common words (spaCy's exclusions).
_PRONOUN_CLITICS = {
    "i": ("m", "ll", "ve", "d"),
    "you": ("re", "ll", "ve", "d"),
    "he": ("ll", "d"),
    "she": ("ll", "d"),
    "it": ("ll", "d"),
    "we": ("re", "ll", "ve", "d"),
    "they": ("re", "ll", "ve", "d"),
    "who": ("re", "ll", "ve", "d"),
    "what": ("re", "ll", "ve", "d"),
    "where": ("re", "ll", "ve", "d"),
    "when": ("re", "ll", "ve", "d"),
    "why": ("re", "ll", "ve", "d"),
    "how": ("re", "ll", "ve", "d"),
    "there": ("re", "ll", "ve", "d"),
    "that": ("ll", "d"),
    "this": ("ll", "d"),
    "could": ("ve",),
    "should": ("ve",),
    "would": ("ve",),
    "might": ("ve",),
    "must": ("ve",),
}
_S_WORDS = ("it", "he", "she", "that", "this", "there", "what", "who", "where", "when", "why", "how")
_NOT_SPECIAL = {"ill", "its", "hell", "shell", "shed", "were", "well", "whore"}
_ABBREVIATIONS = [
    "e.g.",
    "E.g.",
    "E.G.",
    "i.e.",
    "I.e.",
    "I.E.",
    "vs.",
    "a.m.",
    "p.m.",
    "Ph.D.",
    "Mr.",
    "Mrs.",
    "Ms.",
    "Dr.",
    "Prof.",
    "St.",
    "Mt.",
    "Jr.",
    "Gen.",
    "Gov.",
    "Rep.",
    "Sen.",
    "Rev.",
    "Messrs.",
    "Inc.",
    "Ltd.",
    "Co.",
    "co.",
    "Corp.",
    "Bros.",
    "Jan.",
    "Feb.",
    "Mar.",
    "Apr.",
    "Jun.",
    "Jul.",
    "Aug.",
    "Sep.",
    "Sept.",
    "Oct.",
    "Nov.",
    "Dec.",
    "Ala.",
    "Ariz.",
    "Ark.",
    "Calif.",
    "Colo.",
    "Conn.",
    "Del.",
    "Fla.",
    "Ga.",
    "Ill.",
    "Ind.",
    "Kan.",
    "Kans.",
    "Ky.",
    "La.",
    "Mass.",
    "Md.",
    "Mich.",
    "Minn.",
    "Miss.",
    "Mo.",
    "Mont.",
    "N.C.",
    "N.D.",
    "N.H.",
    "N.J.",
    "N.M.",
    "N.Y.",
    "Neb.",
    "Nebr.",
    "Nev.",
    "Okla.",
    "Ore.",
    "Pa.",
    "S.C.",
    "Tenn.",
    "Va.",
    "Wash.",
    "Wis.",
    "Adm.",
    "Ak.",
    "Ia.",
    "Id.",
    "v.s.",
    "and/or",
    "w/o",
    "C++",
    "''",
    "’’",
    "'d",
    "’d",
    "'em",
    "’em",
    "'ll",
    "’ll",
    "'re",
    "’re",
    "'cause",
    "’cause",
    "'Cause",
    "’Cause",
    "'bout",
    "’bout",
    "ol'",
    "Ol'",
    "N'T",
    "n'T",
    "<space>",
]
_EMOTICONS = [
    ":)",
    ":-)",
    ":))",
    ":-))",
    ":)))",
    ":-)))",
    "(:",
    "(-:",
    "):",
    ")-:",
    ":]",
    ":-]",
    "[:",
    "[-:",
    ":o)",
    "(o:",
    ":}",
    ":-}",
    "8)",
    "8-)",
    "(-8",
    ";)",
    ";-)",
    "(;",
    "(-;",
    ":(",
    ":-(",
    ":((",
    ":-((",
    ":(((",
    ":-(((",
    "=(",
    "=)",
    "(=",
    "=/",
    ":/",
    ":-/",
    "=|",
    ":|",
    ":-|",
    ":1",
    ":P",
    ":-P",
    ":p",
    ":-p",
    ":O",
    ":-O",
    ":o",
    ":-o",
    ":0",
    ":-0",
    ":()",
    ">:o",
    ":*",
    ":-*",
    ":3",
    ":-3",
    "=3",
    ":>",
    ":->",
    ":X",
    ":-X",
    ":x",
    ":-x",
    ":D",
    ":-D",
    ";D",
    ";-D",
    "=D",
    "xD",
    "XD",
    "xDD",
    "XDD",
    "8D",
    "8-D",
    "^_^",
    "^__^",
    "^___^",
    ">.<",
    ">.>",
    "<.<",
    "._.",
    ";_;",
    "-_-",
    "-__-",
    "v.v",
    "V.V",
    "v_v",
    "V_V",
    "o_o",
    "o_O",
    "O_o",
    "O_O",
    "0_o",
    "o_0",
    "0_0",
    "<3",
    "<33",
    "<333",
    "</3",
    "(^_^)",
    "(-_-)",
    "(._.)",
    "(>_<)",
    "(*_*)",
    "(¬_¬)",
    "ಠ_ಠ",
    "ಠ︵ಠ",
    "(ಠ_ಠ)",
    "¯\\(ツ)/¯",
    "(╯°□°）╯︵┻━┻",
    "><(((*>",
    "=]",
    "[=",
    "=[",
    "]=",
    ":')",
    ":'(",
    ":’)",
    ":’(",
    ":'-)",
    ":'-(",
    ">:(",
    "o.O",
    '\\")',
]


def _special_cases() -> dict[str, tuple[str, ...]]:
    """Chunks spaCy's English tokenizer exceptions tokenize as listed: contractions (with ' or ’, and
    without the apostrophe), abbreviations ending in a period, single letters with a period, emoticons."""
    sc: dict[str, tuple[str, ...]] = {}

    def add(pieces: tuple[str, ...]) -> None:
        text = "".join(pieces)
        if text.lower() not in _NOT_SPECIAL:
            sc.setdefault(text, pieces)

    def cased(word: str) -> tuple[str, ...]:
        return (word, word.capitalize()) if word != "i" else ("i", "I")

    for apo in ("'", "’", ""):
        for verb in _NEGATED_VERBS:
            for v in cased(verb):
                add((v, f"n{apo}t"))
        for stem in ("ca", "wo", "sha", "ai"):
            for s in cased(stem):
                add((s, f"n{apo}t"))
        for pron, clitics in _PRONOUN_CLITICS.items():
            for p in cased(pron):
                for c in clitics:
                    add((p, f"{apo}{c}"))
        for word in _S_WORDS:
            for w in cased(word):
                add((w, f"{apo}s"))
        if apo:
            for pron, clitics in _PRONOUN_CLITICS.items():  # I'd've, you'll've
                for p in cased(pron):
                    for c in {"d", "ll"}.intersection(clitics):
                        add((p, f"{apo}{c}", f"{apo}ve"))
            for pieces in (("c" + apo + "m", "on"), ("C" + apo + "m", "on"), ("y" + apo, "all")):
                add(pieces)
    for pieces in (
        ("can", "not"),
        ("Can", "not"),
        ("gon", "na"),
        ("Gon", "na"),
        ("got", "ta"),
        ("Got", "ta"),
        ("y", "all"),
    ):
        add(pieces)
    for hour in range(1, 13):
        for period in ("am", "pm", "a.m.", "p.m."):
            add((str(hour), period))
    for text in ("n't", "n’t", "'s", "’s", "‘s", "'S", "’S", "‘S", *_ABBREVIATIONS, *_EMOTICONS):
        sc[text] = (text,)
    for letter in "abcdefghijklmnopqrstuvwxyz":
        sc[letter + "."] = (letter + ".",)
    return sc


SPECIAL = _special_cases()


def _split_affixes(s: str, special: dict, prefixes: list[str], suffixes: list[str]) -> str:
    """Strip prefixes and suffixes from ``s`` (collected in order), stopping at a special case."""
    while s and s not in special:
        m = _PREFIX_RE.match(s)
        pre = m.end() if m else 0
        if pre and s[pre:] in special:
            prefixes.append(s[:pre])
            return s[pre:]
        rest = s[pre:]
        m = _SUFFIX_RE.search(rest) if rest else None
        suf = len(rest) - m.start() if m and m.start() < len(rest) else 0
        if suf and s[:-suf] in special:
            suffixes.append(s[-suf:])
            return s[:-suf]
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[-suf:])
            s = s[pre:-suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[-suf:])
            s = s[:-suf]
        else:
            break
    return s


def _tokenize(chunk: str, special: dict[str, tuple[str, ...]]) -> list[str]:
    """Steps 2-4 of the module docstring for one chunk, with the special cases ``special``."""
    pieces = special.get(chunk)
    if pieces is not None:
        return list(pieces)
    prefixes: list[str] = []
    suffixes: list[str] = []
    core = _split_affixes(chunk, special, prefixes, suffixes)
    out = prefixes
    if core:
        pieces = special.get(core)
        if pieces is not None:
            out.extend(pieces)
        elif _URL_RE.fullmatch(core):
            out.append(core)
        else:
            start = 0
            for m in _INFIX_RE.finditer(core):
                a, b = m.span()
                if a == 0:
                    continue
                if a != start:
                    out.append(core[start:a])
                if a != b:
                    out.append(core[a:b])
                start = b
            if start < len(core):
                out.append(core[start:])
    out.extend(reversed(suffixes))
    return out


# Special cases that the rules split into several tokens, keyed by those tokens (for the merge pass).
_MERGE: dict[tuple[str, ...], tuple[str, ...]] = {}
for _text, _pieces in SPECIAL.items():
    _split = tuple(_tokenize(_text, {}))
    if len(_split) > 1:
        _MERGE.setdefault(_split, _pieces)
_MERGE_LENGTHS: dict[str, tuple[int, ...]] = {}
for _k in _MERGE:
    _MERGE_LENGTHS[_k[0]] = tuple(sorted({*_MERGE_LENGTHS.get(_k[0], ()), len(_k)}, reverse=True))


def _merge_specials(tokens: list[str]) -> list[str]:
    """spaCy's last pass: runs of tokens that spell a special case (``)`` ``:`` -> ``):``) become that case.
    Candidates are taken longest first, then leftmost; one is taken when neither its first nor its last
    token belongs to a candidate considered before it, taken or not (so four quotes after a letter merge
    once, into one ``''`` and two ``'``, as spaCy 3.8 does)."""
    found = []
    size = len(tokens)
    for i, tok in enumerate(tokens):
        for n in _MERGE_LENGTHS.get(tok, ()):
            if i + n <= size and tuple(tokens[i : i + n]) in _MERGE:
                found.append((-n, i))
    if not found:
        return tokens
    seen = [False] * len(tokens)
    chosen = {}
    for neg, i in sorted(found):
        n = -neg
        if not seen[i] and not seen[i + n - 1]:
            chosen[i] = n
        seen[i : i + n] = [True] * n
    out, i = [], 0
    while i < len(tokens):
        n = chosen.get(i)
        if n:
            out.extend(_MERGE[tuple(tokens[i : i + n])])
            i += n
        else:
            out.append(tokens[i])
            i += 1
    return out


_CLOSING = frozenset(",;:!?)")  # closing punctuation that is always its own suffix after a letter


@lru_cache(maxsize=1 << 18)
def tokens_of_chunk(chunk: str) -> tuple[str, ...]:
    """The tokens of one whitespace-free chunk (see the module docstring)."""
    # Fast paths, equal to the full algorithm: letters only (no affix or infix rule applies to them), and
    # letters followed by one closing punctuation mark (that mark is the only affix).
    if chunk.isalpha():
        return SPECIAL.get(chunk, (chunk,))
    if chunk[-1] in _CLOSING and chunk[:-1].isalpha():
        out = [*SPECIAL.get(chunk[:-1], (chunk[:-1],)), chunk[-1]] if chunk not in SPECIAL else list(SPECIAL[chunk])
        return tuple(_merge_specials(out) if any(t in _MERGE_LENGTHS for t in out) else out)
    out = _tokenize(chunk, SPECIAL)
    if len(out) > 1 and any(t in _MERGE_LENGTHS for t in out):
        out = _merge_specials(out)
    return tuple(out)


def word_tokens(text: str) -> list[str]:
    """All tokens of ``text``, in order (datatrove's ``split_into_words`` for English)."""
    return list(chain.from_iterable(map(tokens_of_chunk, text.split())))


# Unicode's Sentence_Terminal property (PropList.txt, Unicode 16), as code-point ranges.
_STERM_RANGES = (
    "0021 002E 003F 0589 061D-061F 06D4 0700-0702 07F9 0837 0839 083D-083E 0964-0965 104A-104B 1362 1367-1368 "
    "166E 1735-1736 17D4-17D5 1803 1809 1944-1945 1AA8-1AAB 1B4E-1B4F 1B5A-1B5B 1B5E-1B5F 1B7D-1B7F 1C3B-1C3C "
    "1C7E-1C7F 2024 203C-203D 2047-2049 2CF9-2CFB 2E2E 2E3C 2E53-2E54 2E60-2E61 3002 A4FF A60E-A60F A6F3 A6F7 "
    "A876-A877 A8CE-A8CF A92F A9C8-A9C9 AA5D-AA5F AAF0-AAF1 ABEB FE12 FE15-FE16 FE52 FE56-FE57 FF01 FF0E FF1F "
    "FF61 10A56-10A57 10F55-10F59 10F86-10F89 11047-11048 110BE-110C1 11141-11143 111C5-111C6 111CD "
    "111DE-111DF 11238-11239 1123B-1123C 112A9 113D4-113D5 1144B-1144C 115C2-115C3 115C9-115D7 11641-11642 "
    "1173C-1173E 11944 11946 11A42-11A43 11A9B-11A9C 11C41-11C42 11EF7-11EF8 11F43-11F44 16A6E-16A6F 16AF5 "
    "16B37-16B38 16B44 16D6E-16D6F 16E98 1BC9F 1DA88"
)


def _expand(ranges: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in ranges.split():
        a, _, b = part.partition("-")
        out.extend(chr(cp) for cp in range(int(a, 16), int(b or a, 16) + 1))
    return tuple(out)


SENTENCE_TERMINALS: tuple[str, ...] = _expand(_STERM_RANGES)
"""Unicode Sentence_Terminal characters (172); spaCy's sentencizer splits after 128 of them (the others
belong to scripts English pages do not use)."""

DATATROVE_TERMINALS: tuple[str, ...] = tuple(
    sorted(
        set(SENTENCE_TERMINALS)
        - set(_expand("1B4E-1B4F 1B7F 2024 2CF9-2CFB 2E60-2E61 FE12 FE15-FE16 113D4-113D5 16D6E-16D6F"))
        | set("\u17d6\u17d9\u17da")
    )
)
"""datatrove 0.10.1's ``TERMINAL_PUNCTUATION`` (FineWeb's line-end characters), stated as its difference from
Unicode's property: 16 characters fewer (newer Balinese, Tulu-Tigalari, Kirat Rai signs; one dot leader;
Coptic full stops; vertical presentation forms) and the Khmer signs U+17D6, U+17D9, U+17DA more (159)."""

# The characters datatrove 0.10.1 counts as punctuation (``PUNCTUATION_SET``; GopherQuality counts a token
# as a word only if it holds a character outside it): ASCII punctuation, the C0/C1 control characters but
# tab and newline, sentence terminals, and these (note the full-width digit one, which it lists).
_DT_PUNCT_EXTRA = "—”％１〈、━【「」，】；“《„’∶´．（–？！：～«〉》）。…►»"
DT_PUNCTUATION: frozenset[str] = frozenset(
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    + _DT_PUNCT_EXTRA
    + "".join(chr(c) for c in (*range(0, 9), 11, 12, *range(13, 32), *range(127, 160)))
) | frozenset(DATATROVE_TERMINALS)


def is_punct_token(token: str) -> bool:
    """Every character is in :data:`DT_PUNCTUATION` (datatrove: not a word for the word count)."""
    return all(c in DT_PUNCTUATION for c in token)


STOP_WORD_SET = frozenset(("the", "be", "to", "of", "and", "that", "have", "with"))  # Gopher's stop words


def token_facts(tokens) -> tuple[int, int, int, int]:
    """(tokens, word tokens, characters of the word tokens, tokens holding a letter) of a token sequence; a
    word token holds a character outside :data:`DT_PUNCTUATION`."""
    n = w = c = a = 0
    for tok in tokens:
        n += 1
        if not is_punct_token(tok):
            w += 1
            c += len(tok)
        if any(ch.isalpha() for ch in tok):
            a += 1
    return n, w, c, a


@lru_cache(maxsize=1 << 18)
def chunk_facts(chunk: str) -> tuple[int, int, int, int]:
    """:func:`token_facts` of one whitespace-free chunk's tokens (cached: chunks repeat across documents)."""
    return token_facts(tokens_of_chunk(chunk))


_SENT_PUNCT = frozenset(SENTENCE_TERMINALS)


def _unicode_punct(token: str) -> bool:
    return all(unicodedata.category(c).startswith("P") for c in token)


def sentence_count(line: str, tokens: list[str] | None = None) -> int:
    """Sentences in ``line`` by spaCy's rule-based sentencizer (datatrove's English sentence splitter):
    after a token that is one sentence-terminal character, the next token that is neither punctuation
    (Unicode category P*) nor such a character starts a sentence. 0 for a line without tokens.

    The terminal characters are Unicode's Sentence_Terminal set; spaCy's list is 128 of those 172 (the
    others belong to scripts English pages do not use)."""
    if _SENT_PUNCT.isdisjoint(line):
        return 1 if line.strip() else 0
    count = 0
    seen_end = False
    for tok in word_tokens(line) if tokens is None else tokens:
        if count == 0:
            count = 1
            seen_end = tok in _SENT_PUNCT
            continue
        if tok in _SENT_PUNCT:
            seen_end = True
        elif seen_end and not _unicode_punct(tok):
            count += 1
            seen_end = False
    return count
