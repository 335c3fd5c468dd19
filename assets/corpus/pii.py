"""PII scrubbing: emails, IP addresses and phone numbers (framework-free).

:func:`scrub_pii` replaces each kind with a placeholder (``<EMAIL>``, ``<IP_ADDRESS>``, ``<PHONE>``)
and counts the replacements. Candidates come from the patterns below; each candidate is then judged
in its context, because documentation is full of strings shaped like PII that are not PII.

**Not PII** (left in the text):

* *Section and clause numbers*: a four-part dotted number that heads a line and is followed by ``.``
  or ``)`` (``14.5.4.4. Reporting bugs``), that follows a section word within a few characters
  (``Section 4.1.2.1``, ``Abschnitt``, ``chapitre``, ``sezione``, ``раздел``, ``Τμήμα``, ``قسم``,
  ``RFC 5280, section``, ``JLS``, ``OID =``...), that precedes ``節``/``章``/``节``/``절``, or that a
  no-break space glues to a word (DocBook writes ``Section\xa01.3.2.3`` in every language).
  A line-head number followed by a capitalized word or ``@`` (``15.12.4.5 Create Frame``, an OID
  table's ``2.5.29.15  KeyUsage``) and a number followed by a dash and a title (``1.3.2.3 – „Sending
  fixes“``) are headings and cross-references too.
* *Version strings*: after a version word (``version 1.2.3.4``, ``v``, ``release``), a well-known
  program name (``zlib 1.2.0.1``, ``GCC 2.7.2.2``) or a requirement operator (``novas==3.1.1.3``),
  glued to a name (``Firefox/2.0.0.11``, ``novas-3.1.1.3``), or continued by a dotted name
  (``3.1.1.3.tar.gz``, ``1.0.0.127.in-addr.arpa``). Three-part versions (``3.11.2``) never match.
* *MAC addresses*: eight colon-separated groups of two hex digits (``08:00:2b:01:02:03:04:05``).
* *Non-public IP addresses* (with ``public_ips_only=True``, the default: FineWeb's choice): the IANA
  special-purpose ranges: private (RFC 1918), loopback, link-local, multicast, documentation
  (RFC 5737 ``192.0.2.0/24``, ``198.51.100.0/24``, ``203.0.113.0/24``; RFC 3849 ``2001:db8::/32``),
  shared (100.64/10), benchmarking (198.18/15), reserved (240/4, broadcast, netmasks such as
  ``255.255.255.0``), unspecified (0/8), and IPv6 outside global unicast ``2000::/3``. IPv4 embedded in
  IPv6 (``::ffff:a.b.c.d``) is judged by its IPv4 part. ``public_ips_only=False`` replaces every address.
* *Example and placeholder emails, and email-shaped strings*: domains reserved for examples
  (RFC 2606 / 6761: ``example.com``/``.net``/``.org`` and their subdomains, ``.example``, ``.test``,
  ``.invalid``, ``.localhost``) and their translations in manuals (``beispiel.com``, ``ejemplo.org``,
  ``exemple.org``...); a TLD that is not delegated (IANA list in ``data/iana_tlds.txt``: ``.local``,
  ``.dom``, ``.tld``, ``.xx``, and file or unit names such as ``filename@2x.gif``,
  ``git-maintenance@daily.timer``); URL credentials (``joe:password@host``); SSH remotes
  (``git@salsa.debian.org:team/repo.git``); Message-IDs (a local part with six digits in a row and a
  dot: ``20030112190404.GE29873@host``).
* *Phone-shaped numbers*: in Python interactive examples (lines starting ``>>>`` or ``...`` and their
  output), inside a
  list of numbers (``377 610 987 1597``), NANP numbers with exchange 555 (reserved for fiction and
  directory services) or a reserved ``N9X`` area code, runs of six identical digits
  (``+999999999-12-31``), and integer limits (``+2147483647``, ``4294967295``).

**PII** (replaced): every other email address (people, and role or list addresses such as
``debian-devel@lists.debian.org``), every other public IP address (IPv4 and IPv6, including ones
used as examples in documentation), every other phone number.

Measured on a hand-labelled sample of replacements drawn from real Debian documentation
(``tests/corpus/fixtures/pii_labeled.jsonl.gz``, ``bench/pii_sample.py``): precision 98.8% (main's
scrubber: 14.0%), recall 99.6% on real emails and public IPs; README "Corpus rules".

Speed: the regexes run only on the few spans that :func:`_pii_windows` marks (numpy, one pass),
and a candidate's context is read only when a pattern matched.
"""

from __future__ import annotations

import ipaddress
import pathlib
import re

import numpy as np

__all__ = ["PII_PLACEHOLDERS", "is_public_ip", "scrub_pii"]

PII_PLACEHOLDERS = {"email": "<EMAIL>", "ip_address": "<IP_ADDRESS>", "phone": "<PHONE>"}

# local@domain.tld: a dotted domain ending in an alphabetic TLD ("user@localhost" and decorators
# like "@property" do not match). The boundaries are ASCII, so an address glued to CJK text
# ("…は debian-devel@lists.debian.orgを…") is matched whole.
_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
# Exactly four dot-separated octets 0-255 without leading zeros, not part of a longer dotted
# number: "3.11.7" (three parts) and "1.2.3.4.5" (five parts) do not match.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.[0-9])")
# IPv6 candidates (hex groups and colons, optionally ending in an embedded IPv4), then validated by
# ``ipaddress`` and by _ipv6_specific (see there) to keep C++ ``a::b`` and slices ``x[1::2]`` out.
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}"
    r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?![\w:]|\.[0-9])"
)
# Phones, two forms, each with separators, so plain digit runs (ids, timestamps, 1234567890123 in
# code) never match:
#   international: "+" country code (1-3 digits, no leading 0) then 1-6 groups of 1-5 digits, the
#     groups separated by at most one space, dot or hyphen and optionally parenthesized:
#     "+44 20 7946 0958", "+1 (415) 555-2671", "+14155552671" (E.164);
#   NANP: optional "1" / "+1", area code [2-9]XX (optionally in parentheses), exchange [2-9]XX,
#     line XXXX, separated by space, dot or hyphen: "(415) 555-2671", "415.555.2671", "1-800-555-0199".
# A match must hold 9 to 15 digits (E.164 allows 15).
_PHONE_RE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+[1-9][0-9]{0,2}(?:[ .-]?(?:\([0-9]{1,5}\)|[0-9]{1,5})){1,6}"
    r"|(?:1[ .-]?)?(?:\([2-9][0-9]{2}\)[ .-]?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}"
    r")(?!\w|[.-][0-9])"
)
_NANP_RE = re.compile(r"(?:\+?1[ .-]?)?\(?([2-9][0-9]{2})\)?[ .-]?([2-9][0-9]{2})[ .-]?[0-9]{4}")

# ----- context rules ------------------------------------------------------------------------------
_CONTEXT_CHARS = 40  # characters before a candidate that its context rules read (same line only)
_SECTION_WORDS = (
    r"sections?|sect\.?|sec\.|chapters?|clauses?|paragraphs?|appendix|annex|"
    r"abschnitte?|kapitel|anhang|"  # de
    r"secci[oó]n|secciones|cap[ií]tulo|apartado|"  # es, pt
    r"chapitre|paragraphe|"  # fr
    r"sezion[ei]|capitolo|paragrafo|"  # it
    r"se[cç][aã]o|se[cç][õo]es|"  # pt
    r"hoofdstuk|sectie|paragraaf|"  # nl
    r"раздел[аеу]?|глав[аеуы]|пункт[аеу]?|"  # ru
    r"secci[óo]|afsnit|avsnitt|τμήμα|ενότητα|قسم|قسمت|bölüm|rozdział|sekce|oddíl|fejezet|"  # ca da sv el ar fa tr pl cs hu
    r"oid|jls|jvms|rfc\s*\d+,?\s*section|standard"
)
_SECTION_BEFORE = re.compile(rf"(?i)(?:(?<![^\W\d_])(?:{_SECTION_WORDS})(?![^\W\d_])[^\n]{{0,12}}|[§節章节절장第])\s*$")
_SECTION_AFTER = re.compile(r"\s?[節章节절장]")
_VERSION_BEFORE = re.compile(
    r"(?i)(?<![^\W\d_])(?:version|versi[oó]n|versione|vers[aã]o|versie|версия|v|ver\.?|release|rel\.?|build)\s*$"
)
_LINE_HEAD = re.compile(r"[ \t\u2022*\-]*$")  # only indentation and bullets before, on the line
_EXAMPLE_DOMAIN_RE = re.compile(  # RFC 2606 names, and the words translated manuals put in their place
    r"(?:^|\.)(?:example|beispiel|ejemplo|exemple|esempio|exemplo|voorbeeld)\.[a-z]{2,}(?:\.[a-z]{2})?$"
)
_PLACEHOLDER_TLDS = {"example", "test", "invalid", "localhost", "local", "localdomain", "dom", "tld"}
_IANA_TLDS = frozenset(
    line.strip().lower()
    for line in (pathlib.Path(__file__).parent / "data" / "iana_tlds.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
_MESSAGE_ID_LOCAL = re.compile(r"[0-9]{6,}.*\.|\..*[0-9]{6,}")  # 20030112190404.GE29873, 22708.8913.864049.452252
_PRODUCT_BEFORE = re.compile(
    r"(?i)(?<![^\W\d_])(?:gcc|zlib|glibc|libc|openssl|firefox|thunderbird|mozilla|gecko|chrome|safari|opera|python|"
    r"perl|ruby|java|jdk|jre|linux|kernel|debian|ubuntu|windows|node|npm|pip|postgresql|mysql|sqlite|apache|nginx|"
    r"tomcat|gnome|kde|qt|gtk|emacs|vim|git|bash)\s$"
)
_INT_LIMITS = {str(v) for k in (15, 16, 31, 32, 63, 64) for v in (2**k - 1, 2**k)}

# Non-public IPv4 space (IANA IPv4 Special-Purpose Address Registry, multicast and reserved blocks),
# listed here so the rule does not move with the Python version's ``ipaddress.is_global``.
_V4_NOT_PUBLIC = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_NOT_PUBLIC = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",  # IETF protocol assignments (Teredo, ORCHID...), documentation
    )
)
_V6_EMBEDDED_V4 = tuple(ipaddress.IPv6Network(n) for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96"))


def is_public_ip(address: str) -> bool:
    """True for a globally routable unicast address (the IANA special-purpose ranges excluded;
    IPv4 embedded in IPv6 judged by its IPv4 part)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in n for n in _V6_EMBEDDED_V4):
            return is_public_ip(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        return ip in _V6_GLOBAL_UNICAST and not any(ip in n for n in _V6_NOT_PUBLIC)
    return not any(ip in n for n in _V4_NOT_PUBLIC)


def _before(text: str, start: int) -> str:
    """Up to _CONTEXT_CHARS characters before ``start``, on the same line."""
    lo = max(text.rfind("\n", 0, start) + 1, start - _CONTEXT_CHARS)
    return text[lo:start]


def _ipv4_is_not_address(text: str, start: int, end: int) -> bool:
    """Section number, version string or longer dotted name (see the module doc)."""
    before = _before(text, start)
    after = text[end : end + 2]
    at_line_head = _LINE_HEAD.fullmatch(before) and (start - len(before) == 0 or text[start - len(before) - 1] == "\n")
    if at_line_head and after[:1] in (".", ")") and (after[1:2] == "" or after[1:2].isspace()):
        return True  # "14.5.4.4. Reporting bugs" heading a line
    if at_line_head and after[:1].isspace() and re.match(r"\s+[A-Z@]", text[end : end + 24]):
        return True  # "15.12.4.5 Create Frame", "2.5.29.15\t\tKeyUsage": a heading or an OID table row
    if re.match(r"\s?[\u2013\u2014]\s", text[end : end + 3]):
        return True  # "(see 1.3.2.3 – „Sending fixes“)": a cross-reference to a section
    if _SECTION_BEFORE.search(before) or _SECTION_AFTER.match(text, end):
        return True
    if before.endswith("\xa0") or text[end : end + 1] == "\xa0":
        return True  # glued to a word by a no-break space, as DocBook writes "Section\xa01.3.2.3"
    if (
        _VERSION_BEFORE.search(before)
        or _PRODUCT_BEFORE.search(before)
        or before.endswith(("==", ">=", "<=", "~=", "!="))
    ):
        return True  # "version 1.2.3.4", "Thunderbird 1.5.0.9", "novas==3.1.1.3"
    if start >= 2 and text[start - 1] in "/-_" and text[start - 2].isalpha():
        return True  # Firefox/2.0.0.11, novas-3.1.1.3
    return after[:1] == "." and after[1:2].isalpha()  # 3.1.1.3.tar.gz, 1.0.0.127.in-addr.arpa


def _ipv6_specific(candidate: str) -> bool:
    """A valid IPv6 address written specifically enough not to be code or a MAC address.

    Kept: the full 8-group form, any form embedding an IPv4 address, and compressed (``::``) forms
    with three or more groups (``2001:db8::1``) or with two groups of which one is four hex digits
    holding a letter (``fe80::1``). Rejected: ``::``, ``::1`` (loopback), slices such as
    ``x[1000::2]``, scopes such as ``a::b`` or ``abc::def``, and eight groups of two hex digits
    (EUI-64 MAC addresses such as ``08:00:2b:01:02:03:04:05``).
    """
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    if "." in candidate:
        return True
    groups = [g for g in candidate.split(":") if g]
    if "::" not in candidate:
        return len(groups) == 8 and not all(len(g) == 2 for g in groups)
    if len(groups) < 2:
        return False
    return len(groups) >= 3 or (len(groups) == 2 and any(len(g) == 4 and not g.isdigit() for g in groups))


def _email_is_pii(text: str, m: re.Match[str]) -> bool:
    local, domain = m.group().rsplit("@", 1)
    domain = domain.lower()
    tld = domain.rsplit(".", 1)[-1]
    if tld in _PLACEHOLDER_TLDS or tld not in _IANA_TLDS:
        return False  # user@host.dom, git-maintenance@daily.timer, filename@2x.gif
    if _EXAMPLE_DOMAIN_RE.search(domain):
        return False
    if _MESSAGE_ID_LOCAL.search(local):
        return False  # a Message-ID, e.g. in a mail-archive URL
    end = m.end()
    if text[end : end + 1] == ":" and text[end + 1 : end + 2] not in ("", " ", "\t", "\n"):
        return False  # git@salsa.debian.org:team/repo.git: an SSH remote
    start = m.start()
    if start >= 2 and text[start - 1] == ":" and text[start - 2].isalnum():  # joe:password@host
        return text[max(0, start - 7) : start].lower() == "mailto:"
    return True


def _in_doctest(text: str, start: int) -> bool:
    """Inside a Python interactive example: a line starting with ``>>>`` or ``...``, or the output
    lines after one, up to the next blank line."""
    line_start = text.rfind("\n", 0, start) + 1
    block_start = text.rfind("\n\n", 0, line_start)
    block = text[block_start + 1 if block_start >= 0 else 0 : start]
    return any(ln.lstrip().startswith((">>>", "...")) for ln in block.split("\n"))


def _phone_is_pii(text: str, start: int, end: int, value: str) -> bool:
    if _in_doctest(text, start):
        return False  # Python interactive examples carry made-up data
    before = text[max(0, start - 24) : start]
    if before[-1:] in (" ", "\t") and before.split()[-1:] and before.split()[-1].isdigit():
        return False  # inside a list of numbers: "377 610 987 1597 2584"
    after = text[end : end + 24]
    if after[:1] in (" ", "\t") and after.split()[:1] and after.split()[0].isdigit():
        return False
    digits = "".join(ch for ch in value if ch.isdigit())
    if digits in _INT_LIMITS or re.search(r"(\d)\1{5}", digits):
        return False
    nanp = _NANP_RE.fullmatch(value)
    if nanp and (not value.startswith("+") or value.startswith("+1")):
        area, exchange = nanp.group(1), nanp.group(2)
        if exchange == "555" or area[1] == "9":
            return False
    return True


def _is_taken(taken: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(a < end and start < b for a, b in taken)


def _find(text: str, lo: int, hi: int, public_ips_only: bool) -> list[tuple[int, int, str]]:
    """(start, end, kind) of the PII to replace in ``text[lo:hi]``, sorted, non-overlapping.

    Emails first, then IPv6, IPv4, phones; a region matched by an earlier pattern (replaced or not)
    is never read by a later one, so an example address's domain is not judged as anything else.
    """
    found: list[tuple[int, int, str]] = []
    taken: list[tuple[int, int]] = []
    span = text[lo:hi]
    if "@" in span:
        for m in _EMAIL_RE.finditer(text, lo, hi):
            taken.append(m.span())
            if _email_is_pii(text, m):
                found.append((m.start(), m.end(), "email"))
    if ":" in span:
        for m in _IPV6_RE.finditer(text, lo, hi):
            if _is_taken(taken, *m.span()) or not _ipv6_specific(m.group()):
                continue
            taken.append(m.span())
            if not public_ips_only or is_public_ip(m.group()):
                found.append((m.start(), m.end(), "ip_address"))
    if "." in span:
        for m in _IPV4_RE.finditer(text, lo, hi):
            if _is_taken(taken, *m.span()):
                continue
            taken.append(m.span())
            if _ipv4_is_not_address(text, m.start(), m.end()):
                continue
            if not public_ips_only or is_public_ip(m.group()):
                found.append((m.start(), m.end(), "ip_address"))
    for m in _PHONE_RE.finditer(text, lo, hi):
        if _is_taken(taken, *m.span()):
            continue
        value = m.group()
        if 9 <= sum(ch in "0123456789" for ch in value) <= 15 and _phone_is_pii(text, m.start(), m.end(), value):
            found.append((m.start(), m.end(), "phone"))
    found.sort()
    return found


_H_DIGIT, _H_AT, _H_COLON, _H_DOT, _H_PLUS = 1, 2, 3, 4, 5
_PII_HINT_CLASS = np.zeros(0x10001, dtype=np.uint8)
_PII_HINT_CLASS[ord("0") : ord("9") + 1] = _H_DIGIT
for _ch, _k in (("@", _H_AT), (":", _H_COLON), (".", _H_DOT), ("+", _H_PLUS)):
    _PII_HINT_CLASS[ord(_ch)] = _k


def _pii_windows(text: str) -> list[tuple[int, int]]:
    """Sorted, disjoint spans of ``text`` that may hold PII, each bounded by whitespace or the text's ends.

    Every match of the PII patterns lies inside one of them: an email holds ``@``; an IPv4 address
    a digit-dot-digit; an IPv6 address two colons at most five characters apart; a phone a ``+`` and
    digit (then at most ~55 characters), or a separator followed by four digits (preceded by at most
    ~17 characters). The hints are found with numpy in one pass over the code points, so text without
    them costs no regex scan; span edges sit on whitespace, which the patterns' boundary look-arounds
    treat exactly like the text's ends.
    """
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    n = cp.size
    padded = np.zeros(n + 2, dtype=np.uint8)  # padded[i + 1] is the hint class of cp[i]
    _PII_HINT_CLASS.take(cp, mode="clip", out=padded[1:-1])
    pos = np.flatnonzero(padded) - 1  # the sparse positions of digits and of @ : . +
    kind = padded[pos + 1]
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []

    def hint(found: np.ndarray, before: int, after: int) -> None:
        if found.size:
            starts.append(np.maximum(found - before, 0))
            ends.append(np.minimum(found + after, n))

    def is_digit(at: np.ndarray) -> np.ndarray:  # at in [-1, n]
        return padded[at + 1] == _H_DIGIT

    hint(pos[kind == _H_AT], 0, 1)
    colons = pos[kind == _H_COLON]
    if colons.size > 1:
        hint(colons[:-1][np.diff(colons) <= 5], 0, 1)
    dots = pos[kind == _H_DOT]  # is_digit(dots - 1) and (dots + 1) stay within [-1, n]
    if dots.size:
        hint(dots[is_digit(dots - 1) & is_digit(dots + 1)], 0, 1)
    plus = pos[kind == _H_PLUS]
    if plus.size:
        hint(plus[is_digit(plus + 1)], 0, 60)
    digits = pos[kind == _H_DIGIT]
    if digits.size >= 4:
        run4 = digits[:-3][digits[3:] - digits[:-3] == 3]  # first of four consecutive digits
        sep = run4[run4 >= 2] - 1  # sep - 1 >= 0
        if sep.size:
            c = cp[sep]
            hint(sep[((c == 32) | (c == 46) | (c == 45)) & is_digit(sep - 1)], 30, 5)
    if not starts:
        return []
    a = np.concatenate(starts)
    b = np.concatenate(ends)
    space = np.flatnonzero(cp <= 32)
    i = np.searchsorted(space, a)  # first whitespace at or after a: the one before is space[i - 1]
    a = np.where(i > 0, space[np.maximum(i - 1, 0)] + 1 if space.size else 0, 0)
    j = np.searchsorted(space, b)
    b = np.where(j < space.size, space[np.minimum(j, space.size - 1)] if space.size else n, n)
    order = np.argsort(a, kind="stable")
    windows: list[tuple[int, int]] = []
    for lo, hi in zip(a[order].tolist(), b[order].tolist()):
        if windows and lo <= windows[-1][1]:
            if hi > windows[-1][1]:
                windows[-1] = (windows[-1][0], hi)
        else:
            windows.append((lo, hi))
    return windows


def pii_spans(text: str, *, public_ips_only: bool = True, windowed: bool = True) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every replacement :func:`scrub_pii` makes, in order. ``windowed=False``
    runs the patterns over the whole text (the result is the same; tests compare the two)."""
    windows = _pii_windows(text) if windowed else [(0, len(text))]
    return [f for lo, hi in windows for f in _find(text, lo, hi, public_ips_only)]


def scrub_pii(text: str, *, public_ips_only: bool = True) -> tuple[str, dict[str, int]]:
    """Replace emails, IP addresses and phone numbers; return the text and counts per kind.

    Kinds (keys of the counts, always all present): ``email`` -> ``<EMAIL>``, ``ip_address`` (IPv4
    and IPv6) -> ``<IP_ADDRESS>``, ``phone`` -> ``<PHONE>``. What is and is not replaced: the module
    doc. ``public_ips_only`` (default True, FineWeb's choice) leaves non-public addresses alone.
    """
    counts = {"email": 0, "ip_address": 0, "phone": 0}
    spans = pii_spans(text, public_ips_only=public_ips_only)
    if not spans:
        return text, counts
    pieces: list[str] = []
    last = 0
    for start, end, kind in spans:
        pieces.append(text[last:start])
        pieces.append(PII_PLACEHOLDERS[kind])
        counts[kind] += 1
        last = end
    pieces.append(text[last:])
    return "".join(pieces), counts
