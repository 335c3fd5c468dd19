"""HTML decoding in the browsers' order: BOM → HTTP charset → <meta> prescan → detection → UTF-8.

Real pages from Debian documentation packages (tests/corpus/fixtures/README.md); the legacy-encoding ones
are real UTF-8 pages re-encoded with their declarations rewritten. No HTTP charset unless a test says so:
a plain file server sends ``Content-Type: text/html``.
"""

from pathlib import Path

import pytest

from crawl2serve.assets.corpus.extract import decode_html, extract_html

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# imported per call, so that each test here runs (and fails alone) against a checkout without the module
def decode(body, content_type):
    from crawl2serve.assets.corpus.encoding import decode_html as decode_bytes

    return decode_bytes(body, content_type)


def prescan(data):
    from crawl2serve.assets.corpus.encoding import prescan as scan

    return scan(data)


def lookup(label):
    from crawl2serve.assets.corpus.encoding import lookup as find

    return find(label)


# -- real pages whose only declaration is a <meta> ------------------------------------------------------------


def test_meta_charset_utf8_page_is_utf8_not_a_guess():
    # Sphinx: <meta charset="utf-8" /> only; the detector alone read it as ISO-8859-7 ("Get supportΒΆ")
    text, encoding = decode_html(fixture("sphinx-support.html"), "text/html")
    assert encoding == "utf-8"
    assert 'title="Permalink to this heading">¶</a>' in text and "Β¶" not in text
    ex = extract_html("http://127.0.0.1/support.html", fixture("sphinx-support.html"), "text/html")
    assert ex.encoding == "utf-8" and ex.text.startswith("Get support")


def test_meta_http_equiv_utf8_page_is_utf8_not_a_guess():
    # Javadoc: <meta http-equiv="Content-Type" content="text/html; charset=UTF-8"> only; the detector alone
    # said windows-1252 (harmless on this page, which writes &copy;, wrong for any UTF-8 character)
    d = decode(fixture("javadoc-RandomAccess.html"), "text/html")
    assert (d.encoding, d.source) == ("utf-8", "meta")
    assert decode_html(fixture("javadoc-RandomAccess.html"), "text/html")[1] == "utf-8"
    page = fixture("javadoc-RandomAccess.html").replace(b"&copy;", "©".encode())
    assert "Copyright</a> © 1993" in decode_html(page, "text/html")[0]


@pytest.mark.parametrize(
    "name, encoding, phrase",
    [
        ("faq-ru-kernel.windows-1251.html", "windows-1251", "Глава 10. Debian и ядро"),
        ("faq-ja-faqinfo.shift_jis.html", "shift_jis", "この FAQ についての一般情報"),
        ("faq-zh-kernel.gb18030.html", "gb18030", "Debian 和内核"),
    ],
)
def test_legacy_encoding_pages_follow_their_meta(name, encoding, phrase):
    decoded = decode(fixture(name), "text/html")
    assert (decoded.encoding, decoded.source) == (encoding, "meta")
    assert phrase in " ".join(decoded.text.split())
    assert "\ufffd" not in decoded.text
    ex = extract_html("http://127.0.0.1/" + name, fixture(name), "text/html")
    assert phrase in " ".join(ex.text.split()) and ex.encoding == encoding


# -- the order of the steps -----------------------------------------------------------------------------------


def test_bom_beats_http_and_meta():
    body = "\ufeff<meta charset=windows-1251><p>Grüße</p>".encode("utf-8")
    d = decode(body, "text/html; charset=iso-8859-2")
    assert (d.encoding, d.source) == ("utf-8", "bom") and "Grüße" in d.text and not d.text.startswith("\ufeff")
    d = decode("<p>Grüße</p>".encode("utf-16-le").join([b"\xff\xfe", b""]), None)
    assert (d.encoding, d.source, d.text) == ("utf-16le", "bom", "<p>Grüße</p>")


def test_http_charset_beats_meta():
    body = '<meta charset="utf-8"><p>Привет, мир</p>'.encode("koi8-r")
    d = decode(body, 'text/html; charset="KOI8-R"')
    assert (d.encoding, d.source) == ("koi8-r", "http") and "Привет, мир" in d.text


def test_meta_beyond_the_first_1024_bytes_is_not_read():
    body = (
        b"<!doctype html><html><head><!--"
        + b"x" * 1100
        + b"--><meta charset=windows-1251></head>"
        + "<body><p>Привет</p></body></html>".encode("cp1251")
    )
    assert decode(body[:1024], None).source != "meta"
    assert prescan(body[:1024]) is None and prescan(body) == ("windows-1251", "cp1251")


def test_undeclared_valid_utf8_is_utf8_and_undeclared_legacy_bytes_are_detected():
    d = decode("<p>Für Straße und Café, naïve façade — “quoted”.</p>".encode(), "text/html")
    assert (d.encoding, d.source) == ("utf-8", "detected")
    d = decode(
        ("<p>" + "Они сообщили, что работа будет закончена через восемнадцать месяцев. " * 5 + "</p>").encode("cp1251"),
        None,
    )
    assert d.encoding == "windows-1251" and "восемнадцать" in d.text


def test_a_declaration_the_bytes_do_not_fit_falls_through():
    body = ("<p>" + "Café crème, naïve façade. " * 20 + "</p>").encode("cp1252")
    d = decode(body, "text/html; charset=utf-8")  # a lie
    assert d.source == "detected" and "Café crème" in d.text
    # a UTF-8 page with one stray byte keeps its declaration: one U+FFFD, not a re-decoded page
    body = ("<meta charset=utf-8><p>" + "Grüße aus Köln. " * 100 + "\x00</p>").encode("utf-8").replace(b"\x00", b"\xa9")
    d = decode(body, None)
    assert (d.encoding, d.source) == ("utf-8", "meta") and d.text.count("\ufffd") == 1 and "Köln" in d.text


# -- the <meta> prescan and the WHATWG label table -----------------------------------------------------------


@pytest.mark.parametrize(
    "head, expected",
    [
        (b'<meta charset="Shift_JIS">', "shift_jis"),
        (b"<meta charset='windows-1251'/>", "windows-1251"),
        (b"<META CHARSET=gb2312>", "gbk"),
        (b'<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1" />', "windows-1252"),
        (b"<meta content=\"text/html;charset='latin1'\" http-equiv=content-type>", "windows-1252"),
        (b'<meta http-equiv="content-type" content="text/html; charset=ascii">', "windows-1252"),
        (b'<meta charset="utf-16le">', "utf-8"),  # a <meta> that says UTF-16 means UTF-8
        (b'<meta charset="x-user-defined">', "windows-1252"),
        (b'<?xml version="1.0" encoding="iso-8859-2"?><meta charset=utf-8>', "utf-8"),  # XML declaration ignored
        (b"<!-- <meta charset=koi8-r> --><meta charset=euc-kr>", "euc-kr"),  # comments skipped
        (b'<div title="<meta charset=koi8-r>"><meta charset=big5>', "big5"),  # attribute values skipped
        (b'<meta/charset="euc-jp">', "euc-jp"),
    ],
)
def test_prescan_finds_the_declaration(head, expected):
    assert prescan(b"<!doctype html><html><head>" + head + b"<title>t</title>")[0] == expected


@pytest.mark.parametrize(
    "head",
    [
        b'<meta content="text/html; charset=koi8-r">',  # content without http-equiv=content-type
        b'<meta name="description" content="charset=koi8-r">',
        b"<meta charset=no-such-encoding>",
        b"<meta charset=iso-2022-kr>",  # the replacement encoding counts as no declaration
        b"<metacharset=koi8-r>",
        b"<p>charset=koi8-r</p>",
    ],
)
def test_prescan_ignores_what_is_not_a_declaration(head):
    assert prescan(b"<html><head>" + head + b"</head>") is None


def test_label_table_and_decoders():
    assert lookup("latin1") == lookup("ISO-8859-1") == lookup(" ascii ") == ("windows-1252", "cp1252")
    assert lookup("gb2312") == lookup("GBK") == ("gbk", "gb18030")  # GBK is decoded by the gb18030 decoder
    assert lookup("sjis") == ("shift_jis", "cp932") and lookup("euc-kr") == ("euc-kr", "cp949")
    assert lookup("unicode-1-1-utf-8") == ("utf-8", "utf-8") and lookup("bogus") is None
    # a GB18030 four-byte sequence under a gb2312 label still decodes
    body = "<meta charset=gb2312><p>汉字 € 𠀀</p>".encode("gb18030")
    d = decode(body, None)
    assert d.encoding == "gbk" and "汉字 € 𠀀" in d.text
