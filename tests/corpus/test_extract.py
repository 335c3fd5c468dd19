"""Main-content extraction: encodings, broken HTML, metadata, language id."""

import pytest

from crawl2serve.assets.corpus.extract import (
    content_hash,
    decode_html,
    detect_language,
    doc_id,
    extract_html,
    extract_text_record,
)

PROSE = (
    "The river flooded the lower town twice this spring, and the council has now approved a new levee. "
    "Engineers expect the work to take eighteen months and to cost less than the damage of one flood. "
)
GERMAN = (
    "Der Fluss hat die Unterstadt in diesem Frühjahr zweimal überflutet, und der Rat hat nun einen neuen "
    "Deich genehmigt. Die Ingenieure rechnen mit achtzehn Monaten Bauzeit und geringeren Kosten. "
)


def page(body: str, head: str = "") -> str:
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def test_title_canonical_and_main_content():
    html = page(
        f"<nav>Home | About | Contact</nav><main><h1>Levee</h1><p>{PROSE * 3}</p></main>"
        "<footer>Copyright 2026</footer>",
        '<title> Levee   approved </title><link rel="Canonical" href="/news/levee?utm_source=x">',
    )
    ex = extract_html("https://example.org/a/b", html.encode(), "text/html; charset=utf-8")
    assert ex.title == "Levee approved"
    assert ex.canonical_url == "https://example.org/news/levee"
    assert ex.host == "example.org"
    assert "council has now approved" in ex.text
    assert "Home | About" not in ex.text and "Copyright" not in ex.text
    assert ex.language == "en" and ex.language_score > 0.5


def test_pydoc_banner_is_skipped():
    html = page(
        "<div style='float:left'>Python 3.11.7 [main, GCC 12.2.0]<br>Linux</div>"
        "<div style='float:right'><a href='index.html'>Module Index</a></div>"
        f"<div><p>{PROSE * 2}</p></div>"
    )
    ex = extract_html("http://127.0.0.1:1/x.html", html.encode(), "text/html")
    assert "GCC" not in ex.text and "Module Index" not in ex.text
    assert "levee" in ex.text


def test_declared_charset_wins_when_it_decodes():
    text = "Café crème, naïve façade. " * 20
    html = page(f"<p>{text}</p>").encode("latin-1")
    ex = extract_html("https://example.org/", html, "text/html; charset=ISO-8859-1")
    assert "Café crème, naïve façade." in ex.text
    assert ex.encoding == "windows-1252"  # the WHATWG encoding of the label ISO-8859-1


def test_wrong_declared_charset_falls_back_to_detection():
    body = page("<p>" + "Café crème, naïve façade. " * 20 + "</p>").encode("cp1252")
    text, encoding = decode_html(body, "text/html; charset=utf-8")  # a lie: these bytes are not UTF-8
    assert "Café" in text
    assert encoding != "utf-8"


def test_no_charset_and_invalid_bytes_never_crash():
    body = page("<p>" + PROSE + "</p>").encode() + b"\xff\xfe\x80 broken \xc3\x28 tail"
    ex = extract_html("https://example.org/", body, None)
    assert "levee" in ex.text


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\x01\x02",
        b"<html><body><p>unclosed <b>bold <i>italic",
        b"<<<>>><html<<body>>",
        b"<script>" + b"x" * 10000,
        b"\xef\xbb\xbf<p>BOM page</p>",
    ],
)
def test_broken_html_yields_text_not_exceptions(body):
    ex = extract_html("https://example.org/", body, "text/html")
    assert isinstance(ex.text, str)
    assert ex.language == "unknown" or 0 <= ex.language_score <= 1


def test_language_id_ships_in_the_wheel():
    assert detect_language(GERMAN * 2)[0] == "de"
    assert detect_language(PROSE * 2)[0] == "en"
    assert detect_language("") == ("unknown", 0.0)
    assert detect_language("\x00\x85\ud800")[0] == "unknown"  # control chars and lone surrogates are dropped


def test_content_hash_folds_case_and_whitespace_only():
    assert content_hash("Hello   World\n") == content_hash("hello world")
    assert content_hash("hello world") != content_hash("hello, world")
    assert doc_id("https://a/") == doc_id("https://a/") != doc_id("https://b/")
    assert len(doc_id("x")) == 16


def test_wet_conversion_record_text_is_used_as_is():
    ex = extract_text_record("https://example.org/x", (GERMAN * 2).encode())
    assert ex.text.startswith("Der Fluss") and ex.language == "de" and ex.title == ""
