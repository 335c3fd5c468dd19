"""Language identification of a whole document, with a ``mixed`` verdict (framework-free).

CLD2 (pycld2, model inside the wheel) reads a sample of **the whole text**: the text itself when it
is at most ``SAMPLE_CHARS`` characters, otherwise ``SAMPLE_WINDOWS`` windows of equal size spread
evenly from its first to its last character (each window starts on a line or word boundary). A
page that is French for its first pages and English after them is read in both parts; reading only
the head of the text (the old rule: its first 4,000 characters) labelled such pages by their head.

CLD2 reports up to three languages with the percent of the scored text bytes each holds. The
verdict (:attr:`LanguageId.verdict`) is:

* ``mixed`` when the second language holds at least ``MIXED_MIN_SHARE`` of the text bytes (after
  merging variants of one language, e.g. ``zh`` and ``zh-Hant``) and the sample holds at least
  ``MIXED_MIN_BYTES`` bytes of text: half-translated pages (paragraphs alternating two languages)
  come out e.g. fr 57 / en 42;
* otherwise the first language's code (``en``, ``fr``, ``zh-Hant``...);
* ``unknown`` when CLD2 finds no language.

The sample size and the threshold were chosen on the real Debian manuals (bench/bench_language.py,
README "Corpus rules"): no English page reaches 25% in a second language, 96.6% of the fully translated
pages stay under it (the others quote English commands and untranslated paragraphs), and 95.7% of the
half-translated pages reach it. 8,000 characters in 16 windows read at ~4k docs/s (accuracy 98.7%,
half-translated 95.7% flagged); the whole text reads at ~1.5k docs/s (98.6%, 96.8%).

The score is CLD2's percent of the first language (0-1), halved when CLD2 marks the result
unreliable. ``language`` stays the first language for mixed pages, so a rule can still tag them
with it (``assets/corpus/cleaned.py``: ``CleanConfig.mixed_language``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pycld2

__all__ = ["LanguageId", "MIXED", "MIXED_MIN_SHARE", "UNKNOWN", "identify", "language_sample", "url_language"]

MIXED = "mixed"
UNKNOWN = "unknown"
SAMPLE_CHARS = 8_000  # texts up to this size are read whole
SAMPLE_WINDOWS = 16  # longer texts: this many windows of SAMPLE_CHARS // SAMPLE_WINDOWS characters
MIXED_MIN_SHARE = 0.25  # second language's share of the text bytes from which a page is mixed
MIXED_MIN_BYTES = 400  # below this many bytes of text no page is called mixed (too little to tell)
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")  # CLD2 rejects these
_BOUNDARY_SEARCH = 200  # characters scanned for a line (then word) boundary at a window's edges


@dataclass(frozen=True)
class LanguageId:
    """CLD2's reading of a text.

    ``language``: the first language's code (``unknown`` when none); ``score``: its share of the
    text bytes (0-1), halved when unreliable; ``languages``: up to three ``(code, share)`` pairs,
    largest first, variants of one language merged; ``mixed``: the second language holds at least
    ``MIXED_MIN_SHARE``; ``text_bytes``: the bytes of text CLD2 scored in the sample.
    """

    language: str
    score: float
    languages: tuple[tuple[str, float], ...] = ()
    mixed: bool = False
    text_bytes: int = 0

    @property
    def verdict(self) -> str:
        """``mixed``, the language's code, or ``unknown``."""
        return MIXED if self.mixed else self.language

    @property
    def second(self) -> tuple[str, float] | None:
        return self.languages[1] if len(self.languages) > 1 else None

    def describe(self) -> str:
        """E.g. ``fr 57% + en 42%``: the languages with their shares."""
        return " + ".join(f"{c} {round(s * 100)}%" for c, s in self.languages) or UNKNOWN


def _window_start(text: str, at: int) -> int:
    """The first character after the line (else word) boundary at or just after ``at``."""
    nl = text.find("\n", at, at + _BOUNDARY_SEARCH)
    if nl != -1:
        return nl + 1
    sp = text.find(" ", at, at + _BOUNDARY_SEARCH)
    return sp + 1 if sp != -1 else at


def language_sample(text: str, chars: int = SAMPLE_CHARS, windows: int = SAMPLE_WINDOWS) -> str:
    """The whole text if it has at most ``chars`` characters, else ``windows`` evenly spaced windows
    of ``chars // windows`` characters, the first at the text's start and the last at its end, joined
    by newlines. Windows start after a line (else word) boundary and end before a word boundary."""
    if len(text) <= chars:
        return text
    width = chars // windows
    step = (len(text) - width) / (windows - 1)
    parts = []
    for i in range(windows):
        start = int(i * step)
        if start:
            start = _window_start(text, start)
        end = min(start + width, len(text))
        if end < len(text):
            cut = text.rfind(" ", end - _BOUNDARY_SEARCH, end)
            end = cut if cut > start else end
        parts.append(text[start:end])
    return "\n".join(parts)


def _merged(details: tuple) -> list[tuple[str, int]]:
    """CLD2's (code, percent) pairs without ``un``, variants (``zh``/``zh-Hant``) merged, largest first."""
    shares: dict[str, int] = {}
    first: dict[str, str] = {}
    for _, code, percent, _ in details:
        if code == "un" or percent <= 0:
            continue
        base = code.split("-")[0]
        first.setdefault(base, code)  # the variant CLD2 ranked higher names the merged language
        shares[base] = shares.get(base, 0) + percent
    return sorted(((first[b], p) for b, p in shares.items()), key=lambda cp: -cp[1])


def identify(
    text: str,
    *,
    mixed_min_share: float = MIXED_MIN_SHARE,
    sample_chars: int = SAMPLE_CHARS,
    sample_windows: int = SAMPLE_WINDOWS,
) -> LanguageId:
    """CLD2 over :func:`language_sample` of ``text`` (plain text, not HTML); see the module doc."""
    sample = _CONTROL_CHARS.sub("", language_sample(text, sample_chars, sample_windows))
    try:
        reliable, text_bytes, details = pycld2.detect(sample, isPlainText=True)
    except pycld2.error:
        return LanguageId(UNKNOWN, 0.0)
    langs = _merged(details)
    if not langs:
        return LanguageId(UNKNOWN, 0.0, text_bytes=text_bytes)
    code, percent = langs[0]
    score = min(percent, 100) / 100.0 * (1.0 if reliable else 0.5)
    mixed = len(langs) > 1 and langs[1][1] >= mixed_min_share * 100 and text_bytes >= MIXED_MIN_BYTES
    return LanguageId(code, score, tuple((c, p / 100.0) for c, p in langs), mixed, text_bytes)


# ----- languages named by URLs ---------------------------------------------------------------------
_ALIASES = {"nb": "no", "he": "iw", "jv": "jw", "in": "id", "ji": "yi"}  # current ISO codes -> CLD2's
_CODES = frozenset(code.split("-")[0].lower() for _, code in pycld2.LANGUAGES if len(code.split("-")[0]) == 2) | set(
    _ALIASES
)
_TAG_SEGMENT = re.compile(r"([a-z]{2})(?:[-_][A-Za-z]{2,4})?")  # fr, pt-BR, zh_CN, zh-Hant
_FILE_SUFFIX = re.compile(
    r"\.([a-z]{2})(?:[-_][A-Za-z]{2,4})?\.[A-Za-z0-9]+$|\.html?\.([a-z]{2})(?:[-_][A-Za-z]{2,4})?$"
)
_LANG_PARAMS = ("lang", "hl", "locale", "language")


def url_language(url: str | None) -> str | None:
    """The language a URL names (ISO 639-1 primary subtag, lower case), or None.

    Read, in this order: a query parameter (``lang``, ``hl``, ``locale``, ``language``); a path
    segment that is a tag with a region (``en-US``, ``pt_BR``) anywhere, or a bare code as one of the
    first two segments (``/fr/``, ``/docs/fr/``); a file-name suffix (``ch07.fr.html``,
    ``index.html.de``, ``x.pt-br.html``); a first host label with at least two more (``fr.example.org``).
    Bare codes count when CLD2 knows them; a tag with a region (``nb-NO``) always does. Codes come
    back as CLD2 writes them (``nb`` -> ``no``, ``he`` -> ``iw``).
    """
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    query = parse_qs(parts.query)
    for name in _LANG_PARAMS:
        for value in query.get(name, []):
            m = _TAG_SEGMENT.fullmatch(value.strip())
            if m and (m.group(1) in _CODES or len(value.strip()) > 2):
                return _ALIASES.get(m.group(1), m.group(1))
    segments = [s for s in parts.path.split("/") if s]
    directories = segments if parts.path.endswith("/") else segments[:-1]
    for i, seg in enumerate(directories):
        m = _TAG_SEGMENT.fullmatch(seg)
        if m and (len(seg) > 2 or (i < 2 and m.group(1) in _CODES)):
            return _ALIASES.get(m.group(1), m.group(1))
    if segments:
        m = _FILE_SUFFIX.search(segments[-1])
        code = m and (m.group(1) or m.group(2))
        if code and code in _CODES:
            return _ALIASES.get(code, code)
    labels = (parts.hostname or "").split(".")
    if len(labels) >= 3 and labels[0] in _CODES:
        return _ALIASES.get(labels[0], labels[0])
    return None
