"""Character encoding of an HTML page, in the order browsers use (WHATWG HTML, "determining the character
encoding"), framework-free:

1. a byte order mark (UTF-8, UTF-16LE, UTF-16BE) — final;
2. the HTTP ``Content-Type`` charset;
3. the ``<meta>`` prescan of the first 1,024 bytes (``<meta charset>`` and ``<meta http-equiv=Content-Type
   content="...; charset=...">``; comments, other tags and their attributes skipped as the spec says);
4. detection: bytes that are valid UTF-8 are UTF-8, otherwise resiliparse's uchardet guess;
5. UTF-8, with U+FFFD for what does not decode.

Labels map to encodings through the WHATWG label table (``webencodings``: ``latin1``/``iso-8859-1``/``ascii``
→ windows-1252, ``gb2312`` → GBK, ``sjis`` → Shift_JIS, ...). Decoders: GBK is decoded with the GB18030
decoder (the Encoding Standard's GBK decoder *is* the gb18030 one), Shift_JIS as cp932, EUC-KR as cp949 (both
as browsers do). A ``<meta>`` that says UTF-16 means UTF-8, and ``x-user-defined`` windows-1252 (spec).

Where this deliberately differs from a browser, for a corpus: a declaration (HTTP or ``<meta>``) is used only
when the bytes fit it — at most one undecodable byte sequence per 1,000 bytes (a stray byte in a UTF-8 page
costs one U+FFFD, not the page) — otherwise the next step decides; the ``replacement`` encoding (labels of
ISO-2022-KR, HZ and friends, which browsers render as one U+FFFD) counts as no declaration.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import webencodings
from resiliparse.parse.encoding import detect_encoding

PRESCAN_BYTES = 1024
MAX_ERRORS_PER_BYTE = 1 / 1000  # a declared encoding "fits" with at most this many undecodable sequences
_DECODER = {"gbk": "gb18030", "windows-874": "cp874", "iso-8859-8-i": "iso8859-8"}  # WHATWG name → codec
_WS = b"\t\n\x0c\r "
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str  # the WHATWG name: "utf-8", "windows-1252", "shift_jis", "gbk", "gb18030", "windows-1251", ...
    source: str  # "bom" | "http" | "meta" | "detected" | "default"


def lookup(label: str | None) -> tuple[str, str] | None:
    """(WHATWG name, Python codec) of an encoding label; None for unknown labels and for ``replacement``.

    ``x-user-defined`` (bytes 0x80-0xFF as private-use characters) is read as windows-1252.
    """
    if not label:
        return None
    enc = webencodings.lookup(label)
    if enc is None or enc.name == "replacement":
        return None
    if enc.name == "x-user-defined":
        return "windows-1252", "cp1252"
    return enc.name, _DECODER.get(enc.name) or codecs.lookup(enc.codec_info.name).name


def bom_encoding(body: bytes) -> tuple[str, int] | None:
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, len(bom)
    return None


def charset_from_content(value: bytes) -> bytes | None:
    """WHATWG "extract a character encoding from a meta element": the charset of a content/Content-Type value."""
    pos, n = 0, len(value)
    lower = value.lower()
    while True:
        pos = lower.find(b"charset", pos)
        if pos < 0:
            return None
        pos += 7
        while pos < n and value[pos] in _WS:
            pos += 1
        if pos < n and value[pos] == 0x3D:  # "="
            break
    pos += 1
    while pos < n and value[pos] in _WS:
        pos += 1
    if pos >= n:
        return None
    if value[pos] in b"\"'":
        end = value.find(value[pos : pos + 1], pos + 1)
        return value[pos + 1 : end] if end >= 0 else None
    end = pos
    while end < n and value[end] not in _WS and value[end] != 0x3B:  # ";"
        end += 1
    return value[pos:end]


def _attribute(data: bytes, pos: int) -> tuple[bytes, bytes, int] | None:
    """WHATWG "get an attribute" at pos: (name, value, next position), or None at the end of the tag."""
    n = len(data)
    while pos < n and (data[pos] in _WS or data[pos] == 0x2F):  # whitespace and "/"
        pos += 1
    if pos >= n or data[pos] == 0x3E:  # ">"
        return None
    start = pos
    while pos < n:
        c = data[pos]
        if c == 0x3D and pos > start:  # "=" (not as the first character of the name)
            break
        if c in _WS or c == 0x2F or c == 0x3E:
            break
        pos += 1
    name = data[start:pos].lower()
    if pos == start:  # a lone "=": part of the name by the spec
        pos += 1
        name = b"="
    while pos < n and data[pos] in _WS:
        pos += 1
    if pos >= n or data[pos] != 0x3D:
        return name, b"", pos
    pos += 1
    while pos < n and data[pos] in _WS:
        pos += 1
    if pos >= n:
        return name, b"", pos
    if data[pos] in b"\"'":
        end = data.find(data[pos : pos + 1], pos + 1)
        if end < 0:
            return name, data[pos + 1 :].lower(), n
        return name, data[pos + 1 : end].lower(), end + 1
    end = pos
    while end < n and data[end] not in _WS and data[end] != 0x3E:
        end += 1
    return name, data[pos:end].lower(), end


def prescan(data: bytes) -> str | None:
    """WHATWG "prescan a byte stream to determine its encoding" over the bytes given (pass the first 1,024).

    Returns (WHATWG name, Python codec) of the first usable ``<meta>`` declaration, or None.
    """
    n = len(data)
    lower = data.lower()
    pos = 0
    while True:
        pos = data.find(b"<", pos)
        if pos < 0 or pos + 1 >= n:
            return None
        if data.startswith(b"<!--", pos):
            end = data.find(b"-->", pos + 2)  # "<!-->" closes the comment too
            if end < 0:
                return None
            pos = end + 3
        elif lower.startswith(b"<meta", pos) and pos + 5 < n and (data[pos + 5] in _WS or data[pos + 5] == 0x2F):
            pos += 6
            seen, got_pragma, need_pragma, charset = set(), False, None, None
            while (attr := _attribute(data, pos)) is not None:
                name, value, pos = attr
                if name in seen:
                    continue
                seen.add(name)
                if name == b"http-equiv":
                    got_pragma = got_pragma or value == b"content-type"
                elif name == b"content" and charset is None:
                    found = charset_from_content(value)
                    if found is not None:
                        charset, need_pragma = found, True
                elif name == b"charset":
                    charset, need_pragma = value, False
            if charset is None or need_pragma is None or (need_pragma and not got_pragma):
                continue
            encoding = lookup(charset.decode("ascii", "replace").strip())
            if encoding is None:
                continue
            return ("utf-8", "utf-8") if encoding[0].startswith("utf-16") else encoding
        elif pos + 1 < n and (
            data[pos + 1 : pos + 2].isalpha() or (data[pos + 1] == 0x2F and data[pos + 2 : pos + 3].isalpha())
        ):
            pos += 2
            while pos < n and data[pos] not in _WS and data[pos] != 0x3E:
                pos += 1
            while (attr := _attribute(data, pos)) is not None:
                pos = attr[2]
        elif data[pos + 1] in b"!/?":
            end = data.find(b">", pos + 1)
            if end < 0:
                return None
            pos = end + 1
        else:
            pos += 1


def charset_of(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type header value (quotes stripped), or None."""
    for part in (content_type or "").split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.strip().lower() == "charset" and v.strip("\"' "):
            return v.strip("\"' ")
    return None


def _decode_if_fits(body: bytes, encoding: str) -> str | None:
    try:
        return body.decode(encoding)
    except UnicodeDecodeError:
        pass
    except LookupError:
        return None
    text = body.decode(encoding, "replace")
    errors = text.count("\ufffd") - body.count(b"\xef\xbf\xbd")  # U+FFFD written in the page is not an error
    return text if errors <= max(1, len(body) * MAX_ERRORS_PER_BYTE) else None


def decode_html(body: bytes, content_type: str | None = None) -> Decoded:
    """Decode an HTML page: BOM → HTTP charset → ``<meta>`` prescan → detection → UTF-8 (module docstring)."""
    bom = bom_encoding(body)
    if bom is not None:
        codec, skip = bom
        return Decoded(body[skip:].decode(codec, "replace"), codec.replace("-le", "le").replace("-be", "be"), "bom")
    for source, found in (("http", lookup(charset_of(content_type))), ("meta", prescan(body[:PRESCAN_BYTES]))):
        if found is not None:
            text = _decode_if_fits(body, found[1])
            if text is not None:
                return Decoded(text, found[0], source)
    try:
        return Decoded(body.decode("utf-8"), "utf-8", "detected")
    except UnicodeDecodeError:
        pass
    name = detect_encoding(body)
    guess = lookup(name) or (name, name)
    if guess[0] != "utf-8":
        text = _decode_if_fits(body, guess[1])
        if text is not None:
            return Decoded(text, guess[0], "detected")
    return Decoded(body.decode("utf-8", "replace"), "utf-8", "default")
